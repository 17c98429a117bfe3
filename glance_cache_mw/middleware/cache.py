"""CacheFilter: serve image downloads from the local cache, fill it on misses, evict on change.

Paste: ``[filter:cache] use = egg:glance_cache_mw#cache``. For every ``GET|HEAD
/v2[.N]/images/{id}/file`` it validates the id (404 before any disk or DB access), checks the
image through the DB API with the caller's context (missing or invisible → 404, deactivated →
403 for non-admins), then answers from the cache (HIT, Range too), by following a fill in
progress (COALESCED), or by starting a fill and following it too (MISS): the fill reads the
origin at the origin's pace, whoever reads the file (image_cache/pump.py); in cluster mode it
reads a peer node instead, or the origin once per cluster (cluster/source.py). In cluster
mode, a single range that is not a hit and a miss with no room to cache it are read from a
node holding the image, without a local fill (PEER, cluster/proxy.py). Headers go out with
the first byte; a failure after them cuts the connection. Anything else goes to the app
untouched, except that a successful image DELETE or deactivate evicts the local copy.
"""

import logging
import os
import re
import time

import webob
import webob.exc

from glance_cache_mw import config as cfg
from glance_cache_mw import bodies, exception, metrics as metrics_mod
from glance_cache_mw.api import faults
from glance_cache_mw.cluster import proxy as cluster_proxy, source as cluster_source
from glance_cache_mw.db import api as db_api_module
from glance_cache_mw.image_cache import fill
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.middleware import download, glance_compat

LOG = logging.getLogger(__name__)

STATUS_HEADER = "X-Image-Cache"
PEER = "PEER"   # cluster mode: read from a node holding the image, not cached here
_VERSION = r"^/v2(?:\.\d+)?"
_DOWNLOAD_RE = re.compile(_VERSION + r"/images/(.+)/file/?$")
_IMAGE_RE = re.compile(_VERSION + r"/images/([^/]+)/?$")
_DEACTIVATE_RE = re.compile(_VERSION + r"/images/([^/]+)/actions/deactivate/?$")


def filter_factory(global_conf, **local_conf):
    """[filter:cache] use = egg:glance_cache_mw#cache"""
    # Inside Glance, unset keys come from the glance-api.conf it loaded (glance_compat).
    config = cfg.Config.from_mapping(glance_compat.merged_settings({**global_conf, **local_conf}))

    def make_filter(app):
        db_api = db_api_module.configured(config.sql_connection)
        cache = glance_compat.shared_cache(config)
        return CacheFilter(app, cache, db_api,
                           chunk_size=config.chunk_size, metrics=cache.metrics,
                           authorize=glance_compat.DownloadPolicy.if_in_glance(),
                           cluster=cluster_source.ClusterNode.from_config(config, cache,
                                                                          cache.metrics))
    return make_filter


class CacheFilter:
    """The cache in front of an images app; everything it does not handle goes to ``app``."""

    def __init__(self, app, cache, db_api, *, chunk_size=65536, authorize=None,
                 metrics=metrics_mod.NULL, cluster=None):
        """``authorize(environ, image)``: None to allow cached bytes, else the response to
        send (inside Glance: Glance's download_image policy, see glance_compat);
        ``cluster``: a cluster_source.ClusterNode in cluster mode (fills read peers)."""
        self.app = app
        self.cache = cache
        self.db_api = db_api
        self.chunk_size = chunk_size
        self.authorize = authorize
        self.metrics = metrics
        self.cluster = cluster

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], download.url_path(environ)
        if path is None:   # not UTF-8: the images app answers 400
            return self.app(environ, start_response)
        if method in ("GET", "HEAD"):
            match = _DOWNLOAD_RE.match(path)
            if match:
                return self._download(environ, start_response, match.group(1), method == "HEAD")
        elif method == "DELETE":
            match = _IMAGE_RE.match(path)
            if match:
                return self._evict_after(environ, start_response, match.group(1))
        elif method == "POST":
            match = _DEACTIVATE_RE.match(path)
            if match:
                return self._evict_after(environ, start_response, match.group(1))
        return self.app(environ, start_response)

    # -- downloads -----------------------------------------------------------------------

    def _download(self, environ, start_response, image_id, head):
        if not ondisk.is_image_id(image_id):
            LOG.info("refused download of malformed image id %r", image_id)
            return _error(webob.exc.HTTPNotFound, "No image found with ID %s" % image_id,
                          environ, start_response)
        context = glance_compat.request_context(environ)   # ours, or Glance's req.context
        if context is None:
            LOG.warning("no request context for %s: is the context filter before the cache?",
                        environ.get("PATH_INFO"))
            return self._bypass(environ, start_response)
        try:
            image = self.db_api.image_get_visible(context, image_id)
        except (exception.NotFound, exception.Forbidden):
            image = None
        if image is None or image["deleted"]:   # deleted is gone, for admins too (LP #1081941)
            return _error(webob.exc.HTTPNotFound, "No image found with ID %s" % image_id,
                          environ, start_response)
        if image["status"] == "deactivated" and not context.is_admin:
            return _error(webob.exc.HTTPForbidden,
                          "The requested image has been deactivated. Image data download "
                          "is forbidden.", environ, start_response)
        if image["status"] != "active" or not image.get("size"):
            return self._bypass(environ, start_response)
        range_header = environ.get("HTTP_RANGE")
        if range_header and download.is_multi_range(range_header):
            return self._bypass(environ, start_response)
        if self.authorize is not None:   # before any cached byte (hit or follower)
            denial = self.authorize(environ, image)   # a webob.exc error, or None
            if denial is not None:
                return _error(type(denial), denial.explanation, environ, start_response)
        handle = self._open_hit(image)
        if handle is not None:
            return self._serve_hit(environ, start_response, image, handle, range_header, head)
        if range_header and not head and self.cluster is not None:
            return self._range_from_peer(environ, start_response, image, range_header)
        if range_header or head:
            return self._bypass(environ, start_response)
        return self._miss(environ, start_response, image)

    def _open_hit(self, image):
        """The cached file, or None; a file whose size disagrees with the record is evicted."""
        image_id = image["id"]
        try:
            handle = self.cache.open_hit(image_id)
        except OSError as err:
            LOG.warning("cannot read cached image %s: %s", image_id, err)
            return None
        if handle is None:
            return None
        size = os.fstat(handle.fileno()).st_size
        if size != image["size"]:
            handle.close()
            LOG.warning("evicting cached image %s: %d bytes on disk, %d in the record",
                        image_id, size, image["size"])
            self.cache.delete_cached_image(image_id, reason="size_mismatch")
            return None
        return handle

    def _serve_hit(self, environ, start_response, image, handle, range_header, head):
        size = image["size"]
        if range_header:
            try:
                start, length = download.parse_range(range_header, size)
            except download.RangeNotSatisfiable:
                handle.close()
                self.metrics.download("HIT", "4xx", 0)
                return _error(webob.exc.HTTPRequestRangeNotSatisfiable,
                              download.not_satisfiable_message(range_header, size),
                              environ, start_response, "HIT",
                              {"Content-Range": "bytes */%d" % size})
            status = "206 Partial Content"
            headers = download.download_headers(
                image, length, download.content_range(start, length, size))
        else:
            start, length, status = 0, size, "200 OK"
            headers = download.download_headers(image)
        start_response(status, headers + [(STATUS_HEADER, "HIT")])
        self.metrics.download("HIT", "2xx", 0 if head else length)
        if head:
            handle.close()
            return [b""]
        return download.file_body(environ, handle, start, length, size, self.chunk_size)

    def _range_from_peer(self, environ, start_response, image, range_header):
        """Cluster mode, one range that is not a hit here: its bytes from a node holding the
        image, as a hit would answer them (PEER); no holder that sends them: the origin
        (BYPASS). An unsatisfiable range is 416 from the record's size, nothing read."""
        size = image["size"]
        try:
            start, length = download.parse_range(range_header, size)
        except download.RangeNotSatisfiable:
            self.metrics.download(PEER, "4xx", 0)
            return _error(webob.exc.HTTPRequestRangeNotSatisfiable,
                          download.not_satisfiable_message(range_header, size),
                          environ, start_response, PEER,
                          {"Content-Range": "bytes */%d" % size})
        started = time.monotonic()
        read = self._holder_read(environ, image, start, start + length)
        if not read.has_holders:
            return self._bypass(environ, start_response)
        environ["eventlet.minimum_write_chunk_size"] = 0   # as in _miss: may end early
        return self._respond(environ, start_response, image, read, PEER, started,
                             "206 Partial Content", download.download_headers(
                                 image, length, download.content_range(start, length, size)))

    def _holder_read(self, environ, image, start, end):
        """A cluster_proxy.HolderRead of bytes [start, end) of ``image``; after its first
        byte, the origin's Range read goes on where its holders failed."""
        return self.cluster.proxy(
            image, start, end,
            lambda offset, stop: self._origin_from(environ, offset, "fallback", stop))

    def _miss(self, environ, start_response, image):
        """Follow a fill in progress, else start one: the origin's body goes into the cache
        at the origin's pace (a FillPump) and this client, like every other, reads the
        growing file. Not admitted: the origin's body, verified on the way (BYPASS)."""
        image_id, size = image["id"], image["size"]
        started = time.monotonic()
        # Each of these bodies may have to end early, and eventlet ends the connection only
        # once the headers are out (before, it answers 500): do not hold back small writes.
        environ["eventlet.minimum_write_chunk_size"] = 0
        follower = self._follow(environ, image)
        writer = None
        if follower is None:
            writer = self.cache.admit(image_id, size)
            if writer is None:
                follower = self._follow(environ, image)   # another request won the race
                if follower is None:   # ... and its fill committed since our hit lookup
                    handle = self._open_hit(image)
                    if handle is not None:
                        return self._serve_hit(environ, start_response, image, handle, None,
                                               False)
        if follower is not None:
            return self._respond(environ, start_response, image, follower, "COALESCED",
                                 started)
        if self.cluster is not None and writer is not None:   # a peer, or the origin once
            source = self.cluster.source(
                image, lambda offset, reason: self._origin_from(environ, offset, reason))
            return self._fill(environ, start_response, image, source, writer, started,
                              watch=source.watch)
        if self.cluster is not None:   # no room here: a holder's bytes, verified, uncached
            read = self._holder_read(environ, image, 0, size)
            if read.has_holders:
                return self._fill(environ, start_response, image, read, None, started,
                                  watch=read.watch, uncached=PEER)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            if status.startswith("200"):
                return _no_write   # sent below, once the body is wrapped
            self.metrics.download("BYPASS", metrics_mod.status_class(status), 0)
            return start_response(status, _with_status(headers, "BYPASS"), exc_info)

        try:
            body = self.app(environ, capture)
        except BaseException:
            if writer is not None:
                writer.discard("origin failed")
            raise
        self.metrics.origin_read("miss", size if captured.get("status", "")[:3] == "200" else 0)
        if not captured.get("status", "").startswith("200"):
            if writer is not None:
                writer.discard("origin answered %s" % captured.get("status"))
            return body
        return self._fill(environ, start_response, image, body, writer, started)

    def _fill(self, environ, start_response, image, body, writer, started, watch=None,
              uncached="BYPASS"):
        """Fill the cache from ``body`` at its pace and answer from the growing file
        (MISS); ``watch(tee)`` is told the fill that verifies ``body``. Without a fill
        (``writer`` None, or not verifiable): ``body`` verified on the way (``uncached``)."""
        image_id = image["id"]
        tee = self.cache.fill(image_id, body, image["size"], checksum=image.get("checksum"),
                              os_hash_algo=image.get("os_hash_algo"),
                              os_hash_value=image.get("os_hash_value"), writer=writer,
                              pumped=True)
        if watch is not None:
            watch(tee)
        if not tee.caching:
            return self._respond(environ, start_response, image, tee, uncached, started)
        try:
            follower = self.cache.start_fill(
                tee, fallback=lambda offset: self._origin_from(environ, offset))
        except OSError as err:
            LOG.warning("image %s: cannot start its fill: %s", image_id, err)
            tee.close(outcome="io")
            return self._bypass(environ, start_response)
        return self._respond(environ, start_response, image, follower, "MISS", started)

    def _respond(self, environ, start_response, image, body, cache_status, started,
                 status="200 OK", headers=None):
        """Start the response (``status``, ``headers``: default, the whole image's) once
        ``body`` gave its first chunk. A body that fails before that is closed and the origin
        answers instead; once the headers are out, a failure can only end the connection (the
        server does that when the body raises). Counted as a ``cache_status`` download, its
        first byte ``started`` + the time until now."""
        try:
            body = bodies.PrimedIterator(body)
        except fill.ImageDataMismatch as err:
            if cache_status == PEER:   # a holder's bytes, found wrong: the origin's may not be
                LOG.warning("image %s: %s; passing the request to the origin", image["id"], err)
                return self._bypass(environ, start_response)
            # Verified before the first byte and found wrong: the origin would send the same
            # bytes again, unverified. Say so instead (image_cache_verify_before_last_byte).
            LOG.error("image %s: %s; not serving it", image["id"], err)
            self.metrics.download(cache_status, "5xx", 0)
            return _error(webob.exc.HTTPBadGateway,
                          "The data of image %s does not match its checksum; it was not "
                          "served." % image["id"], environ, start_response, cache_status)
        except cluster_proxy.NoHolder as err:
            LOG.info("%s; passing the request to the origin", err)
            return self._bypass(environ, start_response)
        except Exception as err:
            LOG.warning("image %s: %s before the first byte; passing the request to the "
                        "origin", image["id"], err)
            return self._bypass(environ, start_response)
        if headers is None:
            headers = download.download_headers(image)
        start_response(status, headers + [(STATUS_HEADER, cache_status)])
        self.metrics.download(cache_status, "2xx", _content_length(headers))
        self.metrics.time_to_first_byte(cache_status, time.monotonic() - started)
        return body

    def _follow(self, environ, image):
        if not self.cache.is_being_cached(image["id"]):
            return None
        return self.cache.follow(image["id"], image["size"],
                                 fallback=lambda offset: self._origin_from(environ, offset))

    def _origin_from(self, environ, offset, reason="fallback", end=None):
        """The origin's bytes of this image from ``offset`` (a follower whose fill died, or
        a cluster fill: ``reason`` "miss") up to ``end`` (exclusive; None: the image's end),
        counted as an origin read for ``reason``."""
        sub = dict(environ)
        sub.pop("HTTP_RANGE", None)
        if end is not None:
            sub["HTTP_RANGE"] = "bytes=%d-%d" % (offset, end - 1)
        elif offset:
            sub["HTTP_RANGE"] = "bytes=%d-" % offset
        sub["REQUEST_METHOD"] = "GET"
        status = {}

        def capture(status_line, headers, exc_info=None):
            status["line"] = status_line
            self.metrics.origin_read(reason, _content_length(headers))
            return lambda data: None

        body = self.app(sub, capture)
        expected = "206" if offset or end is not None else "20"
        if not status.get("line", "").startswith(expected):
            bodies.close_body(body)
            raise IOError("origin answered %s to a range from %d" % (status.get("line"), offset))
        return body

    def _bypass(self, environ, start_response):
        def tagged(status, headers, exc_info=None):
            nbytes = (_content_length(headers) if status[:1] == "2"
                      and environ["REQUEST_METHOD"] != "HEAD" else 0)
            self.metrics.download("BYPASS", metrics_mod.status_class(status), nbytes)
            self.metrics.origin_read("bypass", nbytes)
            return start_response(status, _with_status(headers, "BYPASS"), exc_info)
        return self.app(environ, tagged)

    # -- invalidation --------------------------------------------------------------------

    def _evict_after(self, environ, start_response, image_id):
        """Pass the DELETE/deactivate on; after a 2xx drop the local copy and queue entry."""
        def evicting(status, headers, exc_info=None):
            if status.startswith("2") and ondisk.is_image_id(image_id):
                try:
                    self.cache.delete_cached_image(image_id, reason="gone")
                    self.cache.delete_queued_image(image_id)
                except OSError as err:
                    LOG.warning("could not evict image %s: %s", image_id, err)
                else:
                    LOG.info("evicted image %s after %s", image_id, environ["REQUEST_METHOD"])
            return start_response(status, headers, exc_info)
        return self.app(environ, evicting)


def _no_write(data):
    raise RuntimeError("the cache filter does not support the WSGI write() callable")


def _content_length(headers):
    """The Content-Length of ``headers`` as an int (0 when absent or malformed)."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value) if value.strip().isdigit() else 0
    return 0


def _with_status(headers, value):
    return [(k, v) for k, v in headers if k.lower() != STATUS_HEADER.lower()] + [
        (STATUS_HEADER, value)]


def _error(exc_class, explanation, environ, start_response, cache_status="BYPASS",
           headers=None):
    """``exc_class``'s error in Glance's format, as the images app answers it (api/faults.py)."""
    response = faults.error(exc_class.code, explanation, headers)
    response.headers[STATUS_HEADER] = cache_status
    return response(environ, start_response)
