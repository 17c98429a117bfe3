"""WSGI response bodies (PEP 3333 iterables) that are not tied to a cache fill.

``close_body`` is the one way to end a body we did not build: PEP 3333 says a server (and a
middleware that wraps or drops a body) must call its ``close()`` when it has one. Every
wrapping iterator of the project owns ``close()`` and reaches what it wraps with it.

``FileReader`` serves bytes of an open file (the store's downloads, the cache's hits);
``PrimedIterator`` reads a body's first chunk before the response starts. The fill's iterators
live with the fill: ``image_cache/fill.py`` (the tee) and ``image_cache/follow.py`` (the
followers of a fill); the built-in server's ``wsgi.file_wrapper`` is in ``cmd/sendfile.py``.
"""

import logging
import os

LOG = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 65536


class FileShrank(IOError):
    """A file being read ended before the length it had when the read began."""


def close_body(body):
    """Call ``body.close()`` if it has one (PEP 3333: close() must reach the body)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


class FileReader:
    """Iterate over ``length`` bytes of an open file from ``offset``, in chunks; owns the file.

    The one file reader of the project: the store's downloads and the cache's hits use it.
    ``path``, ``offset`` and ``length`` say what is served, so a caller may hand the file to
    ``wsgi.file_wrapper`` (sendfile) instead of iterating.
    """

    def __init__(self, file, offset=0, length=None, chunk_size=DEFAULT_CHUNK_SIZE):
        self.file = file
        self.path = getattr(file, "name", None)
        try:
            self.size = os.fstat(file.fileno()).st_size
            self.offset = min(max(offset, 0), self.size)
            available = self.size - self.offset
            self.length = available if length is None else max(0, min(length, available))
            file.seek(self.offset)
        except BaseException:
            file.close()
            raise
        self._remaining = self.length
        self._chunk_size = chunk_size

    @classmethod
    def open(cls, path, offset=0, length=None, chunk_size=DEFAULT_CHUNK_SIZE):
        return cls(open(path, "rb"), offset, length, chunk_size)

    def __iter__(self):
        return self

    def __next__(self):
        if self._remaining <= 0:
            raise StopIteration
        chunk = self.file.read(min(self._chunk_size, self._remaining))
        if not chunk:
            # The file shrank under us. Ending the iteration would look like a complete
            # body to the server, which would keep the connection alive after fewer bytes
            # than Content-Length (eventlet does): raise, so that it cuts the connection.
            LOG.warning("%s ended %d bytes early", self.path, self._remaining)
            raise FileShrank("%s ended %d bytes early" % (self.path, self._remaining))
        self._remaining -= len(chunk)
        return chunk

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class PrimedIterator:
    """A body whose first chunk was read at construction, before the response started.

    Building it raises what the first ``next()`` raised (and closes the body): the caller can
    still answer otherwise. Once the headers are out, an error can only end the connection.
    """

    def __init__(self, body):
        self._body = body
        self._chunks = iter(body)
        try:
            self._first = next(self._chunks)
        except StopIteration:
            self._first = None
        except BaseException:
            self.close()
            raise

    def __iter__(self):
        return self

    def __next__(self):
        first, self._first = self._first, None
        if first is not None:
            return first
        return next(self._chunks)

    def close(self):
        close_body(self._body)
