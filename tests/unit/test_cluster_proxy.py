"""cluster/proxy.py: a range (or an uncached whole image) read from the nodes holding it.

Real parts: stand-in peer endpoints on 127.0.0.1 (tests/unit/peer_stub.py), a real Metrics
registry. The holders a node would find in cached_images are passed in (``Holders`` of
test_cluster_source); the origin is a function that records the parts it was asked for.
"""

import time
import types

import pytest

from glance_cache_mw import metrics as metrics_mod
from glance_cache_mw.cluster import proxy, source as source_mod
from tests.functional.serving import free_port
from tests.unit.peer_stub import DATA, IMAGE_ID, SECRET, TTL_S
from tests.unit.test_cluster_source import IMAGE, SELF, Holders, peer_reads


class Origin:
    """The origin's bytes [offset, end) in 64 KiB chunks; ``calls``: (offset, end)."""

    def __init__(self):
        self.calls = []

    def __call__(self, offset, end):
        self.calls.append((offset, end))
        return [DATA[i:min(i + 65536, end)] for i in range(offset, end, 65536)]


@pytest.fixture
def metrics():
    return metrics_mod.Metrics()


def node_for(metrics, *holders):
    return source_mod.ClusterNode(SELF, SECRET, Holders(*holders), peer_timeout_s=2,
                                  signature_ttl_s=TTL_S, metrics=metrics)


def read(node, start, end, origin):
    body = node.proxy(IMAGE, start, end, origin)
    try:
        return b"".join(body)
    finally:
        body.close()


def bytes_read(metrics):
    return metrics.registry.get_sample_value("glance_cache_mw_peer_bytes_read_total")


@pytest.mark.parametrize("start, end", [(0, 1), (5, 10), (1000, len(DATA)),
                                        (0, len(DATA)), (len(DATA) - 1, len(DATA))])
def test_a_holder_sends_exactly_the_range(metrics, peers, start, end):
    holder, origin = peers(), Origin()
    assert read(node_for(metrics, holder.url), start, end, origin) == DATA[start:end]
    assert origin.calls == []
    assert holder.requests[0]["Range"] == "bytes=%d-%d" % (start, end - 1)
    assert bytes_read(metrics) == end - start
    assert peer_reads(metrics, "ok") == 1


def test_no_holder_is_no_holder_before_any_read(metrics):
    origin = Origin()
    body = node_for(metrics).proxy(IMAGE, 0, 10, origin)
    assert not body.has_holders
    with pytest.raises(proxy.NoHolder):
        next(body)
    body.close()
    assert origin.calls == []


def test_a_database_that_cannot_say_who_holds_it_means_no_holder(metrics, peers):
    node = node_for(metrics, peers().url)

    def unreachable(image_id):
        raise OSError("connection refused")
    node.holders = unreachable
    assert not node.proxy(IMAGE, 0, 10, Origin()).has_holders


@pytest.mark.parametrize("mode", ["status", "ignore-range"])
def test_holders_that_fail_before_the_first_byte_are_no_holder_not_the_origin(metrics, peers,
                                                                               mode):
    """The caller passes the request to the origin then (BYPASS), as without a holder."""
    gone = "http://127.0.0.1:%d" % free_port()
    origin = Origin()
    body = node_for(metrics, peers(mode).url, gone).proxy(IMAGE, 100, 200, origin)
    assert body.has_holders
    with pytest.raises(proxy.NoHolder):
        next(body)
    body.close()
    assert origin.calls == [] and peer_reads(metrics, "failed") == 2


def test_a_failed_holder_is_replaced_by_the_next_one(metrics, peers):
    bad, good = peers("status"), peers()
    node, origin = node_for(metrics, bad.url, good.url), Origin()
    node.holders = lambda image_id: [bad.url, good.url]   # this order, not shuffled
    assert read(node, 7, 70007, origin) == DATA[7:70007]
    assert origin.calls == []
    assert len(bad.requests) == len(good.requests) == 1


@pytest.mark.parametrize("mode", ["reset", "short"])
def test_a_holder_failing_mid_way_is_continued_by_another_from_the_offset_reached(
        metrics, peers, mode):
    bad, good = peers(mode), peers()
    node = node_for(metrics, bad.url, good.url)
    node.holders = lambda image_id: [bad.url, good.url]   # this order, not shuffled
    start, end = 10, len(DATA) - 10
    assert read(node, start, end, Origin()) == DATA[start:end]
    reached = int(good.requests[0]["Range"][len("bytes="):].split("-")[0])
    assert start < reached < end
    assert good.requests[0]["Range"] == "bytes=%d-%d" % (reached, end - 1)
    assert bytes_read(metrics) == end - start
    assert (peer_reads(metrics, "failed"), peer_reads(metrics, "ok")) == (1, 1)


def test_the_last_holder_failing_mid_way_is_continued_by_the_origin(metrics, peers):
    bad, origin = peers("reset"), Origin()
    start, end = 3, len(DATA) - 3
    assert read(node_for(metrics, bad.url), start, end, origin) == DATA[start:end]
    assert len(origin.calls) == 1
    offset, stop = origin.calls[0]
    assert start < offset < end and stop == end


def test_peers_whose_bytes_failed_verification_are_left_out(metrics, peers):
    corrupt, good = peers(), peers()
    node = node_for(metrics, corrupt.url, good.url)
    node.mark_corrupt(IMAGE_ID, corrupt.url)
    for _ in range(4):   # whatever the shuffle
        assert read(node, 0, 100, Origin()) == DATA[:100]
    assert corrupt.requests == [] and len(good.requests) == 4


def test_a_whole_body_that_fails_verification_marks_its_holder_corrupt(metrics, peers):
    holder = peers()
    holder.data = bytes(len(DATA))
    node = node_for(metrics, holder.url)
    body = node.proxy(IMAGE, 0, len(DATA), Origin())
    body.watch(types.SimpleNamespace(mismatch="sha512 differs"))
    try:
        assert b"".join(body) == holder.data
    finally:
        body.close()
    assert node.corrupt_peers(IMAGE_ID) == {holder.url}
    assert (peer_reads(metrics, "corrupt"), peer_reads(metrics, "ok")) == (1, 0)


# -- cluster_peer_min_rate ------------------------------------------------------------------

def slow_node(metrics, *holders):
    """A node judging holders' rates every 0.5 s of waiting, at 20 times the stub's trickle."""
    return source_mod.ClusterNode(SELF, SECRET, Holders(*holders), peer_timeout_s=0.5,
                                  peer_min_rate=4 * 1024 * 1024, signature_ttl_s=TTL_S,
                                  metrics=metrics)


def test_a_trickling_holder_is_left_for_another_at_the_offset_reached(metrics, peers):
    trickling, good, origin = peers("trickle"), peers(), Origin()
    for _ in range(3):   # holders are shuffled: whichever comes first, every byte once
        assert read(slow_node(metrics, trickling.url, good.url), 10, len(DATA),
                    origin) == DATA[10:]
    assert origin.calls == []
    assert peer_reads(metrics, "failed") == len(trickling.requests)


def test_a_trickling_last_holder_is_left_for_the_origin(metrics, peers):
    trickling, origin = peers("trickle"), Origin()
    assert read(slow_node(metrics, trickling.url), 10, len(DATA) - 5, origin) == \
        DATA[10:len(DATA) - 5]
    [(offset, end)] = origin.calls
    assert 10 < offset < len(DATA) - 5 and end == len(DATA) - 5


def test_a_slow_client_of_a_fast_holder_is_not_a_slow_holder(metrics, peers):
    # The client takes ~16 KiB per 50 ms (~320 KiB/s, for over two 0.5 s windows): far under
    # the minimum rate in wall time, but the holder had sent, and waiting is what counts.
    holder, origin = peers(), Origin()
    node = source_mod.ClusterNode(SELF, SECRET, Holders(holder.url), peer_timeout_s=0.5,
                                  peer_min_rate=4 * 1024 * 1024, signature_ttl_s=TTL_S,
                                  chunk_size=16384, metrics=metrics)
    body = node.proxy(IMAGE, 0, len(DATA), origin)
    got = []
    try:
        for chunk in body:
            got.append(chunk)
            time.sleep(0.05)
    finally:
        body.close()
    assert b"".join(got) == DATA and origin.calls == []
    assert not peer_reads(metrics, "failed") and len(holder.requests) == 1
