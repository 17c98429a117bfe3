"""cluster/source.py: where a cluster node's fill gets its bytes, and what it does on failures.

Real parts: stand-in peer endpoints on 127.0.0.1 (tests/unit/peer_stub.py), fill claims in a
SQLite database of the test (db/fill_claims.py), a real Metrics registry. The holders a node
would find in cached_images are passed in (``Holders``); the origin is a function that records
the offsets it was asked for.
"""

import logging
import time
import types

import pytest

from glance_cache_mw import config, exception, metrics as metrics_mod
from glance_cache_mw.cluster import source as source_mod
from glance_cache_mw.db import fill_claims
from tests import dbfixtures
from tests.unit.cache_helpers import ClosableBody
from tests.unit.peer_stub import DATA, IMAGE_ID, SECRET, TTL_S

SELF = "http://this-node:9292"
IMAGE = {"id": IMAGE_ID, "size": len(DATA)}


class Holders:
    """The part of an ImageCache a ClusterNode uses: who has the image cached."""

    def __init__(self, *urls):
        self.urls = list(urls)

    def get_cached_nodes(self, image_id):
        return sorted(self.urls + [SELF])   # this node's own row is left out by the source


class Origin:
    """The origin's body from an offset, in 64 KiB chunks; ``calls``: (offset, reason)."""

    def __init__(self):
        self.calls = []

    def __call__(self, offset, reason):
        self.calls.append((offset, reason))
        return [DATA[i:i + 65536] for i in range(offset, len(DATA), 65536)]


@pytest.fixture
def engine(tmp_path):
    db = dbfixtures.ScratchDatabase("sqlite", tmp_path)
    yield db.engine
    db.close()


@pytest.fixture
def metrics():
    return metrics_mod.Metrics()


def node_for(engine, metrics, *holders):
    return source_mod.ClusterNode(SELF, SECRET, Holders(*holders), lease_s=30,
                                  peer_timeout_s=2, signature_ttl_s=TTL_S, engine=engine,
                                  metrics=metrics)


def drain(source, mismatch=None):
    """Every byte of ``source``, then close it after a fill's verdict of ``mismatch``."""
    source.watch(types.SimpleNamespace(mismatch=mismatch))
    try:
        return b"".join(source)
    finally:
        source.close()


def peer_reads(metrics, outcome):
    return metrics.registry.get_sample_value("glance_cache_mw_peer_reads_total",
                                             {"outcome": outcome})


def test_a_holder_supplies_every_byte(engine, metrics, peers):
    holder, origin = peers(), Origin()
    assert drain(node_for(engine, metrics, holder.url).source(IMAGE, origin)) == DATA
    assert origin.calls == []
    assert peer_reads(metrics, "ok") == 1
    assert metrics.registry.get_sample_value(
        "glance_cache_mw_peer_bytes_read_total") == len(DATA)


def test_nobody_has_it_the_claim_winner_reads_the_origin_then_releases(engine, metrics):
    origin = Origin()
    source = node_for(engine, metrics).source(IMAGE, origin)
    first = next(source)
    assert fill_claims.filler(IMAGE_ID, engine=engine) == SELF
    assert first + drain(source) == DATA
    assert origin.calls == [(0, "miss")]
    assert fill_claims.filler(IMAGE_ID, engine=engine) is None


def test_a_node_filling_it_is_followed(engine, metrics, peers):
    claimant, origin = peers(), Origin()
    assert fill_claims.claim(IMAGE_ID, claimant.url, 30, engine=engine)
    assert drain(node_for(engine, metrics).source(IMAGE, origin)) == DATA
    assert origin.calls == [] and len(claimant.requests) == 1
    assert fill_claims.filler(IMAGE_ID, engine=engine) == claimant.url   # not ours to drop


@pytest.mark.parametrize("mode", ["reset", "short", "status"])
def test_a_holder_that_fails_is_replaced_by_another(engine, metrics, peers, mode):
    failing, good, origin = peers(mode), peers(), Origin()
    for _ in range(3):   # holders are shuffled: whichever comes first, every byte once
        source = node_for(engine, metrics, failing.url, good.url).source(IMAGE, origin)
        assert drain(source) == DATA
    assert origin.calls == []


def test_the_origin_goes_on_at_the_offset_a_failed_holder_reached(engine, metrics, peers):
    failing, origin = peers("reset"), Origin()
    assert drain(node_for(engine, metrics, failing.url).source(IMAGE, origin)) == DATA
    [(offset, reason)] = origin.calls
    assert 0 < offset < len(DATA) and reason == "fallback"
    assert peer_reads(metrics, "failed") == 1


def test_the_origin_read_after_every_holder_failed_at_byte_0_is_a_fallback(engine, metrics,
                                                                           peers):
    refusing, origin = peers("status"), Origin()
    assert drain(node_for(engine, metrics, refusing.url).source(IMAGE, origin)) == DATA
    assert origin.calls == [(0, "fallback")]
    assert peer_reads(metrics, "failed") == 1


def test_the_claim_of_a_claimant_that_failed_is_taken_over(engine, metrics, peers):
    claimant, origin = peers("short"), Origin()
    assert fill_claims.claim(IMAGE_ID, claimant.url, 300, engine=engine)
    source = node_for(engine, metrics).source(IMAGE, origin)
    assert drain(source) == DATA
    [(offset, reason)] = origin.calls
    assert 0 < offset < len(DATA) and reason == "fallback"
    assert fill_claims.filler(IMAGE_ID, engine=engine) is None   # stolen, then released


def test_a_peer_whose_bytes_failed_verification_is_left_out(engine, metrics, peers, caplog):
    corrupt, origin = peers(), Origin()
    corrupt.data = bytes(255 - b for b in DATA)   # same size, other bytes
    node = node_for(engine, metrics, corrupt.url)
    with caplog.at_level(logging.ERROR, logger=source_mod.__name__):
        assert drain(node.source(IMAGE, origin), mismatch="sha512 differs") == corrupt.data
    assert "bytes from peer %s failed verification" % corrupt.url in caplog.text
    assert peer_reads(metrics, "corrupt") == 1
    assert node.corrupt_peers(IMAGE_ID) == {corrupt.url}
    # The next fill of that image on this node does not ask it again.
    assert drain(node.source(IMAGE, origin)) == DATA
    assert origin.calls == [(0, "miss")] and len(corrupt.requests) == 1


class LateHolder(Holders):
    """A holder that commits (and releases its claim) right after our first look."""

    def __init__(self, url):
        super().__init__()
        self.late_url = url

    def get_cached_nodes(self, image_id):
        nodes = super().get_cached_nodes(image_id)
        self.urls = [self.late_url]
        return nodes


def test_a_fill_that_committed_between_our_looks_is_read_not_the_origin(engine, metrics,
                                                                        peers):
    holder, origin = peers(), Origin()
    node = source_mod.ClusterNode(SELF, SECRET, LateHolder(holder.url), engine=engine,
                                  signature_ttl_s=TTL_S, metrics=metrics)
    source = node.source(IMAGE, origin)
    first = next(source)
    assert fill_claims.filler(IMAGE_ID, engine=engine) is None   # claimed, then released
    assert first + drain(source) == DATA
    assert origin.calls == [] and len(holder.requests) == 1


def test_the_origin_body_is_closed_itself(engine, metrics):
    bodies = []

    def origin(offset, reason):
        bodies.append(ClosableBody([DATA[offset:]]))
        return bodies[-1]
    assert drain(node_for(engine, metrics).source(IMAGE, origin)) == DATA
    assert [body.closed for body in bodies] == [True]


def test_the_claim_is_renewed_while_the_origin_is_read(engine, metrics):
    lease_s = 1.5
    node = source_mod.ClusterNode(SELF, SECRET, Holders(), lease_s=lease_s, engine=engine,
                                  metrics=metrics)
    seen = []

    def slow_origin(offset, reason):
        for i in range(offset, len(DATA), 65536):
            time.sleep(lease_s / 3)   # 5 chunks: the read outlasts two leases
            seen.append(fill_claims.filler(IMAGE_ID, engine=engine))
            yield DATA[i:i + 65536]
    assert drain(node.source(IMAGE, slow_origin)) == DATA
    assert set(seen) == {SELF}
    assert fill_claims.filler(IMAGE_ID, engine=engine) is None


# -- cluster_peer_min_rate: holders only ----------------------------------------------------

MIN_RATE = 4 * 1024 * 1024   # 20 times the stub's trickle (~200 KiB/s)


def slow_node(engine, metrics, *holders):
    """A node judging peers' rates every 0.5 s of waiting."""
    return source_mod.ClusterNode(SELF, SECRET, Holders(*holders), lease_s=30,
                                  peer_timeout_s=0.5, peer_min_rate=MIN_RATE,
                                  signature_ttl_s=TTL_S, engine=engine, metrics=metrics)


def test_a_trickling_holder_is_left_for_another_holder(engine, metrics, peers):
    trickling, good, origin = peers("trickle"), peers(), Origin()
    for _ in range(3):   # holders are shuffled: whichever comes first, every byte once
        source = slow_node(engine, metrics, trickling.url, good.url).source(IMAGE, origin)
        assert drain(source) == DATA
    assert origin.calls == []
    assert peer_reads(metrics, "failed") == len(trickling.requests)


def test_a_trickling_holder_is_left_for_the_origin_at_the_offset_reached(engine, metrics,
                                                                         peers, caplog):
    trickling, origin = peers("trickle"), Origin()
    with caplog.at_level(logging.WARNING):
        assert drain(slow_node(engine, metrics, trickling.url).source(IMAGE, origin)) == DATA
    [(offset, reason)] = origin.calls
    assert 0 < offset < len(DATA) and reason == "fallback"
    assert peer_reads(metrics, "failed") == 1
    assert "under cluster_peer_min_rate" in caplog.text


def test_a_trickling_claimant_is_followed_to_the_end(engine, metrics, peers):
    # The node filling the image sends at its origin's pace: only its silence is bounded.
    claimant, origin = peers("trickle"), Origin()
    assert fill_claims.claim(IMAGE_ID, claimant.url, 30, engine=engine)
    assert drain(slow_node(engine, metrics).source(IMAGE, origin)) == DATA
    assert origin.calls == [] and len(claimant.requests) == 1
    assert not peer_reads(metrics, "failed")


def test_the_minimum_rate_is_a_setting_for_holders_only():
    settings = {"image_cache_driver": "centralized_db", "worker_self_reference_url": SELF,
                "cluster_secret": SECRET}
    cache = types.SimpleNamespace(shared_engine=None)
    default = source_mod.ClusterNode.from_config(config.Config.from_mapping(settings), cache)
    assert default.peer_min_rate == 1048576
    node = source_mod.ClusterNode.from_config(
        config.Config.from_mapping({**settings, "cluster_peer_min_rate": "2048"}), cache)
    assert node.reader("http://peer:9292", IMAGE_ID, 0, 10).min_rate == 2048
    assert node.reader("http://peer:9292", IMAGE_ID, 0, 10, holder=False).min_rate == 0
    for bad in ("-1", "fast"):
        with pytest.raises(exception.InvalidConfiguration, match="cluster_peer_min_rate='%s'"
                           % bad):
            config.Config.from_mapping({**settings, "cluster_peer_min_rate": bad})
