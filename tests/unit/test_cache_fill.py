"""Fill guarantees: verification, one writer, cancellation, disconnects, admission."""

import hashlib
import importlib.util
import os
import subprocess
import sys
import threading

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache import fill, verify
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import Origin, cached_bytes, incomplete, invalid

SIZE = 64 * 1024      # 16 chunks of 4 KiB


# -- verification ------------------------------------------------------------------------

DATA = helpers.body(SIZE, b"verify")
GOOD = helpers.hashes(DATA, "sha256")


@pytest.mark.parametrize("record", [
    {"checksum": GOOD["checksum"]},
    {"os_hash_algo": "sha256", "os_hash_value": GOOD["os_hash_value"]},
    {"os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(DATA).hexdigest()},
    GOOD,
    {},   # no hash at all: committed because the size matches
], ids=["md5", "sha256", "sha512", "both", "size-only"])
def test_a_matching_body_is_committed(cache, record):
    origin = Origin(helpers.chunks(DATA))
    tee = cache.fill("img", origin, SIZE, **record)
    assert tee.caching
    assert helpers.drain(tee) == DATA
    assert tee.committed and cache.is_cached("img")
    assert cached_bytes(cache, "img") == DATA
    assert origin.closed and incomplete(cache) == [] and invalid(cache) == []


MISMATCHES = pytest.mark.parametrize("parts,size,record", [
    (helpers.chunks(DATA), SIZE, dict(GOOD, checksum="0" * 32)),
    (helpers.chunks(DATA), SIZE, dict(GOOD, os_hash_value="0" * 64)),
    (helpers.chunks(DATA), SIZE, {"checksum": "0" * 32}),
    (helpers.chunks(DATA)[:-1], SIZE, {}),                    # short origin, no hashes
    (helpers.chunks(DATA) + [b"extra"], SIZE, {}),            # long origin, no hashes
    (helpers.chunks(DATA)[:-1], SIZE, GOOD),                  # short origin, hashes
], ids=["bad-md5", "bad-os-hash", "bad-md5-only", "short", "long", "short-hashed"])


@MISMATCHES
def test_a_mismatching_body_held_back_ends_short(tmp_path, parts, size, record):
    cache = helpers.make_cache(tmp_path, image_cache_verify_hashes="all",
                               image_cache_verify_before_last_byte="true")
    origin = Origin(parts)
    tee = cache.fill("img", origin, size, **record)
    received = bytearray()
    with pytest.raises(fill.ImageDataMismatch):
        for chunk in tee:
            received += chunk
    tee.close()
    # The last chunk is held back: the client sees a short body, not a "good" one (W7).
    assert len(received) < sum(map(len, parts))
    assert tee.mismatch is not None
    assert not cache.is_cached("img") and cache.get_cached_images() == []
    assert invalid(cache) == ["img"] and incomplete(cache) == []
    assert origin.closed
    cache.close()


@MISMATCHES
def test_a_mismatching_body_streamed_whole_is_never_servable(tmp_path, caplog, parts, size,
                                                              record):
    cache = helpers.make_cache(tmp_path, image_cache_verify_hashes="all")
    origin = Origin(parts)
    tee = cache.fill("img", origin, size, **record)
    received = bytearray()
    short = len(b"".join(parts)) < size
    try:
        for chunk in tee:
            received += chunk
    except fill.ImageDataMismatch:
        # A short body fails after its last byte: the server must end the connection.
        assert short
    else:
        assert not short
    tee.close()
    # By default the client gets what the origin sent, never past the record's size...
    assert received == b"".join(parts)[:size]
    # ...and the verdict still keeps the bytes out of the cache, and says so.
    assert tee.mismatch is not None and not tee.committed
    assert ("got %d bytes" % len(received) if short
            else "do not match the image record") in caplog.text
    assert not cache.is_cached("img") and cache.get_cached_images() == []
    assert invalid(cache) == ["img"] and incomplete(cache) == []
    assert origin.closed
    cache.close()


@pytest.mark.parametrize("verify_hashes,record,algorithms", [
    ("strongest", GOOD, ["sha256"]),
    ("strongest", {"checksum": GOOD["checksum"]}, ["md5"]),
    ("strongest", {k: v for k, v in GOOD.items() if k != "checksum"}, ["sha256"]),
    ("all", GOOD, ["md5", "sha256"]),
    ("all", {"checksum": GOOD["checksum"]}, ["md5"]),
    ("strongest", {}, []),
])
def test_the_strongest_hash_is_verified_unless_all_are_asked(tmp_path, verify_hashes, record,
                                                             algorithms):
    cache = helpers.make_cache(tmp_path, image_cache_verify_hashes=verify_hashes)
    tee = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **record)
    assert tee._verifier.algorithms == algorithms
    assert helpers.drain(tee) == DATA and tee.committed
    cache.close()


def test_a_bad_md5_beside_a_good_multihash_passes_the_strongest_check(cache):
    """The default trusts the multihash (Glance's own successor of the MD5 checksum)."""
    tee = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **dict(GOOD, checksum="0" * 32))
    assert helpers.drain(tee) == DATA and tee.committed


def test_an_origin_failure_is_propagated_and_never_cached(cache):
    origin = Origin(helpers.chunks(DATA), fail_after=5)
    tee = cache.fill("img", origin, SIZE, **GOOD)
    with pytest.raises(IOError):
        helpers.drain(tee)
    assert not cache.is_cached("img") and invalid(cache) == ["img"]
    assert origin.closed and incomplete(cache) == []


def test_an_unknown_hash_algorithm_bypasses_the_cache(cache):
    tee = cache.fill("img", Origin([DATA]), SIZE, os_hash_algo="nohash", os_hash_value="ab")
    assert not tee.caching
    assert helpers.drain(tee) == DATA
    assert not cache.is_cached("img")


# -- one writer --------------------------------------------------------------------------

def test_one_writer_per_image_across_threads(cache):
    barrier = threading.Barrier(8)
    tees = []

    def start():
        barrier.wait()
        tees.append(cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **GOOD))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(tee.caching for tee in tees) == 1
    for tee in tees:
        assert helpers.drain(tee) == DATA    # everyone still gets every byte
    assert cached_bytes(cache, "img") == DATA


def _try_to_fill(conn, settings, barrier):
    cache = ImageCache.from_config(settings)
    barrier.wait()
    writer = cache.admit("img", 4)
    conn.send(("tried", writer is not None))
    if writer is not None:
        conn.recv()          # keep the fill open until every process has tried
        writer.write(b"data")
        writer.commit()
    cache.close()


def test_one_writer_per_image_across_processes(settings, cache):
    barrier = helpers.MP.Barrier(6)
    children = [helpers.run_child(_try_to_fill, settings, barrier) for _ in range(6)]
    results = [helpers.recv(conn)[1] for _, conn in children]
    assert results.count(True) == 1
    for process, conn in children:
        if results[children.index((process, conn))]:
            conn.send(("finish",))
        process.join(helpers.WAIT_S)
        conn.close()
        assert process.exitcode == 0
    assert cached_bytes(cache, "img") == b"data"


def test_deleting_an_image_cancels_its_fill(cache):
    origin = Origin(helpers.chunks(DATA))
    tee = cache.fill("img", origin, SIZE, **GOOD)
    next(tee)
    cache.delete_cached_image("img")          # the image was deleted during the download
    assert not cache.is_being_cached("img")
    restarted = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **GOOD)
    assert restarted.caching                  # a new fill may start at once ...
    assert helpers.drain(tee) and not tee.committed   # ... the old one never publishes
    assert not cache.is_cached("img") and incomplete(cache) != []
    assert helpers.drain(restarted) == DATA and restarted.committed
    assert cached_bytes(cache, "img") == DATA and incomplete(cache) == []


# -- client disconnect -------------------------------------------------------------------

def test_a_disconnect_abandons_the_fill_at_once(cache):
    origin = Origin(helpers.chunks(DATA))
    tee = cache.fill("img", origin, SIZE, **GOOD)
    next(tee)
    next(tee)
    tee.close()
    assert origin.closed
    assert incomplete(cache) == [] and invalid(cache) == []
    assert not cache.is_cached("img") and not cache.is_being_cached("img")


def test_a_disconnect_can_complete_the_fill_in_the_background(cache):
    origin = Origin(helpers.chunks(DATA))
    tee = cache.fill("img", origin, SIZE, complete_in_background=True, **GOOD)
    next(tee)
    tee.close()
    tee.background.join(helpers.WAIT_S)
    assert origin.closed and cache.is_cached("img")
    assert cached_bytes(cache, "img") == DATA


# -- admission ---------------------------------------------------------------------------

def _store(cache, image_id, size):
    data = helpers.body(size, image_id.encode())
    tee = cache.fill(image_id, Origin([data]), size)
    assert helpers.drain(tee) == data and tee.committed


def test_admission_evicts_lru_to_stay_within_max_size(tmp_path):
    cache = helpers.make_cache(tmp_path, image_cache_max_size=100)
    try:
        for image_id in ("a", "b", "c"):
            _store(cache, image_id, 30)
        cache.driver.record_hit("a")
        _store(cache, "d", 30)
        assert [i["image_id"] for i in cache.get_cached_images()] == ["a", "c", "d"]
        assert cache.get_cache_size() <= 100
    finally:
        cache.close()


def test_an_image_larger_than_the_cache_is_not_cached(tmp_path):
    cache = helpers.make_cache(tmp_path, image_cache_max_size=100)
    try:
        _store(cache, "small", 50)
        data = helpers.body(101)
        tee = cache.fill("big", Origin([data]), 101)
        assert not tee.caching and helpers.drain(tee) == data
        assert cache.is_cached("small") and not cache.is_cached("big")
    finally:
        cache.close()


def test_fills_in_flight_count_against_max_size(tmp_path):
    cache = helpers.make_cache(tmp_path, image_cache_max_size=100)
    try:
        first = cache.fill("x", Origin([b"x" * 60]), 60)
        second = cache.fill("y", Origin([b"y" * 60]), 60)
        assert first.caching and not second.caching
        assert helpers.drain(second) == b"y" * 60
        assert helpers.drain(first) == b"x" * 60
        assert cache.get_cache_size() == 60
    finally:
        cache.close()


def test_no_room_on_the_disk_means_no_caching(tmp_path):
    disk = os.statvfs(tmp_path)
    cache = helpers.make_cache(tmp_path, image_cache_min_free=disk.f_blocks * disk.f_frsize)
    try:
        tee = cache.fill("img", Origin([DATA]), SIZE)
        assert not tee.caching and helpers.drain(tee) == DATA
        assert incomplete(cache) == [] and not cache.is_cached("img")
    finally:
        cache.close()


def test_an_unknown_size_is_not_cached(cache):
    tee = cache.fill("img", Origin([DATA]), None)
    assert not tee.caching and helpers.drain(tee) == DATA


# -- hashing in threads ------------------------------------------------------------------

BIG = helpers.body(verify.HASH_IN_THREADS_FROM + 256 * 1024, b"threads")
BIG_GOOD = helpers.hashes(BIG)


def _threaded_tee(cache, parts, size, record, hold_last_chunk=False, **verifier_options):
    """A fill whose verifier hashes in threads from the first byte."""
    options = {"threads_from": 0, **verifier_options}
    writer = cache.admit("img", size)
    verifier = verify.Verifier(size, **record, **options)
    return fill.TeeIterator("img", Origin(parts), writer, verifier,
                            hold_last_chunk=hold_last_chunk), verifier


def _assert_no_hashing_thread_left(verifier):
    assert verifier.threads and not any(t.is_alive() for t in verifier.threads)


def test_a_large_fill_hashes_in_threads_and_commits(cache):
    origin = Origin(helpers.chunks(BIG, 65536))
    tee = cache.fill("img", origin, len(BIG), **BIG_GOOD)
    verifier = tee._verifier
    assert helpers.drain(tee) == BIG
    assert tee.committed and cached_bytes(cache, "img") == BIG
    assert [t.digest.name for t in verifier.threads] == ["sha512"]
    assert verifier.reads_file is False   # closed: it gave its fd back
    _assert_no_hashing_thread_left(verifier)


@pytest.mark.parametrize("hold,reads_file", [(False, True), (True, False)])
def test_a_large_fill_hashes_its_file_unless_the_last_chunk_waits(tmp_path, hold, reads_file):
    cache = helpers.make_cache(tmp_path, image_cache_verify_before_last_byte=str(hold))
    tee = cache.fill("img", Origin(helpers.chunks(BIG, 65536)), len(BIG), **BIG_GOOD)
    assert tee._verifier.reads_file is reads_file
    assert helpers.drain(tee) == BIG and tee.committed
    cache.close()


@pytest.mark.parametrize("record", [dict(BIG_GOOD, os_hash_value="0" * 128),
                                    {"checksum": "0" * 32}], ids=["bad-sha512", "bad-md5"])
def test_a_large_mismatch_hashed_from_the_file_is_never_servable(cache, record):
    tee = cache.fill("img", Origin(helpers.chunks(BIG, 65536)), len(BIG), **record)
    verifier = tee._verifier
    assert verifier.reads_file
    assert helpers.drain(tee) == BIG and tee.mismatch is not None
    assert not cache.is_cached("img") and invalid(cache) == ["img"]
    _assert_no_hashing_thread_left(verifier)


def test_reading_back_the_verdict_is_on_the_bytes_in_the_file(tmp_path):
    """Bytes that changed on disk after they were written fail the check."""
    path = tmp_path / "filling"
    data = helpers.body(3 * 256 * 1024, b"disk")
    with open(path, "wb") as out:
        verifier = verify.Verifier(len(data), **helpers.hashes(data), threads_from=0)
        verifier.read_back_from(os.open(path, os.O_RDONLY))
        half = len(data) // 2   # under HASH_BATCH_BYTES: no thread has read it yet
        out.write(data[:half])
        out.flush()
        verifier.update(data[:half])
        os.pwrite(out.fileno(), b"\0", 10)
        out.write(data[half:])
        out.flush()
        verifier.update(data[half:])
    try:
        assert verifier.problem().startswith("sha512")
    finally:
        verifier.close()
    _assert_no_hashing_thread_left(verifier)


def test_a_file_shorter_than_what_was_written_is_a_mismatch(tmp_path):
    path = tmp_path / "filling"
    path.write_bytes(DATA[:1000])
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    verifier.read_back_from(os.open(path, os.O_RDONLY))
    verifier.update(DATA)
    try:
        assert verifier.problem().startswith("hashing failed")
    finally:
        verifier.close()


@pytest.mark.parametrize("record", [
    dict(GOOD, checksum="0" * 32),
    dict(GOOD, os_hash_value="0" * 64),
    {"checksum": "0" * 32},
    {"os_hash_algo": "sha256", "os_hash_value": "0" * 64},
], ids=["bad-md5", "bad-os-hash", "bad-md5-only", "bad-os-hash-only"])
@pytest.mark.parametrize("queue_bytes", [4096, verify.HASH_QUEUE_BYTES],
                         ids=["tiny-queue", "default-queue"])
def test_a_mismatch_in_either_threaded_digest_is_never_servable(cache, record, queue_bytes):
    tee, verifier = _threaded_tee(cache, helpers.chunks(DATA), SIZE, record, all_hashes=True,
                                  queue_bytes=queue_bytes, hold_last_chunk=True)
    received = bytearray()
    with pytest.raises(fill.ImageDataMismatch):
        for chunk in tee:
            received += chunk
    tee.close()
    assert len(received) == SIZE - 4096        # the last chunk was held back
    assert not cache.is_cached("img") and invalid(cache) == ["img"]
    assert incomplete(cache) == []
    _assert_no_hashing_thread_left(verifier)


@pytest.mark.parametrize("queue_bytes", [1, 4096, verify.HASH_QUEUE_BYTES])
def test_threaded_hashing_verifies_every_byte_in_order(cache, queue_bytes):
    tee, verifier = _threaded_tee(cache, helpers.chunks(DATA), SIZE, GOOD,
                                  queue_bytes=queue_bytes)
    assert helpers.drain(tee) == DATA and tee.committed
    assert cached_bytes(cache, "img") == DATA
    _assert_no_hashing_thread_left(verifier)


def test_a_reused_source_buffer_is_hashed_as_it_was_written(cache):
    """A source that refills one buffer: the deferred hash must see the bytes as sent."""
    def refilled():
        buffer = bytearray(4096)
        for part in helpers.chunks(DATA):
            buffer[:] = part
            yield buffer
    writer = cache.admit("img", SIZE)
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    tee = fill.TeeIterator("img", refilled(), writer, verifier)
    for _chunk in tee:
        pass
    tee.close()
    assert tee.committed and cached_bytes(cache, "img") == DATA


def test_no_hashing_thread_outlives_close_mid_stream(cache):
    tee, verifier = _threaded_tee(cache, helpers.chunks(DATA), SIZE, GOOD)
    next(tee)
    next(tee)
    assert any(t.is_alive() for t in verifier.threads)
    tee.close()
    _assert_no_hashing_thread_left(verifier)
    assert incomplete(cache) == [] and not cache.is_cached("img")


def test_no_hashing_thread_outlives_an_origin_failure(cache):
    writer = cache.admit("img", SIZE)
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    tee = fill.TeeIterator("img", Origin(helpers.chunks(DATA), fail_after=5), writer, verifier)
    with pytest.raises(IOError):
        helpers.drain(tee)
    _assert_no_hashing_thread_left(verifier)
    assert invalid(cache) == ["img"] and not cache.is_cached("img")


def test_no_hashing_thread_outlives_a_background_completion(cache):
    writer = cache.admit("img", SIZE)
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    tee = fill.TeeIterator("img", Origin(helpers.chunks(DATA)), writer, verifier,
                           complete_in_background=True)
    next(tee)
    tee.close()
    tee.background.join(helpers.WAIT_S)
    assert cached_bytes(cache, "img") == DATA
    _assert_no_hashing_thread_left(verifier)


def test_a_closed_verifier_never_reports_a_match():
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    verifier.update(DATA)
    verifier.close()
    assert verifier.problem() == "verification was stopped"
    with pytest.raises(ValueError):
        verifier.update(b"more")


def test_a_failing_hashing_thread_means_a_mismatch():
    verifier = verify.Verifier(SIZE, **GOOD, threads_from=0)
    verifier.update(DATA[:4096])
    broken = verifier.threads[0]

    class Broken:
        name = "md5"

        def update(self, chunk):
            raise MemoryError("no room to hash")
    broken.digest = Broken()
    verifier.update(DATA[4096:])
    problem = verifier.problem()
    verifier.close()
    assert problem is not None and problem.startswith("hashing failed")


EVENTLET_FILL = """
import eventlet
eventlet.monkey_patch()
import hashlib
import eventlet.patcher
from glance_cache_mw.image_cache import fill, verify
data = bytes(range(256)) * 4096 * 8          # 8 MiB
verifier = verify.Verifier(len(data), hashlib.md5(data).hexdigest(), "sha512",
                           hashlib.sha512(data).hexdigest(), all_hashes=True, threads_from=0)
ticks = []
def ticker():                                # runs only if the hub is never blocked for long
    while True:
        ticks.append(1)
        eventlet.sleep(0.001)
eventlet.spawn(ticker)
chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
tee = fill.TeeIterator("img", iter(chunks), None, verifier)
assert b"".join(tee) == data
tee.close()
native = {t.native_id for t in verifier.threads}
real_threading = eventlet.patcher.original("threading")
assert len(native) == 2 and real_threading.get_native_id() not in native, native
assert not any(t.is_alive() for t in verifier.threads)
print("ok", len(ticks) > 0)
"""


def test_under_eventlet_the_digests_are_computed_in_real_threads():
    if importlib.util.find_spec("eventlet") is None:   # not imported here: it hooks fork()
        pytest.skip("eventlet is not installed")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", EVENTLET_FILL],
                            capture_output=True, text=True, timeout=helpers.WAIT_S,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))))
    assert result.returncode == 0 and result.stdout.split() == ["ok", "True"], result.stderr
