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
* A holder failing after that: the next holder goes on from the offset reached, then the
  origin (``origin(offset, end)``, a Range read counted as a fallback): the client's body
  neither restarts nor repeats a byte.

Each chunk from a peer counts in ``peer_bytes_read_total``; each holder read ends as a
``peer_reads_total`` outcome (ok, failed; corrupt when a full body ``watch``ed through a
verifying TeeIterator did not match the image's hashes: that peer is then left out for the
image for a while, as for fills).
"""

import logging

from glance_cache_mw import bodies
from glance_cache_mw.cluster import client

LOG = logging.getLogger(__name__)


class NoHolder(Exception):
    """No node holding the image sent its first byte: the origin should answer instead."""


class HolderRead:
    """The bytes [``start``, ``end``) of an image from its holders (see the module
    docstring); ``offset``: where the next byte comes from. ``close()`` ends the current
    source and reports the peers whose bytes a ``watch``ed fill found wrong."""

    def __init__(self, node, image_id, size, start, end, origin):
        """``node``: the ClusterNode; ``origin(offset, end)``: the origin's body of bytes
        [offset, end) of the image."""
        self.node = node
        self.image_id = image_id
        self.size = size
        self.start = self.offset = start
        self.end = end
        self._origin = origin
        self._holders = self._find_holders()
        self._current = None        # the iterator of the current source
        self._current_body = None   # what to close(): a PeerReader or the origin's body
        self._current_peer = None   # None while reading the origin
        self._suppliers = []        # peers whose bytes went out, in order
        self._failed = set()
        self._tee = None
        self._closed = False

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

    def watch(self, tee):
        """The TeeIterator that verifies these bytes (a full body): read at close()."""
        self._tee = tee

    def __iter__(self):
        return self

    def __next__(self):
        while self.offset < self.end:
            if self._current is None:
                self._current = self._next_source()
            try:
                chunk = next(self._current)
            except StopIteration:
                self._end_current()
                if self._current_peer is None:
                    raise IOError("the origin ended at byte %d of %d"
                                  % (self.offset, self.end)) from None
                continue   # a PeerReader ends only at ``end``
            except client.PeerError as err:
                self._peer_failed(err)
                continue
            chunk = chunk[:self.end - self.offset]
            if not chunk:
                continue
            if self._current_peer is not None:
                self.node.metrics.peer_bytes(len(chunk))
            self.offset += len(chunk)
            return chunk
        self._end_current()
        raise StopIteration

    def _next_source(self):
        if self._holders:
            peer_url = self._holders.pop(0)
            LOG.info("image %s: reading bytes %d-%d from peer %s", self.image_id,
                     self.offset, self.end - 1, peer_url)
            self._current_peer = peer_url
            if peer_url not in self._suppliers:
                self._suppliers.append(peer_url)
            self._current_body = self.node.reader(peer_url, self.image_id, self.offset,
                                                  self.size, end=self.end)
            return self._current_body
        if self.offset == self.start:
            raise NoHolder("no node holding image %s sent a byte" % self.image_id)
        LOG.warning("image %s: no other peer holds it; reading bytes %d-%d from the origin",
                    self.image_id, self.offset, self.end - 1)
        self._current_peer = None
        # PEP 3333: close() is the body's, whatever its __iter__ returns.
        self._current_body = self._origin(self.offset, self.end)
        return iter(self._current_body)

    def _peer_failed(self, err):
        if self.offset == self.start:
            LOG.info("image %s: %s; trying another source", self.image_id, err)
        else:
            LOG.warning("image %s: %s; going on from byte %d with another source",
                        self.image_id, err, self.offset)
        self.node.metrics.peer_read("failed")
        self._failed.add(self._current_peer)
        self._current = self._current_body = None   # the reader closed itself

    def _end_current(self):
        body, self._current_body, self._current = self._current_body, None, None
        if (body is not None and self._current_peer is not None and self._tee is None
                and self.offset >= self.end):   # a watched body's peers: at close()
            self.node.metrics.peer_read("ok")
        bodies.close_body(body)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            self._end_current()
        finally:
            self._report_peers()

    def _report_peers(self):
        """For a ``watch``ed body: the holders that sent it, by the verifier's verdict."""
        if self._tee is None:
            return
        mismatch = getattr(self._tee, "mismatch", None)
        for peer_url in self._suppliers:
            if peer_url in self._failed and mismatch is None:
                continue   # counted as failed already
            if mismatch is None:
                if self.offset >= self.end:
                    self.node.metrics.peer_read("ok")
                continue
            LOG.error("image %s: bytes from peer %s failed verification (%s); not asking "
                      "it for this image for a while", self.image_id, peer_url, mismatch)
            self.node.metrics.peer_read("corrupt")
            self.node.mark_corrupt(self.image_id, peer_url)
