"""The Verifier (image_cache/verify.py) hashing in threads: both digests and the size decide,
a mismatch is never servable, and no hashing thread outlives the fill. The check that the digests
run in real threads under eventlet is in tests/functional/test_image_cache_verify.py."""

import os

import pytest

from glance_cache_mw.image_cache import fill, verify
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import Origin, cached_bytes, incomplete, invalid

SIZE = 64 * 1024      # 16 chunks of 4 KiB
DATA = helpers.body(SIZE, b"verify")
GOOD = helpers.hashes(DATA, "sha256")


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
