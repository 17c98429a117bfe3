"""Coalescing across processes: followers (ImageCache.follow) in other processes and in green
threads tail a live fill and never hang on a fill that died; N concurrent cold misses read the
origin once. Followers in threads of one process are in tests/unit/test_image_cache_follow.py."""

import os
import subprocess
import sys
import textwrap

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache import fill, follow
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import (
    GatedOrigin, Origin, cached_bytes, failing_after, start_fill)

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


def test_a_follower_in_another_process_gets_the_same_bytes(settings, cache):
    parts = helpers.chunks(DATA)
    origin, tee, first = start_fill(cache, "img", parts, GOOD)
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


def test_a_follower_falls_back_when_the_fill_fails(settings, cache):
    parts = helpers.chunks(DATA)
    origin = GatedOrigin(parts)
    tee = cache.fill("img", failing_after(origin, 4), SIZE, **GOOD)
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


def test_a_follower_never_gets_the_last_bytes_of_a_mismatch(settings, cache):
    parts = helpers.chunks(DATA)
    bad = dict(GOOD, os_hash_value="0" * len(GOOD["os_hash_value"]))
    origin, tee, first = start_fill(cache, "img", parts, bad)
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
    origin, tee, _first = start_fill(cache, "img", parts, GOOD)
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
