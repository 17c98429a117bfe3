"""``healthcheck`` filter: answer ``GET|HEAD /healthcheck`` with 200 "OK", pass everything else.

It sits first in every pipeline, in front of authentication, so that load balancers can probe a
node without credentials. Like oslo.middleware's healthcheck, it can take a node out of rotation
without stopping it: while the file named by ``disable_by_file_path`` exists, the answer is
503 "DISABLED BY FILE" (in-flight and new image downloads keep being served).

    [filter:healthcheck]
    use = egg:glance_cache_mw#healthcheck
    # path = /healthcheck
    # disable_by_file_path = /var/run/glance-cache-mw/disabled
"""

import logging
import os

import webob

LOG = logging.getLogger(__name__)

DEFAULT_PATH = "/healthcheck"


class HealthCheck:
    """WSGI filter that owns one URL path and forwards all other requests to ``app``."""

    def __init__(self, app, path=DEFAULT_PATH, disable_by_file_path=None):
        if not path.startswith("/"):
            path = "/" + path
        self.app = app
        self.path = path.rstrip("/") or "/"
        self.disable_by_file_path = disable_by_file_path or None

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "") != self.path:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            response = webob.Response(status=405, content_type="text/plain", charset="utf-8",
                                      body=b"Method Not Allowed")
            response.allow = ("GET", "HEAD")
        elif self.is_disabled():
            LOG.debug("health check: disabled by %s", self.disable_by_file_path)
            response = webob.Response(status=503, content_type="text/plain", charset="utf-8",
                                      body=b"DISABLED BY FILE")
        else:
            response = webob.Response(status=200, content_type="text/plain", charset="utf-8",
                                      body=b"OK")
        response.cache_control = "no-store"
        return response(environ, start_response)

    def is_disabled(self):
        """True while the operator's "disable" file exists."""
        return bool(self.disable_by_file_path) and os.path.exists(self.disable_by_file_path)


def filter_factory(global_conf, **local_conf):
    """Paste filter factory: ``[filter:healthcheck] use = egg:glance_cache_mw#healthcheck``."""
    path = local_conf.get("path") or DEFAULT_PATH
    disable_by_file_path = (local_conf.get("disable_by_file_path") or "").strip() or None

    def make_filter(app):
        return HealthCheck(app, path=path, disable_by_file_path=disable_by_file_path)
    return make_filter
