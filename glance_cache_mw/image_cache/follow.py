"""Followers of a fill: clients served from the growing cache file of a fill in progress.

``FollowIterator`` serves a miss from the growing ``incomplete/{id}`` file of a fill running
in any thread or process (its tee is ``fill.TeeIterator``): the client that caused the fill and
every client that joined it (coalescing). It watches the writer's flock: when the writer is
gone without having verified the file, or the fill was abandoned as stalled (stall.py: its file
did not grow for the idle timeout, or lost its names), it falls back to the origin
(``fallback``) from the offset it reached or raises ``FillAbandoned``; it never waits on a dead
fill, and it never ends short without raising.

It owns ``close()`` (PEP 3333): it reaches the files and the origin's fallback body.
"""

import logging
import os
import time

from glance_cache_mw import bodies, exception
from glance_cache_mw.image_cache import stall
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.image_cache.fill import ImageDataMismatch

LOG = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.02


class FillAbandoned(exception.GlanceException):
    message = "The fill of image %(image_id)s stopped before it was complete: %(reason)s"


class FollowIterator:
    """Tail-follow the growing ``incomplete/{id}`` of a live fill until ``size`` bytes.

    Opened on the writer's inode, it keeps reading the same bytes after the rename into
    place. The last chunk is released only once the writer marked the file verified.
    ``fallback(offset)`` (optional) returns an iterable of the origin's bytes from ``offset``
    and is used when the fill is abandoned; without it ``FillAbandoned`` is raised.
    """

    def __init__(self, image_id, fd, size, fallback=None, chunk_size=65536,
                 poll_interval_s=POLL_INTERVAL_S, idle_timeout_s=None, mark_fd=None,
                 on_close=None, await_verdict=True, progress=None, on_stall=None):
        """``fd``: the fill's file, opened for reading; ``mark_fd``: the follower mark
        (closed with it); ``on_close()``: runs once after both are closed;
        ``await_verdict=False``: release the last bytes without waiting for the verdict
        (the client that caused the fill, unless image_cache_verify_before_last_byte);
        ``progress``: the ``pump.Progress`` of a fill in this process, which wakes us when
        it wrote more (else, and at least every ``poll_interval_s``, the file is polled);
        ``on_stall(fd)``: called when the file did not grow for ``idle_timeout_s``, before
        falling back (ImageCache.abandon_if_stalled: later requests then do not join it)."""
        self._progress = progress
        self._on_stall = on_stall
        self.image_id = image_id
        self._verdict_before_last_bytes = await_verdict
        self.size = size
        self.offset = 0
        self._fd = fd
        self._fallback = fallback
        self._fallback_body = None
        self._fallback_iter = None
        self._chunk_size = chunk_size
        self._poll_interval_s = poll_interval_s
        self._idle_timeout_s = idle_timeout_s
        self._mark_fd = mark_fd
        self._on_close = on_close
        self.fell_back = False
        ondisk.hold_across_fork(self)

    def forget_fds_after_fork(self):
        """In a forked child: close our copies; the parent keeps following."""
        self._on_close = None
        for name in ("_fd", "_mark_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                os.close(fd)

    def __iter__(self):
        return self

    def __next__(self):
        if self.offset >= self.size:
            if not self._verdict_before_last_bytes:
                self._await_end()
            self.close()
            raise StopIteration
        if self._fallback_iter is not None:
            return self._next_from_origin()
        if self._fd is None:
            self.close()
            raise FillAbandoned(image_id=self.image_id, reason="closed at %d of %d bytes"
                                % (self.offset, self.size))
        # Idle time is time without the file growing: a bound on stalls of the fill (of
        # its origin), never on this client, which may take as long as it likes between
        # two chunks (the fill does not wait for it).
        idle_since = time.monotonic()
        while True:
            seen = self._progress_seen()
            data = os.pread(self._fd, min(self._chunk_size, self.size - self.offset),
                            self.offset)
            if data:
                if self.offset + len(data) >= self.size and self._verdict_before_last_bytes:
                    self._await_verdict(idle_since)
                self.offset += len(data)
                return data
            if ondisk.is_verified(self._fd):
                return self._abandoned("verified file shorter than expected")
            if not ondisk.is_writer_alive(self._fd):
                if os.fstat(self._fd).st_size > self.offset:
                    continue    # the writer wrote its last bytes, then left: read them
                return self._abandoned("writer gone")
            if stall.is_given_up(self._fd):
                return self._abandoned("abandoned as stalled")
            if self._idle_for_too_long(idle_since):
                if self._on_stall is not None:
                    self._on_stall(self._fd)
                return self._abandoned("no progress for %ss" % self._idle_timeout_s)
            self._pause(seen)

    def _progress_seen(self):
        return self._progress.generation if self._progress is not None else None

    def _pause(self, seen):
        """Wait before looking at the file again: until the fill (in this process) made
        progress since ``seen``, at most ``poll_interval_s``."""
        if self._progress is not None:
            self._progress.wait(seen, self._poll_interval_s)
        else:
            time.sleep(self._poll_interval_s)

    def _idle_for_too_long(self, idle_since):
        return (self._idle_timeout_s is not None
                and time.monotonic() - idle_since > self._idle_timeout_s)

    def _await_verdict(self, idle_since):
        """Hold the final bytes until the writer verified the file; if it gave up (or
        stalled) without verifying, fail rather than pass on unverified bytes."""
        while not ondisk.is_verified(self._fd):
            seen = self._progress_seen()
            if not ondisk.is_writer_alive(self._fd) or self._idle_for_too_long(idle_since):
                if ondisk.is_verified(self._fd):
                    return
                self.close()
                raise ImageDataMismatch(image_id=self.image_id,
                                        reason="the fill ended without being verified")
            self._pause(seen)

    def _await_end(self):
        """After the last byte went out unverified: the verdict follows it, as it did when
        the client's own reads drove the fill; a request that comes next on the same
        connection then finds the image cached (or not) rather than a fill ending."""
        idle_since = time.monotonic()
        while True:
            seen = self._progress_seen()
            if (self._fd is None or not ondisk.is_writer_alive(self._fd)
                    or self._idle_for_too_long(idle_since)):
                return
            self._pause(seen)

    def _abandoned(self, reason):
        if self._fallback is None:
            self.close()
            raise FillAbandoned(image_id=self.image_id, reason=reason)
        LOG.info("fill of image %s abandoned (%s); reading the rest from the origin at %d",
                 self.image_id, reason, self.offset)
        self._close_fd()
        self.fell_back = True
        # The body is kept apart from its iterator: close() must reach the body (PEP 3333),
        # and a body's __iter__ may return another object than itself.
        self._fallback_body = self._fallback(self.offset)
        self._fallback_iter = iter(self._fallback_body)
        return self._next_from_origin()

    def _next_from_origin(self):
        """The next chunk of the fallback, within ``size``; an origin that ends short
        raises (a short body must end the connection, never look complete)."""
        try:
            chunk = next(self._fallback_iter)
        except StopIteration:
            reason = "the origin ended at %d of %d bytes" % (self.offset, self.size)
            self.close()
            raise FillAbandoned(image_id=self.image_id, reason=reason) from None
        chunk = chunk[:self.size - self.offset]
        self.offset += len(chunk)
        return chunk

    def _close_fd(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        mark_fd, self._mark_fd = self._mark_fd, None
        if mark_fd is not None:
            os.close(mark_fd)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def close(self):
        try:
            self._close_fd()
        finally:
            fallback, self._fallback_body, self._fallback_iter = self._fallback_body, None, None
            bodies.close_body(fallback)
