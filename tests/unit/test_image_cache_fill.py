"""Fill guarantees (image_cache/fill.py through ImageCache.fill): verification, one writer among
threads, cancellation, disconnects, admission, a broken metadata store. Hashing in threads is in
test_image_cache_verify.py; fills across processes and under SIGKILL in
tests/functional/test_image_cache_fill.py."""

import hashlib
import os
import threading

import pytest

from glance_cache_mw.image_cache import fill
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




# -- a broken metadata store -------------------------------------------------------------

def _break_the_database(cache):
    cache.driver.flush_hits()
    for suffix in ("", "-wal", "-shm"):
        path = cache.driver.get_path("cache.db" + suffix)
        if os.path.exists(path):
            os.unlink(path)
    with open(cache.driver.get_path("cache.db"), "wb") as handle:
        handle.write(b"this is not an SQLite database" * 1000)


def test_a_broken_metadata_store_never_breaks_a_download(tmp_path):
    cache = helpers.make_cache(tmp_path, image_cache_max_size=SIZE)
    try:
        _break_the_database(cache)
        tee = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **GOOD)
        assert tee.caching and helpers.drain(tee) == DATA
        assert cached_bytes(cache, "img") == DATA   # verified file, metadata not recorded
        # A fill that needs an eviction cannot read the LRU order: it is served uncached.
        other = helpers.body(SIZE, b"other")
        tee = cache.fill("other", Origin([other]), SIZE)
        assert not tee.caching and helpers.drain(tee) == other
        assert cache.is_cached("img") and not cache.is_cached("other")
    finally:
        cache.close()
