"""The images app: Paste ``app_factory`` and the URL → handler table (its settings, the
quotas and page limits, are config.SETTINGS entries).

Routing is a list of (method, regex) pairs; ``/v2.N/...`` is served as ``/v2/...``. Every
handler gets ``(req, context, **url_groups)``. Client mistakes come back with Glance's status
codes and error bodies (api/faults.py); an unexpected exception is logged and answered 500
without a traceback.
"""

import logging
import re

import webob
import webob.dec

from glance_cache_mw import config as gcm_config, store as file_store
from glance_cache_mw.api import (common, image_data, images, members, schemas, tags,
                                 versions)
from glance_cache_mw.db import api as db_api_module

LOG = logging.getLogger(__name__)

_VERSION_PREFIX = re.compile(r"\A/v2\.\d+(?=/)")
_ID = r"(?P<image_id>[^/]+)"


class ImagesApp:
    """WSGI app for the v2 images API subset, the versions document and the schemas."""

    def __init__(self, db_api, store, settings=None):
        """``settings``: a config.Config (its images app keys: quotas, page limits,
        admin_without_context); None means the defaults."""
        self.db_api = db_api
        self.store = store
        self.settings = settings or gcm_config.Config.from_mapping({})
        args = (db_api, store, self.settings)
        image_ctl = images.ImagesController(*args)
        data_ctl = image_data.ImageDataController(*args)
        member_ctl = members.MembersController(*args)
        tag_ctl = tags.TagsController(*args)
        member = _ID + r"/members/(?P<member_id>[^/]+)"
        table = [
            ("GET", r"/", versions.root, False),
            ("GET", r"/versions", versions.index, False),
            ("GET", r"/v2/schemas/(?P<name>[^/]+)", schemas.show, True),
            ("GET", r"/v2/images", image_ctl.index, True),
            ("POST", r"/v2/images", image_ctl.create, True),
            ("GET", r"/v2/images/" + _ID, image_ctl.show, True),
            ("PATCH", r"/v2/images/" + _ID, image_ctl.update, True),
            ("DELETE", r"/v2/images/" + _ID, image_ctl.delete, True),
            ("POST", r"/v2/images/" + _ID + r"/actions/deactivate", image_ctl.deactivate, True),
            ("POST", r"/v2/images/" + _ID + r"/actions/reactivate", image_ctl.reactivate, True),
            ("GET", r"/v2/images/" + _ID + r"/file", data_ctl.download, True),
            ("PUT", r"/v2/images/" + _ID + r"/file", data_ctl.upload, True),
            ("GET", r"/v2/images/" + _ID + r"/members", member_ctl.index, True),
            ("POST", r"/v2/images/" + _ID + r"/members", member_ctl.create, True),
            ("GET", r"/v2/images/" + member, member_ctl.show, True),
            ("PUT", r"/v2/images/" + member, member_ctl.update, True),
            ("DELETE", r"/v2/images/" + member, member_ctl.delete, True),
            ("PUT", r"/v2/images/" + _ID + r"/tags/(?P<tag>[^/]+)", tag_ctl.update, True),
            ("DELETE", r"/v2/images/" + _ID + r"/tags/(?P<tag>[^/]+)", tag_ctl.delete, True),
        ]
        self.routes = [(method, re.compile(r"\A" + pattern + r"\Z"), handler, needs_context)
                       for method, pattern, handler, needs_context in table]

    def match(self, method, path):
        """(handler, groups, needs_context), or raise 404/405."""
        path = _VERSION_PREFIX.sub("/v2", path)
        allowed = []
        for route_method, regex, handler, needs_context in self.routes:
            found = regex.match(path)
            if found is None:
                continue
            if route_method == method or (route_method == "GET" and method == "HEAD"):
                return handler, _decode(found.groupdict()), needs_context
            allowed.append(route_method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise common.HTTPError(405, "The method %s is not allowed for this resource."
                                   % method, {"Allow": ", ".join(sorted(set(allowed)))})
        raise common.HTTPError(404, "The resource could not be found.")

    @webob.dec.wsgify
    def __call__(self, req):
        # The raw PEP 3333 value: WebOb's path_info would fail on bytes that are not UTF-8.
        path = req.environ.get("PATH_INFO", "")
        try:
            handler, groups, needs_context = self.match(req.method, path)
            _check_query(req)
            context = None
            if needs_context:
                context = common.get_context(req, self.settings.admin_without_context)
            return handler(req, context, **groups)
        except Exception as err:  # noqa: BLE001 (every error becomes a response)
            http_error = common.error_for_exception(err)
            if http_error is not None:
                if http_error.status >= 500:
                    LOG.error("%s %r: %s", req.method, path, http_error.message)
                else:
                    LOG.debug("%s %r: %d %s", req.method, path, http_error.status,
                              http_error.message)
                return http_error.response()
            LOG.exception("unexpected error serving %s %r", req.method, path)
            return common.error_response(500, "The server has either erred or is incapable of "
                                              "performing the requested operation.")


def _check_query(req):
    """Parse the query string now, so that bad UTF-8 in it is a 400 and not a crash later."""
    try:
        req.GET.items()
    except UnicodeDecodeError:
        raise common.HTTPError(400, "The query string is not valid UTF-8.") from None


def _decode(groups):
    """PEP 3333 hands PATH_INFO over as latin-1 text; URL parts are UTF-8."""
    try:
        return {key: value.encode("latin-1").decode("utf-8") for key, value in groups.items()}
    except UnicodeError:
        raise common.HTTPError(400, "The URL is not valid UTF-8.") from None


def app_factory(global_conf, **local_conf):
    """[app:images] use = egg:glance_cache_mw#images

    Settings come from ``{**global_conf, **local_conf}`` (see config.py): ``sql_connection``,
    ``filesystem_store_datadir``, ``chunk_size`` and the images app's limits.
    """
    config = gcm_config.Config.from_mapping({**global_conf, **local_conf})
    db_api = db_api_module.configured(config.sql_connection)
    store = file_store.FileStore.from_config(config)
    LOG.info("images app: store %s", store.datadir)
    return ImagesApp(db_api, store, config)
