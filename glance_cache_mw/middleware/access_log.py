"""AccessLog: one line per request of the built-in server, and the last stop for its errors.

``glance-cache-mw-api`` (cmd/api.py) wraps its whole pipeline in it: each response is logged
on the ``glance_cache_mw.access`` logger when its body is done, with the ``X-Image-Cache``
status (HIT, MISS, ...) when the response has one. gunicorn and uWSGI serve
glance_cache_mw.wsgi, which has no AccessLog: they log requests and unhandled errors
themselves.
"""

import logging
import sys
import time
import urllib.parse

from glance_cache_mw import bodies
from glance_cache_mw.api import faults

LOG = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("glance_cache_mw.access")


class AccessLog:
    """WSGI wrapper: one line per request on ``glance_cache_mw.access``, when its body is done.

    A body is wrapped to count its bytes, except one that counts them itself and calls back
    at close() (``add_close_callback(callback)``, then ``sent``): the built-in server's
    ``wsgi.file_wrapper``, which must reach the server as it is (else no sendfile).

    It is also where an error nothing else handled ends: logged with its traceback (eventlet's
    own error log is off, it would go nowhere) and, while nothing was sent yet, answered with a
    500 that gives a reason and no traceback.
    """

    def __init__(self, app, log=ACCESS_LOG):
        self.app = app
        self.log = log

    def __call__(self, environ, start_response):
        record = _Record(environ, self.log)

        def start_and_record(status, headers, exc_info=None):
            record.status = status.split(None, 1)[0]
            record.cache = next((value for name, value in headers
                                 if name.lower() == "x-image-cache"), None)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_and_record)
        except Exception:
            LOG.exception("unhandled error in %s %s", record.method, record.target)
            return _internal_error(environ, start_and_record, record)
        except BaseException:
            record.status = record.status or "500"
            record.emit()
            raise
        # The built-in server's file wrapper (cmd/sendfile.py) counts what it sends and calls
        # back at close(): it must reach the server as it is, else no sendfile.
        add_close_callback = getattr(body, "add_close_callback", None)
        if add_close_callback is not None:
            add_close_callback(record.emit_file)
            return body
        return _LoggedBody(body, record)


def _internal_error(environ, start_response, record):
    """A 500 with a reason (in the format the client accepts, like every other error)."""
    response = faults.error(
        500, "The server could not complete the request; its log has the details.")
    body = response(environ, lambda status, headers: start_response(status, headers,
                                                                    sys.exc_info()))
    return _LoggedBody(body, record)


class _Record:
    """What the access log line says about one request."""

    def __init__(self, environ, log):
        self.log = log
        self.started = time.monotonic()
        self.client = environ.get("REMOTE_ADDR", "-")
        self.method = environ.get("REQUEST_METHOD", "-")
        path = environ.get("RAW_PATH_INFO") or urllib.parse.quote(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING")
        self.target = path + ("?" + query if query else "")
        self.status = None
        self.cache = None
        self.sent = 0
        self.done = False

    def emit(self):
        if self.done:
            return
        self.done = True
        self.log.info('%s "%s %s" %s %d %.3fs cache=%s', self.client, self.method,
                      self.target, self.status or "-", self.sent,
                      time.monotonic() - self.started, self.cache or "-")

    def emit_file(self, wrapper):
        """emit() for a body that was the server's file wrapper, with the bytes it sent."""
        self.sent = wrapper.sent
        self.emit()


class _LoggedBody:
    """Counts the body's bytes; close() reaches the wrapped body, then writes the log line."""

    def __init__(self, body, record):
        self._body = body
        self._chunks = iter(body)
        self._record = record

    def __iter__(self):
        return self

    def __next__(self):
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise
        except Exception:
            LOG.exception("unhandled error in the body of %s %s after %d bytes",
                          self._record.method, self._record.target, self._record.sent)
            raise
        self._record.sent += len(chunk)
        return chunk

    def close(self):
        try:
            bodies.close_body(self._body)
        finally:
            self._record.emit()
