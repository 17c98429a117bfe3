"""FailoverRead: bytes of an image from one source after another, never restarting.

The part that cluster/source.py's ClusterSource (a fill's bytes) and cluster/proxy.py's
HolderRead (a PEER download's bytes) share. Both are iterators of the bytes [start, end) of an
image that read their current source (a peer's ``client.PeerReader``, or the origin's body)
and, when a peer fails (``client.PeerError``: refused, reset, short, silent, or a holder
slower than ``cluster_peer_min_rate``), close it and go on
from the offset reached with the next source their ``_next_source()`` picks: a client's body
never restarts and never repeats a byte. Each peer byte counts in ``peer_bytes_read_total``.

Bytes are verified by whoever consumes them (a fill's TeeIterator, ``watch``ed here). At
``close()`` the peers that supplied them are counted by its verdict: ``ok`` (every byte arrived
and matched), or ``corrupt``: logged by URL and not asked for that image again by this process
for ``CORRUPT_EXCLUSION_S`` (``ClusterNode.mark_corrupt``). A peer that failed mid-way counts
as ``failed`` when it fails.
"""

import logging

from glance_cache_mw import bodies
from glance_cache_mw.cluster import client

LOG = logging.getLogger(__name__)

CORRUPT_EXCLUSION_S = 600


class FailoverRead:
    """Bytes [``start``, ``end``) of image ``image_id`` (``size`` bytes) for ``node`` (a
    ClusterNode); ``offset``: where the next byte comes from. Subclasses give
    ``_next_source()``, which returns ``self._use_peer(url)`` or ``self._use_origin(body)``."""

    def __init__(self, node, image_id, size, start, end):
        self.node = node
        self.image_id = image_id
        self.size = size
        self.start = self.offset = start
        self.end = end
        self._current = None        # the iterator of the current source
        self._current_body = None   # what to close(): a PeerReader or the origin's body
        self._current_peer = None   # None while reading the origin
        self._suppliers = []        # peers whose bytes went out, in order
        self._failed = set()
        self._tee = None
        self._closed = False

    def watch(self, tee):
        """The TeeIterator that verifies these bytes: its verdict is read at close()."""
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
            chunk = self._trim(chunk)
            if not chunk:
                continue
            if self._current_peer is not None:
                self.node.metrics.peer_bytes(len(chunk))
            self.offset += len(chunk)
            return chunk
        return self._finish()

    def _trim(self, chunk):
        """``chunk`` cut at ``end``."""
        return chunk[:self.end - self.offset]

    def _finish(self):
        """After the last byte: a last chunk to return, or StopIteration."""
        self._end_current()
        raise StopIteration

    def _next_source(self):
        raise NotImplementedError

    def _use_peer(self, peer_url, holder=True):
        """Read on from ``peer_url`` (signed, from ``offset`` up to ``end``); ``holder``:
        it holds the whole image, so ``cluster_peer_min_rate`` applies (not to a node filling
        it, which sends as fast as its origin does)."""
        self._current_peer = peer_url
        if peer_url not in self._suppliers:
            self._suppliers.append(peer_url)
        self._current_body = self.node.reader(peer_url, self.image_id, self.offset, self.size,
                                              end=self._peer_end(), holder=holder)
        return self._current_body

    def _peer_end(self):
        """The end to ask a peer for: ``Range: bytes=offset-(end-1)``; None: ``bytes=offset-``."""
        return self.end

    def _use_origin(self, body):
        """Read on from ``body``, the origin's body from ``offset``."""
        self._current_peer = None
        # PEP 3333: close() is the body's, whatever its __iter__ returns.
        self._current_body = body
        return iter(body)

    def _peer_failed(self, err):
        LOG.warning("image %s: %s; going on from byte %d with another source",
                    self.image_id, err, self.offset)
        self.node.metrics.peer_read("failed")
        self._failed.add(self._current_peer)
        self._current = self._current_body = None   # the reader closed itself

    def _end_current(self):
        body, self._current_body, self._current = self._current_body, None, None
        bodies.close_body(body)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            self._end_current()
        finally:
            self._after_close()

    def _after_close(self):
        """What a subclass does at close() after the source is closed."""
        self._report_peers()

    def _report_peers(self):
        """Count the peers that supplied bytes, by the verifier's verdict on them."""
        mismatch = getattr(self._tee, "mismatch", None)
        for peer_url in self._suppliers:
            if mismatch is None:
                if peer_url not in self._failed and self.offset >= self.end:
                    self.node.metrics.peer_read("ok")   # not a read that stopped half-way
                continue
            LOG.error("image %s: bytes from peer %s failed verification (%s); not asking "
                      "it for this image for %d s", self.image_id, peer_url, mismatch,
                      CORRUPT_EXCLUSION_S)
            self.node.metrics.peer_read("corrupt")
            self.node.mark_corrupt(self.image_id, peer_url)
