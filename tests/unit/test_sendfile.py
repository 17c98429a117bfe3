"""The built-in server's wsgi.file_wrapper: FileWrapper, the sendfile loop, and CacheFilter
handing range hits to wrappers that send from the file position."""

import fcntl
import io
import os

import pytest
import webob

from glance_cache_mw.cmd import sendfile
from tests.unit.filter_helpers import Setup

DATA = os.urandom(200_000)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(DATA)
    return path


# --- FileWrapper ---------------------------------------------------------------------------

def test_file_wrapper_iterates_from_the_position_up_to_its_limit(data_file):
    handle = open(data_file, "rb")
    handle.seek(1000)
    wrapper = sendfile.FileWrapper(handle, 4096)
    wrapper.limit = 10_000
    assert b"".join(wrapper) == DATA[1000:11_000]
    assert wrapper.sent == 10_000
    wrapper.close()
    assert handle.closed


def test_file_wrapper_without_limit_reads_to_the_end():
    wrapper = sendfile.FileWrapper(io.BytesIO(DATA), 65536)
    assert b"".join(wrapper) == DATA and wrapper.sent == len(DATA)


def test_close_callbacks_run_once_even_if_the_file_fails_to_close():
    class BadFile:
        def close(self):
            raise OSError("EIO")

    wrapper = sendfile.FileWrapper(BadFile())
    calls = []
    wrapper.add_close_callback(calls.append)
    for _ in range(2):
        with pytest.raises(OSError):
            wrapper.close()
    assert calls == [wrapper]


# --- send_file ------------------------------------------------------------------------------

def test_send_file_waits_while_the_output_is_full_and_sends_every_byte(data_file):
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    received, waits = [], []

    def drain():                  # the pipe holds 64 KiB: the "client" reads when it is full
        waits.append(1)
        received.append(os.read(read_end, 1 << 20))

    try:
        with open(data_file, "rb") as handle:
            chunks = list(sendfile.send_file(write_end, handle.fileno(), 5000, 150_000, drain))
            assert handle.tell() == 0        # sendfile with an offset leaves the position
        os.close(write_end)
        write_end = None
        while True:
            rest = os.read(read_end, 1 << 20)
            if not rest:
                break
            received.append(rest)
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
    assert sum(chunks) == 150_000 and len(chunks) > 1 and waits
    assert b"".join(received) == DATA[5000:155_000]


def test_send_file_stops_where_the_file_ends(data_file, tmp_path):
    out = tmp_path / "out"
    with open(data_file, "rb") as handle, open(out, "wb") as target:
        chunks = list(sendfile.send_file(target.fileno(), handle.fileno(), len(DATA) - 10,
                                         100, lambda: None))
    assert sum(chunks) == 10 and out.read_bytes() == DATA[-10:]


# --- CacheFilter._serve_hit with a wrapper -------------------------------------------------------

@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    s.close()


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
