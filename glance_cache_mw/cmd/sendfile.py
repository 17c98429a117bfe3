"""sendfile for the built-in eventlet server: its ``wsgi.file_wrapper`` and the protocol using it.

eventlet.wsgi offers no ``wsgi.file_wrapper``, so a cache hit would be read into Python 64 KiB
at a time and written through the green socket (two copies of every byte). With
``eventlet.wsgi.server(..., protocol=SendfileProtocol)`` every environ has
``wsgi.file_wrapper = FileWrapper``; when the application returns a FileWrapper for a response
with a Content-Length, eventlet itself sends the status line and headers (the ``write`` its
start_response returned, called with no data, as eventlet does for an empty body), then the
body goes from the file to the socket with ``os.sendfile``: from the file's current position,
Content-Length bytes (none for HEAD, 1xx, 204, 304), waiting on the hub while the socket is
full. So a Range hit can seek the file to its start and use the wrapper too.

Anything else takes eventlet's own path unchanged: another body, and a FileWrapper without a
Content-Length, without a regular file descriptor or on a socket that is not a GreenSocket
(TLS), which is then read in ``blksize`` chunks, never past Content-Length.

Follows eventlet 0.41's ``HttpProtocol``: ``get_environ()`` builds the environ,
``handle_one_request()`` sets ``self.application`` to the server's app before each
``handle_one_response()``, which iterates the body, calls its close() and closes the connection
afterwards when ``close_connection`` is set.
"""

import contextlib
import errno
import functools
import logging
import os
import socket
import stat
import warnings

with warnings.catch_warnings():
    # eventlet warns on import that it is in maintenance mode; it is our chosen server.
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet.greenio
    import eventlet.hubs
    import eventlet.wsgi

from glance_cache_mw import bodies

LOG = logging.getLogger(__name__)

# The client is gone: what eventlet.wsgi treats as a broken connection.
BROKEN_SOCK = {errno.EPIPE, errno.ECONNRESET, errno.ESHUTDOWN}
# Linux sends at most 0x7ffff000 bytes per sendfile() call.
MAX_SENDFILE_BYTES = 0x7FFFF000


class FileWrapper:
    """``wsgi.file_wrapper`` of the built-in server (PEP 3333); owns ``filelike``.

    The server sends it with sendfile when it can; iterating it reads ``blksize`` chunks, at
    most ``limit`` bytes when the server set one. ``sent`` counts the body bytes handed to the
    client; callbacks added with :meth:`add_close_callback` run at close().
    """

    # The server sends from the file's current position and no more than Content-Length,
    # so an application may seek the file to the start of a range (middleware/cache.py).
    sends_from_position = True

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        self.limit = None
        self.sent = 0
        self._close_callbacks = []

    def __iter__(self):
        return self

    def __next__(self):
        size = self.blksize if self.limit is None else min(self.blksize, self.limit - self.sent)
        data = self.filelike.read(size) if size > 0 else b""
        if not data:
            raise StopIteration
        self.sent += len(data)
        return data

    def add_close_callback(self, callback):
        """Call ``callback(self)`` when the body is closed (client done or gone)."""
        self._close_callbacks.append(callback)

    def close(self):
        try:
            bodies.close_body(self.filelike)   # PEP 3333: close() must reach the file
        finally:
            callbacks, self._close_callbacks = self._close_callbacks, []
            for callback in callbacks:
                callback(self)


def send_file(out_fd, in_fd, offset, count, wait_writable):
    """Send ``count`` bytes of ``in_fd`` from ``offset`` to the non-blocking ``out_fd`` with
    os.sendfile, calling ``wait_writable()`` while it is full; yield the bytes of every call.

    Stops early if the file ends; OSError (client gone, timeout) propagates.
    """
    end = offset + count
    while offset < end:
        try:
            sent = os.sendfile(out_fd, in_fd, offset, min(end - offset, MAX_SENDFILE_BYTES))
        except BlockingIOError:
            wait_writable()
            continue
        if sent == 0:
            return
        offset += sent
        yield sent


class SendfileProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP protocol with ``wsgi.file_wrapper``, sent with sendfile."""

    def get_environ(self):
        environ = super().get_environ()
        environ["wsgi.file_wrapper"] = FileWrapper
        return environ

    def handle_one_response(self):
        self.application = functools.partial(self._call_application, self.application)
        super().handle_one_response()

    def _call_application(self, app, environ, start_response):
        response = _StartedResponse(start_response)
        body = app(environ, response.start_response)
        if not isinstance(body, FileWrapper) or response.status is None:
            return body
        length = response.content_length() if response.has_body(self.command) else 0
        body.limit = length                  # eventlet's own path must not send more either
        if not length or not self._can_sendfile(body):
            return body                      # eventlet's path (headers only when length is 0)
        return _SendfileBody(self, body, length, response.write)

    def _can_sendfile(self, wrapper):
        if not isinstance(self.connection, eventlet.greenio.GreenSocket):
            return False                     # TLS: the bytes must go through the SSL object
        try:
            return stat.S_ISREG(os.fstat(wrapper.filelike.fileno()).st_mode)
        except (AttributeError, OSError, ValueError):
            return False


class _StartedResponse:
    """The status and headers the application started, and eventlet's write() for them."""

    def __init__(self, start_response):
        self._start_response = start_response
        self.status = None
        self.headers = []
        self.write = None

    def start_response(self, status, headers, exc_info=None):
        self.write = self._start_response(status, headers, exc_info)
        self.status, self.headers = status, headers
        return self.write

    def content_length(self):
        """The Content-Length the application set, or None (absent or not a number)."""
        for name, value in self.headers:
            if name.lower() == "content-length":
                try:
                    return max(int(value), 0)
                except ValueError:
                    return None
        return None

    def has_body(self, method):
        """RFC 9110: no body for HEAD, 1xx, 204 and 304 (eventlet's ``bodyless``)."""
        code = int(self.status.split(None, 1)[0])
        return not (method == "HEAD" or code in (204, 304) or 100 <= code < 200)


class _SendfileBody:
    """What eventlet iterates instead of the FileWrapper: the first next() sends everything.

    If the client goes away or the file is short, the connection is closed after this
    response (a client cannot tell where a short body ends). close() reaches the FileWrapper.
    """

    def __init__(self, protocol, wrapper, length, write):
        self._protocol = protocol
        self._wrapper = wrapper
        self._length = length
        self._write = write
        self._done = False

    def __iter__(self):
        return self

    def __next__(self):
        if not self._done:
            self._done = True
            if not self._send():
                self._protocol.close_connection = 1
        raise StopIteration

    def close(self):
        self._wrapper.close()

    def _send(self):
        """Headers, then the body; False if the response could not be sent whole."""
        connection = self._protocol.connection
        with _corked(connection):            # headers and body in full packets
            try:
                self._write(b"")             # status line and headers, as eventlet sends them
                self._send_body(connection)
            except eventlet.hubs.IOClosed:   # closed by another greenthread
                return self._gone()
            except OSError as err:
                if err.errno not in BROKEN_SOCK:
                    raise
                return self._gone()
        if self._wrapper.sent < self._length:
            LOG.warning("%s ended %d bytes early", getattr(self._wrapper.filelike, "name", "?"),
                        self._length - self._wrapper.sent)
            return False
        LOG.debug("sent %d bytes with sendfile", self._wrapper.sent)
        return True

    def _send_body(self, connection):
        sock_fd = connection.fileno()
        file_fd = self._wrapper.filelike.fileno()
        wait = functools.partial(eventlet.hubs.trampoline, sock_fd, write=True,
                                 timeout=connection.gettimeout(),
                                 timeout_exc=socket.timeout("timed out"))
        offset = os.lseek(file_fd, 0, os.SEEK_CUR)
        for sent in send_file(sock_fd, file_fd, offset, self._length, wait):
            self._wrapper.sent += sent

    def _gone(self):
        LOG.debug("client %s went away after %d of %d bytes", self._protocol.client_address,
                  self._wrapper.sent, self._length)
        return False


@contextlib.contextmanager
def _corked(sock):
    """TCP_CORK while headers and body are written (nginx's tcp_nopush), where available."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        corked = True
    except (AttributeError, OSError):     # not Linux, or not TCP
        corked = False
    try:
        yield
    finally:
        if corked:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)   # sends what is held
