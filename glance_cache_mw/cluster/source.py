"""Where a cluster node's fill gets its bytes: a peer that holds or fills the image, or the origin.

In cluster mode (cluster/__init__.py) the CacheFilter's miss, once it authorised its client and
admitted a local fill, reads the image through a ``ClusterSource`` instead of the origin's
body. The source is an iterator of the image's chunks that tracks its offset and picks, each
time it needs a source:

1. a node holding the image (``cached_images`` rows: ``get_cached_nodes``), shuffled to
   spread the load, other than this one;
2. else the node that claimed the image's cluster-wide fill (``fill_claims.filler``): it is
   reading the origin, and its peer endpoint streams its growing file;
3. else the claim itself (``fill_claims.claim``: exactly one node wins); the winner reads the
   origin, renewing its lease every lease/3 in a thread, and releases the claim when its fill
   ends (after the commit, so that some node always answers for the image); a loser follows
   the winner. A winner looks at the holders once more: a fill that committed and released
   its claim between our two looks makes its node a holder, read instead of the origin.

A source that fails mid-way (``client.PeerError``: refused, reset, short, silent for
``cluster_peer_timeout``, or a holder sending under ``cluster_peer_min_rate`` per second of
waiting: not the claimant, whose pace is its origin's) is excluded for this fill and the next
one goes on from the offset reached (Range): the client's download never restarts (the
reading and failing over, shared with PEER downloads, is cluster/failover.py's). When the peer
that failed was the claimant, its claim is stolen (``fill_claims.steal``: one stealer wins and
reads the origin from its offset, the others follow it). When no peer works after a few tries,
the origin is read from the offset anyway (a logged fallback, counted as such, as is any
origin read after a peer failed). Bytes are verified by the fill (the TeeIterator
``watch``ed here): when they fail, the peers that supplied them are logged by URL and not
asked for that image again by this process for ``CORRUPT_EXCLUSION_S``.
"""

import logging
import random
import threading
import time

from glance_cache_mw import cluster as cluster_mod, metrics as metrics_mod
from glance_cache_mw.cluster import client, failover, proxy
from glance_cache_mw.db import fill_claims

LOG = logging.getLogger(__name__)

CORRUPT_EXCLUSION_S = failover.CORRUPT_EXCLUSION_S
MAX_SOURCES = 8   # sources tried for one fill before the origin is read anyway


class ClusterNode:
    """This node's part in the cluster: its settings, the shared database, and the peers it
    found sending corrupt bytes (per image, for ``CORRUPT_EXCLUSION_S``)."""

    def __init__(self, node_url, secret, cache, *, lease_s=10, peer_timeout_s=30,
                 peer_min_rate=1048576, signature_ttl_s=30, ca_file=None, chunk_size=65536,
                 engine=None, metrics=metrics_mod.NULL):
        """``cache``: the ImageCache (its driver knows the holders: get_cached_nodes);
        ``engine``: of the shared database (default: the configured one);
        ``peer_min_rate``: bytes/s a holder must send per second of waiting (0: no minimum)."""
        self.node_url = node_url
        self.secret = secret
        self.cache = cache
        self.lease_s = lease_s
        self.peer_timeout_s = peer_timeout_s
        self.peer_min_rate = peer_min_rate
        self.signature_ttl_s = signature_ttl_s
        self.ca_file = ca_file
        self.chunk_size = chunk_size
        self.engine = engine
        self.metrics = metrics
        self._corrupt = {}   # (image_id, peer_url) -> monotonic time it may be asked again
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config, cache, metrics=metrics_mod.NULL):
        """The node for ``config``, or None when cluster mode is off."""
        if not cluster_mod.is_enabled(config):
            return None
        return cls(config.worker_self_reference_url, config.cluster_secret, cache,
                   lease_s=config.cluster_fill_lease,
                   peer_timeout_s=config.cluster_peer_timeout,
                   peer_min_rate=config.cluster_peer_min_rate,
                   signature_ttl_s=config.cluster_signature_ttl,
                   ca_file=config.cluster_ca_file, chunk_size=config.chunk_size,
                   engine=cache.shared_engine, metrics=metrics)

    def source(self, image, origin):
        """A ClusterSource of ``image`` (a dict with id and size); ``origin(offset,
        reason)`` returns the origin's body from ``offset`` (reason "miss" or "fallback")."""
        return ClusterSource(self, image["id"], image["size"], origin)

    def holders(self, image_id):
        """Other nodes with the image cached, in random order."""
        nodes = [url for url in self.cache.get_cached_nodes(image_id) if url != self.node_url]
        random.shuffle(nodes)
        return nodes

    def reader(self, peer_url, image_id, offset, size, end=None, holder=True):
        """A signed PeerReader of ``image_id`` from ``offset`` to ``end`` (None: ``size``);
        ``holder``: the peer holds the whole image, so it must keep up ``peer_min_rate``
        (a peer filling it is paced by its origin: only its silence is bounded)."""
        return client.PeerReader(peer_url, image_id, offset, self.secret, self.node_url,
                                 self.peer_timeout_s, self.chunk_size, self.ca_file,
                                 size=size, ttl_s=self.signature_ttl_s, end=end,
                                 min_rate=self.peer_min_rate if holder else 0)

    def proxy(self, image, start, end, origin):
        """A proxy.HolderRead of bytes [``start``, ``end``) of ``image`` from the nodes
        holding it; ``origin(offset, end)``: the origin's body of that part, for a holder
        failing after the first byte (see cluster/proxy.py)."""
        return proxy.HolderRead(self, image["id"], image["size"], start, end, origin)

    def mark_corrupt(self, image_id, peer_url):
        with self._lock:
            self._corrupt[(image_id, peer_url)] = time.monotonic() + CORRUPT_EXCLUSION_S

    def corrupt_peers(self, image_id):
        """Peers whose bytes of ``image_id`` failed verification lately."""
        now = time.monotonic()
        with self._lock:
            for key in [key for key, until in self._corrupt.items() if until <= now]:
                del self._corrupt[key]
            return {peer for (image, peer) in self._corrupt if image == image_id}


class ClusterSource(failover.FailoverRead):
    """The bytes of one image for this node's fill, from peers or the origin (see the
    module docstring); ``offset``: bytes yielded so far. ``close()`` ends the current source,
    releases a claim this node holds and reports peers whose bytes failed verification."""

    def __init__(self, node, image_id, size, origin):
        super().__init__(node, image_id, size, 0, size)
        self._origin = origin
        self._tried = 0
        self._claimed = False
        self._renewer = None

    def _peer_end(self):
        return None   # the whole rest: bytes=offset-

    def _trim(self, chunk):
        # The origin's bytes are not cut (see _finish).
        return super()._trim(chunk) if self._current_peer is not None else chunk

    def _finish(self):
        if self._current is not None and self._current_peer is None:
            # The origin's body runs to its end, as outside cluster mode: Glance's data path
            # reports a download (image.send) only then, and bytes past the record's size
            # reach the fill's verifier, which fails the fill.
            for chunk in self._current:
                if chunk:
                    self.offset += len(chunk)
                    return chunk
        return super()._finish()

    # -- choosing a source ---------------------------------------------------------------

    def _next_source(self):
        """The next source from ``offset``: a holder, the claimant, or the origin."""
        node = self.node
        while self._tried < MAX_SOURCES:
            self._tried += 1
            avoid = self._failed | node.corrupt_peers(self.image_id)
            holder = self._holder(avoid)
            if holder is not None:
                return self._from_peer(holder, holder=True)
            if self._claimed:
                return self._from_origin(self._origin_reason())
            filler = fill_claims.filler(self.image_id, engine=node.engine)
            if filler is None or filler == node.node_url:
                if fill_claims.claim(self.image_id, node.node_url, node.lease_s,
                                     engine=node.engine):
                    return self._won_claim(avoid)
                continue   # lost the race just now: follow the winner
            if filler not in avoid:
                return self._from_peer(filler, holder=False)
            if filler not in self._failed:
                break   # the claimant sent corrupt bytes before: not again
            if fill_claims.steal(self.image_id, node.node_url, filler, node.lease_s,
                                 engine=node.engine):
                LOG.info("image %s: took over the fill claim of %s, which failed",
                         self.image_id, filler)
                return self._won_claim(avoid)
            time.sleep(min(0.05 * self._tried, 0.5))   # another node took it: look again
        LOG.warning("image %s: no peer could supply it after %d tries; reading the origin "
                    "at byte %d", self.image_id, self._tried, self.offset)
        return self._from_origin("fallback")

    def _holder(self, avoid):
        """A node holding the image (random among them), not in ``avoid``, or None."""
        holders = [url for url in self.node.holders(self.image_id) if url not in avoid]
        return holders[0] if holders else None

    def _won_claim(self, avoid):
        """This node holds the claim now: read the origin, unless a fill committed (and
        released its claim) between our look at the holders and our claim."""
        self._claimed = True
        holder = self._holder(avoid)
        if holder is not None:
            self._release()
            return self._from_peer(holder, holder=True)
        self._renewer = _LeaseRenewer(self.node, self.image_id)
        self._renewer.start()
        return self._from_origin(self._origin_reason())

    def _origin_reason(self):
        """"miss" for the one origin read a cluster needs; "fallback" when this node reads
        the origin because a peer failed it (from byte 0 too: a node that cannot reach or
        trust any peer), or from the offset another source reached."""
        return "fallback" if self.offset or self._failed else "miss"

    def _from_origin(self, reason):
        LOG.info("image %s: filling from origin at byte %d", self.image_id, self.offset)
        return self._use_origin(self._origin(self.offset, reason))

    def _from_peer(self, peer_url, holder):
        LOG.info("image %s: filling from peer %s at byte %d", self.image_id, peer_url,
                 self.offset)
        return self._use_peer(peer_url, holder)

    # -- the end -------------------------------------------------------------------------

    def _after_close(self):
        try:
            if self._renewer is not None:
                self._renewer.stop()
            if self._claimed:
                self._release()
        finally:
            self._report_peers()

    def _release(self):
        self._claimed = False
        try:
            fill_claims.release(self.image_id, self.node.node_url, engine=self.node.engine)
        except Exception as err:   # the lease expires anyway
            LOG.warning("image %s: could not release its fill claim: %s", self.image_id, err)


class _LeaseRenewer:
    """Renews this node's claim on an image every lease/3 until ``stop()`` (a green thread
    under eventlet's patching); stops early, logging, if the claim was lost."""

    def __init__(self, node, image_id):
        self._node = node
        self._image_id = image_id
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="fill-lease-%s" % image_id)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopped.set()

    def _run(self):
        node = self._node
        while not self._stopped.wait(node.lease_s / 3.0):
            try:
                if not fill_claims.renew(self._image_id, node.node_url, node.lease_s,
                                         engine=node.engine):
                    LOG.warning("image %s: lost its fill claim; reading on from the origin",
                                self._image_id)
                    return
            except Exception as err:   # the database is away: try again next period
                LOG.warning("image %s: could not renew its fill claim: %s",
                            self._image_id, err)
