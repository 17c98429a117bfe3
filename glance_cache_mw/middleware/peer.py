"""PeerFilter: the node-to-node endpoint of a cluster, serving cached and filling images.

Paste: ``[filter:peer] use = egg:glance_cache_mw#peer``, placed before authentication in every
pipeline (after healthcheck and metrics; in Glance's pipeline before authtoken). It answers
``GET|HEAD /cluster/v1/images/{id}/file`` and passes everything else on untouched.

Only other nodes may use it: a request must carry a current signature made with the cluster's
``cluster_secret`` (cluster/signing.py), else 403 with the reason; with cluster mode off every
request is refused. No tenant credential is read or helps: the asking node authorised its own
client against the image database before it asked, so this filter never consults the database
for visibility and serves nothing but the files under the cache directory named by a
validated image id (a malformed id is 404 before any disk access).

* cached → the file, as a hit is served (sendfile; ``Range`` → 206), ``X-Image-Cache: PEER-HIT``;
  it counts as a hit of this node's copy (``open_hit``: hits and last access in
  ``cached_images``, written with the node's batched hit flush), so that the pruner keeps a
  copy the cluster reads from and ``cache stats`` counts the origin read it saved;
* a fill in progress here → its growing file from the range's start (``PEER-FILL``); the last
  bytes wait for the fill's verdict, and a fill that fails or is abandoned cuts the connection
  (never unverified bytes passed off as complete; the asking node verifies what it gets too);
* neither → 404.

Refusals are logged by ``RefusalLog``: the id as a capped ``repr``, at most one WARNING a
minute (the rest at DEBUG), so that a sender can neither forge log lines nor flood the log.
"""

import logging
import os
import re
import threading
import time

import webob.exc

from glance_cache_mw import bodies, cluster
from glance_cache_mw import config as cfg
from glance_cache_mw import metrics as metrics_mod
from glance_cache_mw.api import faults
from glance_cache_mw.cluster import signing
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.middleware import download, glance_compat

LOG = logging.getLogger(__name__)

STATUS_HEADER = "X-Image-Cache"
HIT, FILL = "PEER-HIT", "PEER-FILL"
# The whole path space under the prefix is the endpoint's (an id with a newline or a trailing
# newline included: refused here, never handed on to the images app).
_PEER_RE = re.compile(r"\A" + re.escape(cluster.PEER_PATH_PREFIX) + r"(.+)"
                      + re.escape(cluster.PEER_PATH_SUFFIX) + r"/?\Z", re.DOTALL)
REFUSAL_LOG_INTERVAL_S = 60   # at most one WARNING per interval about refused requests
_MAX_LOGGED_ID = 80   # characters of a refused request's id put in the log


def filter_factory(global_conf, **local_conf):
    """[filter:peer] use = egg:glance_cache_mw#peer"""
    config = cfg.Config.from_mapping(glance_compat.merged_settings({**global_conf, **local_conf}))

    def make_filter(app):
        if not cluster.is_enabled(config):
            return PeerFilter(app, None, None)
        cache = glance_compat.shared_cache(config)   # the cache filter's, one per process
        return PeerFilter(app, cache, config.cluster_secret, ttl_s=config.cluster_signature_ttl,
                          chunk_size=config.chunk_size, metrics=cache.metrics)
    return make_filter


class PeerFilter:
    """Serve ``cache``'s images to signed peer requests; ``secret`` None: cluster mode off."""

    def __init__(self, app, cache, secret, *, ttl_s=30, chunk_size=65536,
                 metrics=metrics_mod.NULL):
        self.app = app
        self.cache = cache
        self.secret = secret
        self.ttl_s = ttl_s
        self.chunk_size = chunk_size
        self.metrics = metrics
        self.refusals = RefusalLog()

    def __call__(self, environ, start_response):
        path = download.url_path(environ)
        match = _PEER_RE.match(path if path is not None else environ.get("PATH_INFO", ""))
        if match is None:
            return self.app(environ, start_response)
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _error(webob.exc.HTTPMethodNotAllowed, "The peer endpoint answers GET and "
                          "HEAD only.", environ, start_response, {"Allow": "GET, HEAD"})
        image_id = match.group(1)
        if not ondisk.is_image_id(image_id):
            self.metrics.peer_served("missing")
            return _error(webob.exc.HTTPNotFound, "No image found with ID %s" % image_id,
                          environ, start_response)
        reason = signing.verify(self.secret, method, cluster.peer_path(image_id), image_id,
                                webob.Request(environ).headers, self.ttl_s)
        if reason is not None:
            self.refusals.refused(image_id, environ.get("REMOTE_ADDR"), reason)
            self.metrics.peer_served("refused")
            return _error(webob.exc.HTTPForbidden, "Peer request refused: %s." % reason,
                          environ, start_response)
        return self._serve(environ, start_response, image_id, method == "HEAD")

    def _serve(self, environ, start_response, image_id, head):
        range_header = environ.get("HTTP_RANGE")
        if range_header and download.is_multi_range(range_header):
            range_header = None   # one range or the whole image, as the images app does
        handle = self._open_hit(image_id)
        if handle is not None:
            return self._serve_hit(environ, start_response, image_id, handle, range_header, head)
        size = self._fill_size(image_id)
        if size is not None:
            response = self._serve_fill(environ, start_response, image_id, size, range_header,
                                        head)
            if response is not None:
                return response
            handle = self._open_hit(image_id)   # the fill committed meanwhile
            if handle is not None:
                return self._serve_hit(environ, start_response, image_id, handle, range_header,
                                       head)
        self.metrics.peer_served("missing")
        return _error(webob.exc.HTTPNotFound, "Image %s is neither cached nor being cached "
                      "on this node." % image_id, environ, start_response)

    def _open_hit(self, image_id):
        try:
            return self.cache.open_hit(image_id)
        except OSError as err:
            LOG.warning("cannot read cached image %s for a peer: %s", image_id, err)
            return None

    def _serve_hit(self, environ, start_response, image_id, handle, range_header, head):
        size = os.fstat(handle.fileno()).st_size
        span = _span(range_header, size, HIT)
        if span is None:
            handle.close()
            return _not_satisfiable(environ, start_response, range_header, size)
        status, start, length, headers = span
        LOG.debug("serving cached image %s to peer %s (%d bytes from %d)", image_id,
                  environ.get("HTTP_X_CACHE_PEER_NODE"), length, start)
        start_response(status, headers)
        self.metrics.peer_served("hit", 0 if head else length)
        if head:
            handle.close()
            return [b""]
        return download.file_body(environ, handle, start, length, size, self.chunk_size)

    def _serve_fill(self, environ, start_response, image_id, size, range_header, head):
        """The growing file of the fill in progress; None when there is none (any more)."""
        span = _span(range_header, size, FILL)
        if span is None:
            return _not_satisfiable(environ, start_response, range_header, size)
        status, start, length, headers = span
        follower = self.cache.follow(image_id, size, offset=start)
        if follower is None:
            return None
        if head:
            follower.close()
            body = [b""]
        else:
            # A fill may end early: eventlet then cuts the connection only once the headers
            # are out, so small writes must not be held back (as on the miss path).
            environ["eventlet.minimum_write_chunk_size"] = 0
            body = follower if start + length == size else _limited(follower, length)
            try:
                body = bodies.PrimedIterator(body)   # a fill that failed already: 404 below
            except Exception as err:
                LOG.info("image %s: fill ended before serving peer %s: %s", image_id,
                         environ.get("HTTP_X_CACHE_PEER_NODE"), err)
                return None
        LOG.info("serving the fill of image %s to peer %s from byte %d", image_id,
                 environ.get("HTTP_X_CACHE_PEER_NODE"), start)
        start_response(status, headers)
        self.metrics.peer_served("fill", 0 if head else length)
        return body

    def _fill_size(self, image_id):
        """The size a fill of ``image_id`` here was admitted for, or None."""
        try:
            return self.cache.get_fill_size(image_id)
        except OSError:
            return None


class RefusalLog:
    """Logs refused peer requests without letting their senders write the log: the client's
    image id is logged as a ``repr`` capped at ``_MAX_LOGGED_ID`` characters (a newline or an
    escape sequence in it stays escaped, on the one line), and at most one WARNING per
    ``interval_s`` (``clock``: seconds, monotonic) tells how many were refused since the last
    one; the others go to DEBUG. An unauthenticated flood through a load balancer then costs
    the log a line a minute; ``peer_requests_total{outcome="refused"}`` counts every one."""

    def __init__(self, interval_s=REFUSAL_LOG_INTERVAL_S, clock=time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_warning = None   # clock time from which the next WARNING may be logged
        self._suppressed = 0

    def refused(self, image_id, remote_addr, reason):
        shown = image_id if len(image_id) <= _MAX_LOGGED_ID else image_id[:_MAX_LOGGED_ID] + "..."
        now = self._clock()
        with self._lock:
            warn = self._next_warning is None or now >= self._next_warning
            if warn:
                self._next_warning = now + self.interval_s
                suppressed, self._suppressed = self._suppressed, 0
            else:
                self._suppressed += 1
        more = ""
        if warn and suppressed:
            more = (" (and %d more since the last such warning, logged at DEBUG: one WARNING "
                    "per %d s)" % (suppressed, self.interval_s))
        LOG.log(logging.WARNING if warn else logging.DEBUG,
                "refused peer request for image %r from %s: %s%s", shown, remote_addr, reason,
                more)


def _span(range_header, size, cache_status):
    """(status, start, length, headers) of the answer; None if the range is unsatisfiable."""
    if not range_header:
        return "200 OK", 0, size, _headers(size, cache_status)
    try:
        start, length = download.parse_range(range_header, size)
    except download.RangeNotSatisfiable:
        return None
    return ("206 Partial Content", start, length,
            _headers(length, cache_status, download.content_range(start, length, size)))


def _not_satisfiable(environ, start_response, range_header, size):
    return _error(webob.exc.HTTPRequestRangeNotSatisfiable,
                  download.not_satisfiable_message(range_header, size), environ,
                  start_response, {"Content-Range": "bytes */%d" % size})


def _limited(body, length):
    """The first ``length`` bytes of ``body`` (a bounded Range of a fill); closes ``body``."""
    try:
        for chunk in body:
            if len(chunk) >= length:
                yield chunk[:length]
                return
            length -= len(chunk)
            yield chunk
    finally:
        bodies.close_body(body)


def _headers(length, cache_status, content_range=None):
    headers = [("Content-Type", "application/octet-stream"),
               ("Content-Length", str(length)), ("Accept-Ranges", "bytes"),
               (STATUS_HEADER, cache_status)]
    if content_range is not None:
        headers.append(("Content-Range", content_range))
    return headers


def _error(exc_class, explanation, environ, start_response, headers=None):
    """``exc_class``'s error in Glance's format (api/faults.py)."""
    return faults.error(exc_class.code, explanation, headers)(environ, start_response)
