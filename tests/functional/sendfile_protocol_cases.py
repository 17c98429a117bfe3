"""cmd/sendfile.SendfileProtocol: eventlet.wsgi.server on 127.0.0.1:0 in a greenthread, tiny
WSGI apps, a raw green-socket client (no monkey-patching needed).

Run in a pytest process of their own by test_cmd_sendfile_protocol.py, because importing
eventlet.wsgi changes the process for every later test: eventlet's patcher.inject imports green
copies of http.server (and http.client, when it was not imported yet) and leaves the ``http``
package's attributes pointing at them, monkey-patching or not. In the suite's process, the
cluster tests' HTTP stub (tests/unit/peer_stub.py, which reached ``http.server.X``) then
started its handlers as green threads that never ran: requests accepted, never answered. The
stub now imports its classes from sys.modules; keeping eventlet.wsgi out of the suite's process
keeps any other ``http.*`` user safe too.
"""

import io
import logging
import os
import warnings

import pytest

from glance_cache_mw.cmd import sendfile
from glance_cache_mw.middleware.access_log import AccessLog

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet
    import eventlet.wsgi

SIZE = 8 * 1024 * 1024      # more than loopback's largest send buffer (4 MiB): several calls
DATA = os.urandom(SIZE)
SENDFILE_LOG = "glance_cache_mw.cmd.sendfile"
GET = b"GET /f HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture
def data_path(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def serve():
    """serve(app) -> address of an eventlet.wsgi server with SendfileProtocol."""
    running = []

    def start(app):
        sock = eventlet.listen(("127.0.0.1", 0))
        thread = eventlet.spawn(eventlet.wsgi.server, sock, app, log=logging.getLogger(
            "tests.sendfile.server"), log_output=False, debug=False, socket_timeout=10,
            protocol=sendfile.SendfileProtocol)
        running.append((thread, sock))
        return sock.getsockname()

    yield start
    for thread, sock in running:
        thread.kill()
        sock.close()


def fetch(address, request=GET, timeout_s=10):
    """(head, body) of the raw response, read until the server closes the connection."""
    conn = eventlet.connect(address)
    conn.settimeout(timeout_s)
    chunks = []
    try:
        conn.sendall(request)
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
    finally:
        conn.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


class FileApp:
    """Returns ``wsgi.file_wrapper`` on the file seeked to ``offset``; keeps what it opened."""

    def __init__(self, path, offset=0, length=None, status="200 OK", opener=None):
        self.path, self.offset, self.length, self.status = path, offset, length, status
        self.opener = opener or (lambda path: open(path, "rb"))
        self.opened = []
        self.wrappers = []

    def __call__(self, environ, start_response):
        self.wrappers.append(environ.get("wsgi.file_wrapper"))
        headers = [("Content-Type", "application/octet-stream")]
        if self.length is not None:
            headers.append(("Content-Length", str(self.length)))
        start_response(self.status, headers)
        handle = self.opener(self.path)
        handle.seek(self.offset)
        self.opened.append(handle)
        return environ["wsgi.file_wrapper"](handle, 65536)


def test_the_environ_offers_the_file_wrapper(serve, data_path):
    app = FileApp(data_path, length=SIZE)
    fetch(serve(app))
    assert app.wrappers == [sendfile.FileWrapper]


def test_body_is_sent_with_sendfile_from_the_file_position(serve, data_path, caplog):
    caplog.set_level(logging.DEBUG, logger=SENDFILE_LOG)
    caplog.set_level(logging.DEBUG, logger="tests.access")
    app = FileApp(data_path, offset=12345, length=SIZE - 20000)
    head, body = fetch(serve(AccessLog(app, logging.getLogger("tests.access"))))
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: %d" % (SIZE - 20000) in head
    assert body == DATA[12345:SIZE - 20000 + 12345]
    assert "sent %d bytes with sendfile" % (SIZE - 20000) in caplog.text
    assert '"GET /f" 200 %d ' % (SIZE - 20000) in caplog.text    # the access log's bytes
    assert all(handle.closed for handle in app.opened)


@pytest.mark.parametrize("method, status", [("HEAD", "200 OK"), ("GET", "204 No Content"),
                                            ("GET", "304 Not Modified")])
def test_no_body_for_head_204_and_304(serve, data_path, method, status, caplog):
    caplog.set_level(logging.DEBUG, logger=SENDFILE_LOG)
    app = FileApp(data_path, length=SIZE, status=status)
    request = b"%s /f HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % method.encode()
    head, body = fetch(serve(app), request)
    assert head.startswith("HTTP/1.1 " + status) and body == b""
    assert "with sendfile" not in caplog.text
    assert all(handle.closed for handle in app.opened)


def test_without_content_length_eventlet_sends_it_chunked(serve, data_path, caplog):
    caplog.set_level(logging.DEBUG, logger=SENDFILE_LOG)
    app = FileApp(data_path, offset=SIZE - 100_000)
    head, body = fetch(serve(app))
    assert "Transfer-Encoding: chunked" in head
    assert dechunk(body) == DATA[SIZE - 100_000:]
    assert "with sendfile" not in caplog.text
    assert all(handle.closed for handle in app.opened)


def test_a_file_without_descriptor_is_read_but_never_past_content_length(serve, data_path):
    app = FileApp(data_path, offset=1000, length=5000,
                  opener=lambda path: io.BytesIO(path.read_bytes()))
    head, body = fetch(serve(app))
    assert "Content-Length: 5000" in head and body == DATA[1000:6000]
    assert all(handle.closed for handle in app.opened)


def test_a_short_file_closes_the_connection(serve, data_path, caplog):
    app = FileApp(data_path, offset=SIZE - 1000, length=3000)
    keep_alive = b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n"
    head, body = fetch(serve(app), keep_alive)    # times out if the server keeps it open
    assert "Content-Length: 3000" in head and body == DATA[-1000:]
    assert "ended 2000 bytes early" in caplog.text
    assert all(handle.closed for handle in app.opened)


def test_other_bodies_take_eventlets_path(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "6")])
        return [b"abc", b"def"]

    head, body = fetch(serve(app))
    assert head.startswith("HTTP/1.1 200 OK") and body == b"abcdef"


def dechunk(body):
    out = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[:size])
        body = body[size + 2:]
