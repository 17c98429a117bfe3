"""CacheFilter (middleware/cache.py) handing range hits to the server's wsgi.file_wrapper: ours
and gunicorn's send from the file position, an unknown wrapper is not used."""

import os

import pytest
import webob

from glance_cache_mw.cmd import sendfile
from tests.unit.test_middleware_cache import setup  # noqa: F401  (fixture)

DATA = os.urandom(200_000)


def cached_image(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    assert webob.Request.blank(url).get_response(setup.app_for("A")).body == DATA   # the fill
    return url


def call(app, url, environ_extra, **headers):
    """(status, headers, body iterable) of one call, the body not consumed."""
    environ = webob.Request.blank(url, headers=headers).environ
    environ.update(environ_extra)
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started.update(status=status, headers=dict(response_headers))
    body = app(environ, start_response)
    return started["status"], started["headers"], body


def test_range_hit_is_our_wrapper_on_the_file_at_the_range_start(setup):
    url = cached_image(setup)
    status, headers, body = call(setup.app_for("A"), url,
                                 {"wsgi.file_wrapper": sendfile.FileWrapper},
                                 Range="bytes=1000-50999")
    assert isinstance(body, sendfile.FileWrapper)
    assert (status, headers["X-Image-Cache"], headers["Content-Length"]) == (
        "206 Partial Content", "HIT", "50000")
    assert body.filelike.tell() == 1000
    body.limit = int(headers["Content-Length"])   # as the server does
    try:
        assert b"".join(body) == DATA[1000:51_000]
    finally:
        body.close()


def test_range_hit_with_gunicorns_wrapper_starts_at_the_range(setup):
    gunicorn_wsgi = pytest.importorskip("gunicorn.http.wsgi")
    url = cached_image(setup)
    status, headers, body = call(setup.app_for("A"), url,
                                 {"wsgi.file_wrapper": gunicorn_wsgi.FileWrapper},
                                 Range="bytes=100-199")
    try:
        assert isinstance(body, gunicorn_wsgi.FileWrapper) and status.startswith("206")
        # gunicorn sendfiles Content-Length bytes from lseek(fd, 0, SEEK_CUR)
        assert os.lseek(body.filelike.fileno(), 0, os.SEEK_CUR) == 100
        assert headers["Content-Length"] == "100"
    finally:
        body.close()


def test_range_hit_with_an_unknown_wrapper_is_read_by_the_filter(setup):
    url = cached_image(setup)
    wrapped = []

    def file_wrapper(handle, block_size):   # e.g. uWSGI's: sends the whole file from 0
        wrapped.append(handle)
        return iter(lambda: handle.read(block_size), b"")

    status, headers, body = call(setup.app_for("A"), url, {"wsgi.file_wrapper": file_wrapper},
                                 Range="bytes=-500")
    try:
        assert status.startswith("206") and wrapped == []
        assert b"".join(body) == DATA[-500:]
    finally:
        body.close()
