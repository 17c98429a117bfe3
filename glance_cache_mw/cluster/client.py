"""Reading an image from a peer node: a signed ``GET /cluster/v1/images/{id}/file``.

``PeerReader`` is an iterator of the image's bytes from ``offset`` on (``Range: bytes=N-``),
or from ``offset`` up to ``end`` (``Range: bytes=N-M``, M = end - 1), as another node's peer
endpoint (middleware/peer.py) serves them from its cached file or its growing fill. Anything
short of every byte up to the image's end (or ``end``) raises ``PeerError`` naming the peer:
a refused or timed-out connection, a status other than 200/206, a Content-Range or
Content-Length whose start, end or total is not the one asked for, a connection that ends
early, resets, sends nothing for ``timeout_s``, or (with ``min_rate``) sends slower than
``min_rate`` bytes per second of waiting for it. The caller (cluster/source.py) then goes on
from the offset reached with another source. The bytes themselves are verified by the fill
that consumes them, not here.

The rate is the bytes received divided by the time spent waiting inside reads, not wall
time: a reader consumed at its client's pace (a PEER download) finds the bytes the peer sent
meanwhile already buffered, so a slow client never makes a peer look slow. It is judged over
windows of ``timeout_s`` seconds of waiting (a short read may finish before any judgement).

The image id goes on the wire percent-encoded as UTF-8 (a space, ``%``, ``?``, ``#`` or a
non-ASCII character stay part of the id); the signature covers the decoded path and id, what
the peer's WSGI server hands its endpoint as PATH_INFO once decoded as UTF-8.

http.client does the HTTP (eventlet's green version when the server monkey-patched it); https
peer URLs are verified against ``ca_file`` (else the system's CAs).
"""

import http.client
import logging
import re
import ssl
import time
import urllib.parse

from glance_cache_mw import cluster
from glance_cache_mw.cluster import signing

LOG = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class PeerError(Exception):
    """A peer could not supply the bytes asked for; ``peer_url``, ``offset`` (of the
    failure) and ``status`` (the HTTP status, when there was one) say where and what."""

    def __init__(self, peer_url, image_id, reason, offset=0, status=None):
        super().__init__("peer %s, image %s at byte %d: %s" % (peer_url, image_id, offset,
                                                              reason))
        self.peer_url = peer_url
        self.image_id = image_id
        self.reason = reason
        self.offset = offset
        self.status = status


class PeerReader:
    """The bytes of ``image_id`` from ``peer_url``, from ``offset`` to ``size`` (or ``end``),
    in chunks of at most ``chunk_size``; ``offset`` advances with each chunk. Connects on the
    first ``next()``; ``close()`` closes the connection (PEP 3333 style: callers always
    close)."""

    def __init__(self, peer_url, image_id, offset, secret, node_url, timeout_s,
                 chunk_size=65536, ca_file=None, *, size=None, ttl_s=30, end=None,
                 min_rate=0):
        """``node_url``: this (asking) node's worker_self_reference_url, signed with
        ``secret`` for ``ttl_s`` seconds; ``size``: the image's size, when known (the
        response must then end there); ``end``: the offset to stop at (exclusive; None: the
        image's end); ``timeout_s``: for connecting and for each read, and the seconds of
        waiting over which ``min_rate`` (bytes/s; 0: no minimum) is judged."""
        if end is not None and end <= offset:
            raise ValueError("PeerReader end=%d is not after offset=%d" % (end, offset))
        self.peer_url = peer_url.rstrip("/")
        self.image_id = image_id
        self.offset = offset
        self.size = size
        self.end = end
        self._secret = secret
        self._node_url = node_url
        self._timeout_s = timeout_s
        self._chunk_size = chunk_size
        self._ca_file = ca_file
        self._ttl_s = ttl_s
        self.min_rate = min_rate
        self._window_bytes = 0     # received in the current rate window
        self._window_wait_s = 0.0  # spent waiting for them
        self._conn = None
        self._response = None
        self._end = None
        self._closed = False
        self.status = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            if self._end is not None and self.offset >= self._end:
                raise StopIteration
            raise PeerError(self.peer_url, self.image_id, "read after close", self.offset)
        if self._response is None:
            self._open()
        if self.offset >= self._end:
            self.close()
            raise StopIteration
        started = time.monotonic()
        try:
            chunk = self._response.read1(min(self._chunk_size, self._end - self.offset))
        except (OSError, http.client.HTTPException) as err:   # timeout, reset, ...
            self._fail("reading: %s" % (_describe(err),))
        if not chunk:
            self._fail("the connection ended at byte %d of %d" % (self.offset, self._end))
        if self.offset + len(chunk) < self._end:
            self._check_rate(len(chunk), time.monotonic() - started)
        self.offset += len(chunk)
        return chunk

    def _check_rate(self, received, waited_s):
        """Fail when a window of ``timeout_s`` seconds of waiting brought fewer than
        ``min_rate`` bytes per second (``received`` is left out of ``offset`` then)."""
        if not self.min_rate:
            return
        self._window_bytes += received
        self._window_wait_s += waited_s
        if self._window_wait_s < self._timeout_s:
            return
        rate = self._window_bytes / self._window_wait_s
        self._window_bytes, self._window_wait_s = 0, 0.0
        if rate < self.min_rate:
            self._fail("sends %.1f KiB/s, under cluster_peer_min_rate (%.1f KiB/s)"
                       % (rate / 1024, self.min_rate / 1024))

    def _fail(self, reason, status=None):
        self.close()
        raise PeerError(self.peer_url, self.image_id, reason, self.offset, status)

    def _open(self):
        try:
            path = cluster.peer_path(self.image_id)
            headers = signing.signed_headers(self._secret, "GET", path, self.image_id,
                                             self._node_url, self._ttl_s)
            wire_path = wire_peer_path(self.image_id)
        except ValueError as err:   # UnicodeError too: a lone surrogate in the id, ...
            self._fail("cannot make a request for this image id: %s" % (_describe(err),))
        headers["Range"] = ("bytes=%d-" % self.offset if self.end is None
                            else "bytes=%d-%d" % (self.offset, self.end - 1))
        try:
            self._conn = self._connection()
            self._conn.request("GET", wire_path, headers=headers)
            self._response = self._conn.getresponse()
        except (OSError, ValueError, http.client.HTTPException) as err:
            self._fail("requesting: %s" % (_describe(err),))
        self.status = self._response.status
        if self.status not in (200, 206):
            self._fail("answered %d %s" % (self.status, self._response.reason), self.status)
        self._end = self._check_extent()

    def _check_extent(self):
        """The offset the response ends at, after checking that it starts at ours and, for
        a 206, ends where we asked (Content-Range start, end and total, Content-Length)."""
        response = self._response
        start, last, total = 0, None, self.size
        if self.status == 206:
            match = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
            if not match:
                self._fail("206 without a valid Content-Range")
            start, last = int(match.group(1)), int(match.group(2))
            if match.group(3) != "*":
                total = int(match.group(3))
        if start != self.offset:
            self._fail("answered from byte %d, not %d" % (start, self.offset))
        if self.size is not None and total != self.size:
            self._fail("has %s bytes of the image, not %d" % (total, self.size))
        wanted = self.end if self.end is not None else total   # exclusive; None: unknown
        length = response.length   # Content-Length (http.client: None when absent)
        if last is not None:
            if last < start or (wanted is not None and last + 1 != wanted):
                self._fail("sends bytes %d-%d, not %d-%s" % (
                    start, last, start, "?" if wanted is None else wanted - 1))
            if length is not None and length != last + 1 - start:
                self._fail("sends %d bytes for the range %d-%d" % (length, start, last))
            return last + 1
        # A 200: the whole image from byte 0 (we asked for byte 0 on); its start is ours.
        if length is None:
            if total is None:
                self._fail("answered without Content-Length")
            length = total
        if total is not None and length != total:
            self._fail("sends %d bytes from 0, not up to %d" % (length, total))
        if wanted is not None and wanted > length:
            self._fail("sends %d bytes, not up to %d" % (length, wanted))
        return length if wanted is None else wanted   # a longer body is cut at ``wanted``

    def _connection(self):
        parts = urllib.parse.urlsplit(self.peer_url)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self._ca_file or None)
            return http.client.HTTPSConnection(parts.hostname, parts.port,
                                               timeout=self._timeout_s, context=context)
        if parts.scheme != "http":
            raise PeerError(self.peer_url, self.image_id, "not an http(s) URL")
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self._timeout_s)

    def close(self):
        self._closed = True
        response, self._response = self._response, None
        conn, self._conn = self._conn, None
        try:
            if response is not None:
                response.close()
        finally:
            if conn is not None:
                conn.close()


def wire_peer_path(image_id):
    """``cluster.peer_path(image_id)`` as it goes in the request line: the id percent-encoded
    as UTF-8, every character but unreserved ones (so ``/``, ``%``, ``?`` and ``#`` in an id
    stay in the id); UnicodeEncodeError for an id that is not valid text (a lone surrogate)."""
    return (cluster.PEER_PATH_PREFIX + urllib.parse.quote(image_id, safe="")
            + cluster.PEER_PATH_SUFFIX)


def _describe(err):
    """A short text for a connection error (a timeout's str() is often empty)."""
    text = str(err)
    return "%s: %s" % (type(err).__name__, text) if text else type(err).__name__
