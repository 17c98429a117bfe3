"""Followers (ImageCache.follow, follow.FollowIterator) in threads of one process: they tail a live
fill, never hang on a fill that died, and outlive a cancelled one. Followers in other processes
and green threads are in tests/functional/test_image_cache_follow.py."""

import threading
import time

import pytest

from glance_cache_mw.image_cache import follow
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import (
    GatedOrigin, Origin, failing_after, incomplete, start_fill)

SIZE = 64 * 1024      # 16 chunks of 4 KiB
DATA = helpers.body(SIZE, b"coalesce")
GOOD = helpers.hashes(DATA, "sha256")


def test_a_follower_thread_gets_the_same_bytes(cache):
    parts = helpers.chunks(DATA)
    origin, tee, first = start_fill(cache, "img", parts, GOOD)
    follower = cache.follow("img", SIZE)
    result = []
    thread = threading.Thread(target=lambda: result.append(helpers.drain(follower)))
    thread.start()
    origin.release(len(parts) - 2)
    assert first + helpers.drain(tee) == DATA
    thread.join()
    assert result == [DATA]


def test_follow_returns_none_without_a_live_fill(cache):
    assert cache.follow("img", SIZE) is None
    with open(cache.driver.get_image_filepath("img", "incomplete"), "wb"):
        pass     # debris of a dead writer: nothing to follow
    assert cache.follow("img", SIZE) is None
    assert incomplete(cache) == ["img"]


def _fill_failing_after_4_chunks(cache):
    """A fill of "img" whose origin fails after 4 chunks; its client has read the first."""
    origin = GatedOrigin(helpers.chunks(DATA))
    tee = cache.fill("img", failing_after(origin, 4), SIZE, **GOOD)
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
