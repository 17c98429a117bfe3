"""Coalescing: followers tail a live fill in threads, processes and green threads, and never
hang on a fill that died; N concurrent cold misses read the origin once."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache import fill, follow
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import GatedOrigin, Origin, cached_bytes, incomplete

SIZE = 64 * 1024      # 16 chunks of 4 KiB
DATA = helpers.body(SIZE, b"coalesce")
GOOD = helpers.hashes(DATA, "sha256")


# -- coalescing --------------------------------------------------------------------------

def _follow(conn, settings, image_id, size, with_fallback_data=None):
    cache = ImageCache.from_config(settings)
    fallback = None
    if with_fallback_data is not None:
        def fallback(offset):
            return Origin([with_fallback_data[offset:]])
    follower = cache.follow(image_id, size, fallback=fallback)
    conn.send(("following", follower is not None))
    received = bytearray()
    try:
        for chunk in follower:
            if not received:
                conn.send(("first-chunk",))
            received += chunk
        conn.send(("done", bytes(received), follower.fell_back))
    except (follow.FillAbandoned, fill.ImageDataMismatch) as err:
        conn.send(("failed", type(err).__name__, len(received)))
    finally:
        follower.close()
        cache.close()


def _start_fill(cache, image_id, parts, record, released=2):
    """A fill with ``released`` chunks on disk, its client having read the first one."""
    origin = GatedOrigin(parts)
    tee = cache.fill(image_id, origin, sum(map(len, parts)), **record)
    assert tee.caching
    origin.release(released)
    first = next(tee)
    return origin, tee, first


def test_a_follower_in_another_process_gets_the_same_bytes(settings, cache):
    parts = helpers.chunks(DATA)
    origin, tee, first = _start_fill(cache, "img", parts, GOOD)
    process, conn = helpers.run_child(_follow, settings, "img", SIZE)
    assert helpers.recv(conn) == ("following", True)
    assert helpers.recv(conn) == ("first-chunk",)   # it is reading a file still growing
    origin.release(len(parts) - 2)
    assert first + helpers.drain(tee) == DATA
    message = helpers.recv(conn)
    assert message[:2] == ("done", DATA)
    process.join(helpers.WAIT_S)
    conn.close()
    assert tee.committed and cached_bytes(cache, "img") == DATA


def test_a_follower_thread_gets_the_same_bytes(cache):
    parts = helpers.chunks(DATA)
    origin, tee, first = _start_fill(cache, "img", parts, GOOD)
    follower = cache.follow("img", SIZE)
    result = []
    thread = threading.Thread(target=lambda: result.append(helpers.drain(follower)))
    thread.start()
    origin.release(len(parts) - 2)
    assert first + helpers.drain(tee) == DATA
    thread.join()
    assert result == [DATA]


def _cold_miss(conn, settings, barrier, origin_reads):
    """What a worker does on a miss: fill if admitted, else follow, else read the hit."""
    cache = ImageCache.from_config(settings)
    barrier.wait()
    writer = cache.admit("img", SIZE)
    if writer is not None:
        def origin():
            with origin_reads.get_lock():
                origin_reads.value += 1
            yield from helpers.chunks(DATA)
        tee = cache.fill("img", origin(), SIZE, writer=writer, **GOOD)
        conn.send(("filled", helpers.drain(tee) == DATA))
    else:
        follower = cache.follow("img", SIZE)
        if follower is not None:
            conn.send(("followed", helpers.drain(follower) == DATA))
        else:
            with cache.open_hit("img") as handle:     # it was committed meanwhile
                conn.send(("hit", handle.read() == DATA))
    cache.close()


def test_concurrent_cold_misses_in_processes_read_the_origin_once(settings, cache):
    barrier = helpers.MP.Barrier(5)
    origin_reads = helpers.MP.Value("i", 0)
    children = [helpers.run_child(_cold_miss, settings, barrier, origin_reads)
                for _ in range(5)]
    outcomes = []
    for process, conn in children:
        outcomes.append(helpers.recv(conn))
        process.join(helpers.WAIT_S)
        conn.close()
    assert all(ok for _, ok in outcomes), outcomes
    assert [kind for kind, _ in outcomes].count("filled") == 1
    assert origin_reads.value == 1
    assert cached_bytes(cache, "img") == DATA


GREEN_FOLLOWERS = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import hashlib, sys
    from glance_cache_mw.image_cache import ImageCache
    cache = ImageCache.from_config({"image_cache_dir": sys.argv[1], "chunk_size": "4096"})
    data = bytes(range(256)) * 1024
    def origin():
        for start in range(0, len(data), 4096):
            eventlet.sleep(0)           # the origin is a socket: it yields to the hub
            yield data[start:start + 4096]
    tee = cache.fill("img", origin(), len(data), checksum=hashlib.md5(data).hexdigest())
    first = next(tee)
    def follow():
        follower = cache.follow("img", len(data))
        try:
            return b"".join(follower)
        finally:
            follower.close()
    followers = [eventlet.spawn(follow) for _ in range(5)]
    eventlet.sleep(0)
    body = first + b"".join(tee)
    tee.close()
    assert body == data and all(g.wait() == data for g in followers)
    assert cache.is_cached("img")
    cache.close()
    print("ok")
""")


def test_green_followers_under_eventlet(tmp_path):
    # The server runs eventlet: followers poll with green sleeps and never block the hub.
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", GREEN_FOLLOWERS, str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=helpers.WAIT_S, check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_follow_returns_none_without_a_live_fill(cache):
    assert cache.follow("img", SIZE) is None
    with open(cache.driver.get_image_filepath("img", "incomplete"), "wb"):
        pass     # debris of a dead writer: nothing to follow
    assert cache.follow("img", SIZE) is None
    assert incomplete(cache) == ["img"]


def test_a_follower_falls_back_when_the_fill_fails(settings, cache):
    parts = helpers.chunks(DATA)
    origin = GatedOrigin(parts)
    tee = cache.fill("img", _failing_after(origin, 4), SIZE, **GOOD)
    origin.release(3)
    next(tee)
    process, conn = helpers.run_child(_follow, settings, "img", SIZE, DATA)
    assert helpers.recv(conn) == ("following", True)
    assert helpers.recv(conn) == ("first-chunk",)
    origin.release(2)
    with pytest.raises(IOError):
        helpers.drain(tee)
    message = helpers.recv(conn)
    assert message == ("done", DATA, True)
    process.join(helpers.WAIT_S)
    conn.close()
    assert not cache.is_cached("img")


def _failing_after(origin, count):
    for index, part in enumerate(origin):
        if index == count:
            raise IOError("origin connection reset")
        yield part


def _fill_failing_after_4_chunks(cache):
    """A fill of "img" whose origin fails after 4 chunks; its client has read the first."""
    origin = GatedOrigin(helpers.chunks(DATA))
    tee = cache.fill("img", _failing_after(origin, 4), SIZE, **GOOD)
    origin.release(5)
    next(tee)
    return tee


def test_a_follower_without_fallback_fails_instead_of_hanging(cache):
    tee = _fill_failing_after_4_chunks(cache)
    follower = cache.follow("img", SIZE)
    assert len(next(follower)) == 4096
    with pytest.raises(IOError):
        helpers.drain(tee)
    with pytest.raises(follow.FillAbandoned):
        helpers.drain(follower)


def test_a_follower_never_gets_the_last_bytes_of_a_mismatch(settings, cache):
    parts = helpers.chunks(DATA)
    bad = dict(GOOD, os_hash_value="0" * len(GOOD["os_hash_value"]))
    origin, tee, first = _start_fill(cache, "img", parts, bad)
    process, conn = helpers.run_child(_follow, settings, "img", SIZE)
    assert helpers.recv(conn) == ("following", True)
    assert helpers.recv(conn) == ("first-chunk",)
    origin.release(len(parts) - 2)
    # The filler's client gets the origin's bytes as sent (the default); a follower reads
    # the cache's file, and never its unverified last bytes.
    assert first + helpers.drain(tee) == DATA and tee.mismatch is not None
    kind, name, received = helpers.recv(conn)
    assert (kind, name) == ("failed", "ImageDataMismatch") and received < SIZE
    process.join(helpers.WAIT_S)
    conn.close()


def test_a_disconnect_with_followers_completes_for_them(settings, cache):
    parts = helpers.chunks(DATA)
    origin, tee, _first = _start_fill(cache, "img", parts, GOOD)
    process, conn = helpers.run_child(_follow, settings, "img", SIZE)
    assert helpers.recv(conn) == ("following", True)
    assert helpers.recv(conn) == ("first-chunk",)
    tee.close()                         # the filler's client leaves
    assert tee.background is not None
    origin.release(len(parts) - 2)
    assert helpers.recv(conn)[:2] == ("done", DATA)
    tee.background.join(helpers.WAIT_S)
    process.join(helpers.WAIT_S)
    conn.close()
    assert cached_bytes(cache, "img") == DATA


def test_a_follower_whose_origin_fallback_ends_short_raises(cache):
    # A short body must never look complete: the server cuts the connection on the raise.
    tee = _fill_failing_after_4_chunks(cache)
    follower = cache.follow("img", SIZE, fallback=lambda offset: Origin([DATA[offset:-10]]))
    assert len(next(follower)) == 4096
    with pytest.raises(IOError):
        helpers.drain(tee)
    received = bytearray()
    with pytest.raises(follow.FillAbandoned, match="origin ended at %d of %d" % (SIZE - 10, SIZE)):
        for chunk in follower:
            received += chunk
    assert bytes(received) == DATA[4096:-10] and follower.fell_back
    follower.close()


def test_a_follower_that_fell_back_closes_the_origin_body_when_its_client_leaves(cache):
    # PEP 3333: close() must reach the fallback body itself, not only what iter() gave
    # (Origin's __iter__ is a generator, not the body).
    tee = _fill_failing_after_4_chunks(cache)
    fallbacks = []

    def fallback(offset):
        fallbacks.append(Origin([DATA[offset:offset + 4096], DATA[offset + 4096:]]))
        return fallbacks[-1]

    follower = cache.follow("img", SIZE, fallback=fallback)
    with pytest.raises(IOError):
        helpers.drain(tee)
    received = bytearray()
    while not follower.fell_back:
        received += next(follower)
    assert bytes(received) == DATA[:len(received)] and not fallbacks[0].closed
    follower.close()                    # the client leaves before the end
    assert fallbacks[0].closed


def test_a_cancelled_fill_lets_its_followers_finish_from_the_file(cache):
    parts = helpers.chunks(DATA)
    origin = GatedOrigin(parts)
    tee = cache.fill("img", origin, SIZE, **GOOD)
    origin.release(2)
    first = next(tee)
    follower = cache.follow("img", SIZE)       # no fallback: only the file can serve it
    assert cache.cancel_fill("img")             # DELETE /v2/cache/img
    origin.release(len(parts))
    assert first + helpers.drain(tee) == DATA and not tee.committed
    assert helpers.drain(follower) == DATA
    follower.close()
    assert not cache.is_cached("img") and incomplete(cache) == []


def test_the_idle_timeout_bounds_stalls_of_the_fill_not_a_slow_reader(tmp_path):
    cache = helpers.make_cache(tmp_path)
    cache.follow_idle_timeout_s = 0.2
    parts = helpers.chunks(DATA)
    origin = GatedOrigin(parts)
    tee = cache.fill("img", origin, SIZE, **GOOD)
    origin.release(len(parts))
    first = next(tee)
    follower = cache.follow("img", SIZE, fallback=lambda offset: Origin([DATA[offset:]]))
    received = bytearray(next(follower))
    rest = threading.Thread(target=helpers.drain, args=(tee,))
    rest.start()
    rest.join(helpers.WAIT_S)
    time.sleep(0.4)                  # the reader is slow: longer than the idle timeout
    received += helpers.drain(follower)
    assert bytes(received) == DATA and not follower.fell_back and first
    follower.close()
    # The fill stalls (its origin gives nothing): the follower gives up on it after the
    # idle timeout and reads the rest from the origin.
    origin2 = GatedOrigin(parts)
    tee2 = cache.fill("img2", origin2, SIZE, **GOOD)
    origin2.release(1)
    next(tee2)
    follower2 = cache.follow("img2", SIZE, fallback=lambda offset: Origin([DATA[offset:]]))
    assert helpers.drain(follower2) == DATA and follower2.fell_back
    follower2.close()
    tee2.close()
    cache.close()
