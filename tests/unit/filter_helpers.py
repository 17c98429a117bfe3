"""A small origin images app and a configured cache filter for the filter's unit tests."""

import hashlib
import threading

import webob
import webob.dec
import webob.exc

from glance_cache_mw import context as ctx_module
from glance_cache_mw.db import api as db_api, migration
from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.middleware import download
from glance_cache_mw.middleware.cache import CacheFilter, _DOWNLOAD_RE


class OriginApp:
    """Serves image bytes from memory like the images app: 200, or 206 for one range.

    Counts full-body reads per image; ``gate`` (a threading.Event) can hold a body after its
    first chunk, so tests can line up concurrent requests.
    """

    def __init__(self, chunk_size=4096):
        self.data = {}
        self.reads = {}
        self.deleted = []
        self.chunk_size = chunk_size
        self.gate = None
        self.corrupt = set()

    @webob.dec.wsgify
    def __call__(self, req):
        if req.method == "DELETE":
            self.deleted.append(req.path_info.rsplit("/", 1)[-1])
            return webob.Response(status=204)
        if req.method == "POST":
            return webob.Response(status=204)
        match = _DOWNLOAD_RE.match(req.path_info)
        if match is None or match.group(1) not in self.data:
            return webob.exc.HTTPNotFound()
        image_id = match.group(1)
        data = self.data[image_id]
        if image_id in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        if "," in req.headers.get("Range", ""):
            return webob.exc.HTTPBadRequest(explanation="multiple ranges are not supported")
        if req.range is not None:
            start, length = download.parse_range(req.headers["Range"], len(data))
            resp = webob.Response(status=206, content_type="application/octet-stream")
            resp.app_iter = [data[start:start + length]]
            resp.headers["Content-Range"] = download.content_range(start, length, len(data))
            resp.content_length = length
            return resp
        self.reads[image_id] = self.reads.get(image_id, 0) + 1
        resp = webob.Response(content_type="application/octet-stream")
        resp.app_iter = self._chunks(data)
        resp.content_length = len(data)
        return resp

    def _chunks(self, data):
        for offset in range(0, len(data), self.chunk_size):
            yield data[offset:offset + self.chunk_size]
            if offset == 0 and self.gate is not None:
                self.gate.wait(10)


class WithContext:
    """Puts a RequestContext into the environ, like the context middleware does."""

    def __init__(self, app, context):
        self.app, self.context = app, context

    def __call__(self, environ, start_response):
        environ["glance.context"] = self.context
        return self.app(environ, start_response)


class Setup:
    """An image database, a cache directory, the origin, and helpers to add images."""

    def __init__(self, tmp_path, max_size=10 * 1024 ** 2, **cache_settings):
        """``cache_settings``: more INI settings of the cache (strings)."""
        self.engine = db_api.configure("sqlite:///%s" % (tmp_path / "images.sqlite"))
        migration.sync(self.engine)
        self.origin = OriginApp()
        self.cache = ImageCache.from_config({"image_cache_dir": str(tmp_path / "cache"),
                                             "image_cache_max_size": str(max_size),
                                             **cache_settings})
        self.filter = CacheFilter(self.origin, self.cache, db_api, chunk_size=4096)
        self.admin = ctx_module.RequestContext.admin(project_id="admin-project")
        self.lock = threading.Lock()

    def add_image(self, data, owner="A", visibility="private", status="active",
                  checksum=True, os_hash=True, **extra):
        values = {"status": status, "owner": owner, "visibility": visibility,
                  "size": len(data), **extra}
        if checksum:
            values["checksum"] = hashlib.md5(data).hexdigest()
        if os_hash:
            values.update(os_hash_algo="sha512", os_hash_value=hashlib.sha512(data).hexdigest())
        image = db_api.image_create(self.admin, values)
        self.origin.data[image["id"]] = data
        return image

    def app_for(self, project_id=None, is_admin=False):
        context = (ctx_module.RequestContext.admin(project_id=project_id) if is_admin
                   else ctx_module.RequestContext(project_id=project_id, roles=["member"]))
        return WithContext(self.filter, context)

    def close(self):
        self.cache.close()
        db_api.get_engine().dispose()
