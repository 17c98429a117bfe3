"""CorkFileResponses: TCP_CORK on gunicorn's socket exactly while a file wrapper is sent."""

import io
import socket

import pytest

from glance_cache_mw.middleware import cork


class FileWrapper:
    """A server's wsgi.file_wrapper (gunicorn's has the same shape)."""

    def __init__(self, filelike, block_size=8192):
        self.filelike = filelike
        self.close = filelike.close


@pytest.fixture
def tcp():
    """A real connected TCP socket on 127.0.0.1 (the server side)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    yield server
    for sock in (server, client, listener):
        sock.close()


def corked(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


def call(app, environ):
    return app(environ, lambda status, headers, exc_info=None: None)


def test_a_file_wrapper_body_is_corked_until_closed(tcp):
    handle = io.BytesIO(b"image")
    app = cork.CorkFileResponses(lambda environ, start: environ["wsgi.file_wrapper"](handle))
    body = call(app, {"gunicorn.socket": tcp, "wsgi.file_wrapper": FileWrapper})
    assert isinstance(body, FileWrapper) and corked(tcp) == 1
    body.close()
    assert handle.closed and corked(tcp) == 0


@pytest.mark.parametrize("environ_extra", [
    {"wsgi.file_wrapper": FileWrapper},                       # not gunicorn
    {"gunicorn.socket": "tcp"},                               # no file wrapper offered
], ids=["other-server", "no-wrapper"])
def test_other_servers_and_bodies_pass_untouched(tcp, environ_extra):
    environ = {key: (tcp if value == "tcp" else value) for key, value in environ_extra.items()}
    app = cork.CorkFileResponses(lambda environ, start: [b"json"])
    assert call(app, environ) == [b"json"]
    assert corked(tcp) == 0


def test_a_plain_body_under_gunicorn_is_not_corked(tcp):
    app = cork.CorkFileResponses(lambda environ, start: [b"json"])
    assert call(app, {"gunicorn.socket": tcp, "wsgi.file_wrapper": FileWrapper}) == [b"json"]
    assert corked(tcp) == 0


def test_a_socket_without_tcp_cork_is_left_alone():
    left, right = socket.socketpair()    # AF_UNIX: no TCP options
    try:
        handle = io.BytesIO(b"image")
        app = cork.CorkFileResponses(lambda environ, start: environ["wsgi.file_wrapper"](handle))
        body = call(app, {"gunicorn.socket": left, "wsgi.file_wrapper": FileWrapper})
        body.close()
        assert handle.closed
    finally:
        left.close()
        right.close()
