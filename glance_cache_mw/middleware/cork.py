"""TCP_CORK around a sendfile response under gunicorn: headers and body in full segments.

gunicorn sends a ``wsgi.file_wrapper`` body with ``socket.sendfile()`` after writing the
headers with their own ``sendall()``, on a socket without TCP_CORK: the headers leave as a
segment of their own and the body in segments cut wherever sendfile's calls end. nginx corks
for this (``tcp_nopush``), and so does the built-in server (cmd/sendfile.py). gunicorn gives
the application its client socket as ``environ['gunicorn.socket']``, so ``CorkFileResponses``
corks it when the response body is the server's file wrapper, and the body's ``close()``
(which gunicorn always calls after sending it) uncorks it, which sends what is held. Every
other response, and every other server, passes untouched.
"""

import contextlib
import logging
import socket

LOG = logging.getLogger(__name__)

SOCKET_KEY = "gunicorn.socket"


class CorkFileResponses:
    """WSGI wrapper; see the module docstring."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        sock = environ.get(SOCKET_KEY)
        wrapper = environ.get("wsgi.file_wrapper")
        if sock is None or not isinstance(wrapper, type) or not isinstance(body, wrapper):
            return body
        if not _set_cork(sock, 1):
            return body
        # The body's own close() (gunicorn's wrapper has one only when its file has), kept
        # before the attribute is replaced below: PEP 3333, close() must reach the file.
        close = getattr(body, "close", _no_close)

        def close_and_uncork():
            try:
                close()
            finally:
                _set_cork(sock, 0)
        body.close = close_and_uncork
        return body


def _no_close():
    pass


def _set_cork(sock, value):
    """True when the socket took the option (Linux TCP sockets do)."""
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, value)
        return True
    return False
