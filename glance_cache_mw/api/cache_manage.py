"""The cache management API (admin only), with Glance 2.18's routes and response shapes.

    GET    /v2/cache                  200 {"cached_images": [...], "queued_images": [...]}
    PUT    /v2/cache/{image_id}       202 queue an active image for prefetching
    DELETE /v2/cache/{image_id}       204 drop it from the cache and the queue
    DELETE /v2/cache                  204 x-image-cache-clear-target: cache | queue | (both)
    POST   /v2/cache/prune            200 {"total_files_pruned": n, "total_bytes_pruned": n}
    POST   /v2/cache/clean            200 {"total_cleaned_files": n}
    GET    /v2/cache/nodes/{image_id} 200 [node URLs]  (centralized_db driver; else 409)

Every operation acts on this node's cache. Paste: ``[filter:cachemanage]``. The node list
keeps Glance's shape (a JSON list of the nodes that cache the image); the node filling the
image from the origin right now (a cluster's fill claim, db/fill_claims.py) is named in the
``X-Image-Cache-Filling-Node`` header.
"""

import json
import logging
import re

import webob
import webob.dec
import webob.exc

from glance_cache_mw import config as cfg
from glance_cache_mw import exception
from glance_cache_mw.api import faults
from glance_cache_mw.db import api as db_api_module
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.middleware import glance_compat

LOG = logging.getLogger(__name__)

_ROUTE_RE = re.compile(r"^/v2(?:\.\d+)?/cache(?:/(nodes/)?([^/]+))?/?$")
FILLING_NODE_HEADER = "X-Image-Cache-Filling-Node"
CLEAR_TARGETS = {"": ("cache", "queue"), "cache": ("cache",), "queue": ("queue",)}


def filter_factory(global_conf, **local_conf):
    """[filter:cachemanage] use = egg:glance_cache_mw#cachemanage"""
    # Inside Glance, unset keys come from the glance-api.conf it loaded (glance_compat).
    config = cfg.Config.from_mapping(glance_compat.merged_settings({**global_conf, **local_conf}))

    def make_filter(app):
        db_api = db_api_module.configured(config.sql_connection)
        return CacheManageFilter(app, glance_compat.shared_cache(config), db_api)
    return make_filter


class CacheManageFilter:
    """Answers /v2/cache*; passes everything else to ``app``."""

    def __init__(self, app, cache, db_api):
        self.app = app
        self.cache = cache
        self.db_api = db_api

    def __call__(self, environ, start_response):
        match = _ROUTE_RE.match(environ.get("PATH_INFO", ""))
        if match is None:
            return self.app(environ, start_response)
        response = self._dispatch(webob.Request(environ), bool(match.group(1)), match.group(2))
        if isinstance(response, webob.exc.WSGIHTTPException) and response.code >= 400:
            response = _glance_error(response, environ["REQUEST_METHOD"])
        return response(environ, start_response)

    def _dispatch(self, req, nodes, target):
        if req.method == "PUT" and not nodes and glance_compat.running_in_glance():
            # Glance's own PUT /v2/cache/{id} queues and prefetches through Glance's stores
            # (its policy, its cache worker) into this same cache.
            return self.app
        context = glance_compat.request_context(req.environ)   # ours, or Glance's req.context
        if context is None or not context.is_admin:
            return webob.exc.HTTPForbidden(explanation="Cache management is for admins only.")
        if nodes:
            routes = {"GET": self.get_cached_nodes}
        elif target is None:
            routes = {"GET": self.list_cache, "DELETE": self.clear_cache}
        elif target in ("prune", "clean"):
            routes = {"POST": self.prune if target == "prune" else self.clean}
            target = None
        else:
            routes = {"PUT": self.queue_image, "DELETE": self.delete_entry}
        handler = routes.get(req.method)
        if handler is None:
            return webob.exc.HTTPMethodNotAllowed(headers=[("Allow", ", ".join(sorted(routes)))])
        if target is not None and not ondisk.is_image_id(target):
            return webob.exc.HTTPNotFound(explanation="No image found with ID %s" % target)
        try:
            return handler(req, context, target) if target is not None else handler(req, context)
        except webob.exc.HTTPException as err:
            return err

    # -- handlers ------------------------------------------------------------------------

    def list_cache(self, req, context):
        if req.body:
            raise webob.exc.HTTPBadRequest(explanation="This request takes no body.")
        return _json({"cached_images": self.cache.get_cached_images(),
                      "queued_images": self.cache.get_queued_images()})

    def queue_image(self, req, context, image_id):
        image = self._image(context, image_id)
        if image["status"] != "active":
            raise webob.exc.HTTPBadRequest(
                explanation="Only active images can be cached; image %s is %s."
                % (image_id, image["status"]))
        if self.cache.queue_image(image_id):
            LOG.info("queued image %s for prefetching", image_id)
        return webob.Response(status=202)

    def delete_entry(self, req, context, image_id):
        known = self.cache.is_cached(image_id) or self.cache.is_queued(image_id)
        if not known:
            self._image(context, image_id)   # 404 unless the image exists at all
        self.cache.delete_cached_image(image_id)
        self.cache.delete_queued_image(image_id)
        return webob.Response(status=204)

    def clear_cache(self, req, context):
        target = req.headers.get("x-image-cache-clear-target", "").strip().lower()
        if target not in CLEAR_TARGETS:
            raise webob.exc.HTTPBadRequest(
                explanation="x-image-cache-clear-target must be 'cache' or 'queue' (or absent "
                            "for both), not %r." % target)
        if "cache" in CLEAR_TARGETS[target]:
            LOG.info("cleared %d cached images", self.cache.delete_all_cached_images())
        if "queue" in CLEAR_TARGETS[target]:
            LOG.info("cleared %d queued images", self.cache.delete_all_queued_images())
        return webob.Response(status=204)

    def prune(self, req, context):
        files, size = self.cache.prune()
        return _json({"total_files_pruned": files, "total_bytes_pruned": size})

    def clean(self, req, context):
        return _json({"total_cleaned_files": self.cache.clean()})

    def get_cached_nodes(self, req, context, image_id):
        try:
            nodes = self.cache.get_cached_nodes(image_id)
        except NotImplementedError:
            raise webob.exc.HTTPConflict(
                explanation="Listing the nodes that cache an image needs the centralized_db "
                            "cache driver.") from None
        self._image(context, image_id)
        response = _json(nodes)
        filler = self.cache.get_filling_node(image_id)
        if filler is not None:
            response.headers[FILLING_NODE_HEADER] = filler
        return response

    def _image(self, context, image_id):
        try:
            return self.db_api.image_get(context, image_id)
        except (exception.NotFound, exception.Forbidden):
            raise webob.exc.HTTPNotFound(
                explanation="No image found with ID %s" % image_id) from None


def _json(payload, status=200):
    return webob.Response(status=status, content_type="application/json", charset="utf-8",
                          body=json.dumps(payload).encode("utf-8"))


def _glance_error(err, method):
    """A webob.exc error raised here, in the images app's format (api/faults.py)."""
    message = err.explanation
    if err.code == 405:
        message = "The method %s is not allowed for this resource." % method
    headers = {name: value for name, value in err.headers.items()
               if name.lower() not in ("content-type", "content-length")}
    return faults.error(err.code, message, headers)
