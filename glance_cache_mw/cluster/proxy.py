"""A download answered from a node that holds the image, without a local fill.

In cluster mode the CacheFilter answers two kinds of download that start no local fill from
peers instead of the origin (X-Image-Cache ``PEER``): a single-range GET that is not a hit,
and a full GET miss the node has no room for. ``HolderRead`` is the body: bytes [start, end)
of the image, read (``Range: bytes=N-M``, cluster/client.py) from the nodes that hold the
whole image (``cached_images``, shuffled, without this node and the peers whose bytes of the
image failed verification lately: ``ClusterNode.holders`` and ``corrupt_peers``). A node
filling the image is not asked: its file is not whole, and it is the one reading the origin.

* No holder, or none sends a first byte (refused, 404 because it evicted the image meanwhile,
  silent for ``cluster_peer_timeout``): ``NoHolder`` from the first ``next()``; the caller
  passes the request to the origin, as without cluster mode (BYPASS).
* A holder failing after that (including one sending under ``cluster_peer_min_rate`` per
  second this node waited for it: the client's own pace does not count): the next holder
  goes on from the offset reached, then the origin (``origin(offset, end)``, a Range read
  counted as a fallback): the client's body neither restarts nor repeats a byte.

Reading, failing over and counting peers are cluster/failover.py's (shared with fills): each
holder read ends as a ``peer_reads_total`` outcome (ok, failed; corrupt when a full body
``watch``ed through a verifying TeeIterator did not match the image's hashes: that peer is then
left out for the image for a while, as for fills).
"""

import logging

from glance_cache_mw.cluster import failover

LOG = logging.getLogger(__name__)


class NoHolder(Exception):
    """No node holding the image sent its first byte: the origin should answer instead."""


class HolderRead(failover.FailoverRead):
    """The bytes [``start``, ``end``) of an image from its holders (see the module
    docstring); ``offset``: where the next byte comes from."""

    def __init__(self, node, image_id, size, start, end, origin):
        """``node``: the ClusterNode; ``origin(offset, end)``: the origin's body of bytes
        [offset, end) of the image."""
        super().__init__(node, image_id, size, start, end)
        self._origin = origin
        self._holders = self._find_holders()

    def _find_holders(self):
        corrupt = self.node.corrupt_peers(self.image_id)
        try:
            holders = self.node.holders(self.image_id)
        except Exception as err:   # the database: the origin answers, as without holders
            LOG.warning("image %s: cannot look up the nodes holding it: %s", self.image_id, err)
            return []
        return [url for url in holders if url not in corrupt]

    @property
    def has_holders(self):
        """True when some other node holds the image (a first source to try)."""
        return bool(self._holders)

    def _next_source(self):
        if self._holders:
            peer_url = self._holders.pop(0)
            LOG.info("image %s: reading bytes %d-%d from peer %s", self.image_id,
                     self.offset, self.end - 1, peer_url)
            return self._use_peer(peer_url)
        if self.offset == self.start:
            raise NoHolder("no node holding image %s sent a byte" % self.image_id)
        LOG.warning("image %s: no other peer holds it; reading bytes %d-%d from the origin",
                    self.image_id, self.offset, self.end - 1)
        return self._use_origin(self._origin(self.offset, self.end))
