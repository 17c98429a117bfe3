"""A fill whose origin stalls stops costing new clients: it is abandoned once its file has
not grown for the idle timeout, later requests fill afresh instead of joining it, the clients
following it read the rest from the origin, and the stalled fill never commits when its origin
wakes up (resuming or failing). The stall is real: the origin's body blocks on an Event."""

import os
import threading
import time

import pytest
import webob

from glance_cache_mw.image_cache import stall
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import Origin, cached_bytes, incomplete, invalid
from tests.unit.filter_helpers import Setup

SIZE = 64 * 1024      # 16 chunks of 4 KiB
DATA = helpers.body(SIZE, b"stall")
GOOD = helpers.hashes(DATA, "sha256")
STALL_BOUND_S = 0.5


class StallingOrigin:
    """The origin's body: ``stall_after`` chunks, then nothing until ``resume`` is set (a
    stalled peer); then the rest, or (``fail``) an error, as a reset connection would."""

    def __init__(self, parts, stall_after=1, fail=False):
        self._parts = list(parts)
        self._stall_after = stall_after
        self._fail = fail
        self.stalled = threading.Event()
        self.resume = threading.Event()
        self.closed = False

    def __iter__(self):
        for index, part in enumerate(self._parts):
            if index == self._stall_after:
                self.stalled.set()
                assert self.resume.wait(helpers.WAIT_S), "the test never resumed the origin"
                if self._fail:
                    raise IOError("origin connection reset after a stall")
            yield part

    def close(self):
        self.closed = True


def _origin_from(offset):
    return Origin([DATA[offset:]])


def _wait(predicate, what):
    deadline = time.monotonic() + helpers.WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


def _file_age_s(cache, image_id):
    return time.time() - os.stat(cache.driver.get_image_filepath(image_id, "incomplete")).st_mtime


@pytest.mark.parametrize("after_the_stall", ["resumes", "fails"])
def test_a_stalled_fill_is_abandoned_and_replaced_and_never_commits(tmp_path, after_the_stall):
    cache = helpers.make_cache(tmp_path)
    cache.follow_idle_timeout_s = STALL_BOUND_S
    origin = StallingOrigin(helpers.chunks(DATA), fail=after_the_stall == "fails")
    tee = cache.fill("img", origin, SIZE, pumped=True, **GOOD)
    filler = cache.start_fill(tee, fallback=_origin_from)        # its client (MISS)
    joined = cache.follow("img", SIZE, fallback=_origin_from)    # one that joined it
    assert next(filler) == DATA[:4096] and next(joined) == DATA[:4096]
    assert origin.stalled.wait(helpers.WAIT_S)
    _wait(lambda: _file_age_s(cache, "img") > STALL_BOUND_S, "the stall bound to pass")

    # (1) A request coming after the stall bound does not join the stalled fill: it is
    # abandoned, and this request fills the image afresh at once.
    assert cache.follow("img", SIZE, fallback=_origin_from) is None
    assert not cache.is_being_cached("img")
    fresh = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, pumped=True, **GOOD)
    assert fresh.caching
    assert helpers.drain(cache.start_fill(fresh, fallback=_origin_from)) == DATA
    _wait(lambda: cache.is_cached("img"), "the fresh fill to commit")

    # (3) The clients that followed the stalled fill read the rest from the origin, from
    # the offset they had reached.
    assert DATA[:4096] + helpers.drain(filler) == DATA and filler.fell_back
    assert DATA[:4096] + helpers.drain(joined) == DATA and joined.fell_back

    # (2) The stalled fill wakes up: it never commits, nor touches the fresh copy.
    origin.resume.set()
    _wait(lambda: tee.writer.closed, "the stalled fill to end")
    assert not tee.committed
    assert cached_bytes(cache, "img") == DATA
    assert invalid(cache) == [] and incomplete(cache) == []
    cache.close()


def test_followers_fall_back_after_the_stall_bound_and_abandon_the_fill(tmp_path):
    cache = helpers.make_cache(tmp_path)
    cache.follow_idle_timeout_s = STALL_BOUND_S
    origin = StallingOrigin(helpers.chunks(DATA), stall_after=3)
    tee = cache.fill("img", origin, SIZE, pumped=True, **GOOD)
    filler = cache.start_fill(tee, fallback=_origin_from)
    assert origin.stalled.wait(helpers.WAIT_S)
    # Nobody but this client came: it notices the stall itself, gives the fill up and
    # reads the rest from the origin.
    assert helpers.drain(filler) == DATA and filler.fell_back
    assert not cache.is_being_cached("img") and incomplete(cache) == []
    origin.resume.set()
    _wait(lambda: tee.writer.closed, "the stalled fill to end")
    assert not tee.committed and not cache.is_cached("img") and invalid(cache) == []
    cache.close()


def test_only_a_short_file_that_stopped_growing_is_stalled_and_abandoned(tmp_path):
    cache = helpers.make_cache(tmp_path)
    cache.follow_idle_timeout_s = 1
    writer = cache.admit("img", 11)
    fd = writer.open_reader()
    try:
        assert not stall.is_stalled(fd, 11, 1)        # just created
        writer.write(b"0123456789")
        old = time.time() - 5
        os.utime(writer.path, (old, old))
        assert not stall.is_stalled(fd, 10, 1)        # complete (being verified): no stall
        assert not stall.is_stalled(fd, 11, None)
        assert stall.is_stalled(fd, 11, 1) and not stall.is_given_up(fd)
        assert cache.abandon_if_stalled("img", 11, fd)
        assert stall.is_given_up(fd) and writer.is_abandoned()
        assert not cache.is_being_cached("img") and incomplete(cache) == []
        assert not cache.is_worth_finishing(writer)
        writer.write(b"x")                            # its origin woke up: bytes go nowhere
        assert not writer.commit() and writer.closed
        assert not cache.is_cached("img") and invalid(cache) == []
    finally:
        os.close(fd)
        writer.discard()
    cache.close()


def _stalled_or_gone(cache, image_id):
    try:
        return _file_age_s(cache, image_id) > STALL_BOUND_S
    except FileNotFoundError:
        return True


def _get(app, url):
    resp = webob.Request.blank(url).get_response(app)
    return resp.status_int, resp.headers.get("X-Image-Cache"), resp.body


def _fill_threads(image_id):
    return [thread for thread in threading.enumerate()
            if thread.name == "cache-fill-%s" % image_id and thread.is_alive()]


def test_through_the_filter_a_request_after_a_stall_fills_afresh(tmp_path):
    setup = Setup(tmp_path)
    stalled = threading.Event()
    try:
        setup.cache.follow_idle_timeout_s = STALL_BOUND_S
        data = os.urandom(50_000)
        image = setup.add_image(data)
        url = "/v2/images/%s/file" % image["id"]
        app = setup.app_for("A")
        setup.origin.gate = stalled                 # the next read stalls after its first chunk
        results = {}
        first = threading.Thread(target=lambda: results.update(first=_get(app, url)))
        first.start()
        _wait(lambda: setup.origin.reads.get(image["id"]) == 1, "the fill to start")
        # Past the bound: the fill's file stopped growing long enough ago, or the first
        # client noticed it before us and abandoned it already.
        _wait(lambda: _stalled_or_gone(setup.cache, image["id"]), "the stall bound to pass")
        setup.origin.gate = None                    # the reads after it do not stall
        # Not joined to the stalled fill (it would answer COALESCED after the bound): a
        # fresh fill, complete while the first origin read is still stalled.
        assert _get(app, url) == (200, "MISS", data)
        assert not stalled.is_set()
        assert _get(app, url) == (200, "HIT", data)
        first.join(helpers.WAIT_S)
        assert results["first"] == (200, "MISS", data)   # from the origin, at its offset
        assert setup.origin.reads[image["id"]] == 2
        stalled.set()                                    # the stalled origin goes on
        _wait(lambda: not _fill_threads(image["id"]), "the stalled fill to end")
        assert _get(app, url) == (200, "HIT", data)
        assert invalid(setup.cache) == [] and incomplete(setup.cache) == []
    finally:
        stalled.set()
        setup.close()
