"""AccessLog (middleware/access_log.py): the built-in server's file wrapper passes through it
untouched (sendfile) and is logged at close(); other bodies are counted."""

import logging
import os

import pytest
import webob

from glance_cache_mw.cmd import sendfile
from glance_cache_mw.middleware import access_log as access_log_mod

class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log():
    log = logging.getLogger("tests.access")
    handler = ListHandler()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield log, handler.lines
    log.removeHandler(handler)


def test_access_log_passes_the_servers_file_wrapper_through(access_log, tmp_path):
    log, lines = access_log
    data_file = tmp_path / "image"
    data_file.write_bytes(os.urandom(1000))

    def app(environ, start_response):
        start_response("206 Partial Content", [("Content-Length", "100"),
                                               ("X-Image-Cache", "HIT")])
        return environ["wsgi.file_wrapper"](open(data_file, "rb"), 4096)

    environ = webob.Request.blank("/v2/images/x/file").environ
    environ["wsgi.file_wrapper"] = sendfile.FileWrapper
    body = access_log_mod.AccessLog(app, log)(environ, lambda status, headers, exc_info=None: None)
    assert type(body) is sendfile.FileWrapper     # what the server must see to sendfile
    assert lines == []
    body.sent = 100                               # as the server does after sendfile
    body.close()
    assert body.filelike.closed
    assert len(lines) == 1 and '"GET /v2/images/x/file" 206 100 ' in lines[0]
    assert lines[0].endswith("cache=HIT")


def test_access_log_still_counts_other_bodies(access_log):
    log, lines = access_log

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "6")])
        return [b"abc", b"def"]

    environ = webob.Request.blank("/x").environ
    body = access_log_mod.AccessLog(app, log)(environ, lambda status, headers, exc_info=None: None)
    assert not isinstance(body, sendfile.FileWrapper)
    assert b"".join(body) == b"abcdef"
    body.close()
    assert '"GET /x" 200 6 ' in lines[0] and lines[0].endswith("cache=-")
