"""WSGI iterators of the miss path: the fill's tee, the followers' tail-reader, priming.

``TeeIterator`` passes the origin's body on while writing it into the cache and hashing it;
the cache file is committed only when size and hashes match, else moved to invalid/. Hashing
and the verdict are ``verify.Verifier``'s. The server's fills and the prefetcher's are drained
by a ``pump.FillPump`` at the origin's pace; a body that is only verified (not admitted to the
cache) is handed to its client directly. By default (``hold_last_chunk`` off) the bytes go on
as soon as the origin gave them and the verdict comes after the last byte; with
``hold_last_chunk`` the last chunk waits for the verdict, so that a body that does not match
the record ends short (a failure any client detects) instead of looking good (W7); that puts
the whole hashing time (0.3 s per 256 MiB for SHA-512 here) before the last byte. A body
shorter than the record always raises after its last byte: a server keeps a connection alive
after a body that merely ended, so only an exception makes it cut the connection.

``FollowIterator`` serves a miss from the growing ``incomplete/{id}`` file of a fill running
in any thread or process: the client that caused the fill and every client that joined it
(coalescing). It watches the writer's flock: when the writer is gone without having verified
the file, or the fill was abandoned as stalled (stall.py: its file did not grow for the idle
timeout, or lost its names), it falls back to the origin (``fallback``) from the offset it
reached or raises ``FillAbandoned``; it never waits on a dead fill, and it never ends short
without raising.

``PrimedIterator`` reads a body's first chunk before the response starts, so that a failure
there can still be answered otherwise.

All own ``close()`` (PEP 3333): it reaches the origin iterator and the files.
"""

import logging
import os
import threading
import time

from glance_cache_mw import exception
from glance_cache_mw.image_cache import stall
from glance_cache_mw.image_cache.drivers import ondisk

LOG = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.02
class FillAbandoned(exception.GlanceException):
    message = "The fill of image %(image_id)s stopped before it was complete: %(reason)s"


class ImageDataMismatch(exception.GlanceException):
    message = "Image %(image_id)s data does not match its record: %(reason)s"


class TeeIterator:
    """Yield the origin's body while copying it into the cache (best effort, verified).

    ``writer`` may be None (not admitted): the body is then only verified. A write error
    stops caching but never the download. ``complete_in_background`` (settable at any time,
    e.g. when followers appear) makes a client disconnect finish the fill in a thread instead
    of abandoning it; ``has_followers`` is consulted the same way at close time.
    ``hold_last_chunk``: release the last chunk only after a matching verdict (else a
    mismatch is logged after the body went out whole, and not cached).
    """

    def __init__(self, image_id, source, writer, verifier, complete_in_background=False,
                 has_followers=None, hold_last_chunk=False, size=None, metrics=None):
        """``size``: the record's size, when there is no ``verifier`` to know it;
        ``metrics``: counts the fill's start and verdict (metrics.py: fills_*)."""
        self.image_id = image_id
        self.size = verifier.size if verifier is not None else size
        self._metrics = metrics
        self._started = time.monotonic()
        if writer is not None and metrics is not None:
            metrics.fill_started()
        self._source = source
        self._chunks = iter(source)
        self._writer = writer
        self._verifier = verifier
        self._held = None
        self._bytes_seen = 0
        self._hold_last_chunk = hold_last_chunk
        self._done = False
        self.complete_in_background = complete_in_background
        self._has_followers = has_followers or (lambda: False)
        self.committed = False
        self.mismatch = None   # the verifier's reason when the body did not match the record
        self.background = None

    @property
    def writer(self):
        """The CacheWriter (None when only verifying)."""
        return self._writer

    @property
    def caching(self):
        """True while the body is being written into the cache."""
        return self._writer is not None and not self._writer.closed

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        while True:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._done = True
                self._finish(raise_mismatch=self._hold_last_chunk)
                held, self._held = self._held, None
                if held is None:
                    raise
                return held
            except Exception as err:
                self._done = True
                # W8: an origin failure is passed on, never turned into a silently short body.
                self._invalidate_writer("origin failed: %r" % (err,), "origin")
                self._close_verifier()
                raise
            if not chunk:
                continue
            self._consume(chunk)
            if not self._hold_last_chunk:
                chunk = self._within_size(chunk)
                if chunk:
                    return chunk
                continue
            held, self._held = self._held, chunk
            if held is not None:
                return held

    def _within_size(self, chunk):
        """The part of ``chunk`` up to the record's size: an origin that sends more than
        that has failed already (the verdict says so); the client gets Content-Length."""
        size = self._verifier.size if self._verifier is not None else None
        if size is None or self._verifier.bytes_seen <= size:
            return chunk
        return chunk[:max(0, len(chunk) - (self._verifier.bytes_seen - size))]

    def _consume(self, chunk):
        if self.caching:   # written first: a verifier may hash it back from the file
            try:
                self._writer.write(chunk)
            except OSError as err:
                LOG.warning("stopped caching image %s: %s", self.image_id, err)
                self._count_failure("io")
                self._writer.discard("write failed: %s" % err)
                if self._verifier is not None and self._verifier.reads_file:
                    # Its bytes are gone with the file; and with nothing to cache and the
                    # client not waiting for a verdict, there is nothing left to verify.
                    self._verifier.close()
                    self._verifier = None
        if self._verifier is not None:
            self._verifier.update(chunk)
        self._bytes_seen += len(chunk)

    def _finish(self, raise_mismatch=True):
        """The origin is exhausted: commit on a match, else invalidate and (with
        ``raise_mismatch``) fail the body."""
        problem = None
        if self._verifier is not None:
            try:
                problem = self._verifier.problem()
            finally:
                self._verifier.close()
            short = self._verifier.bytes_seen < (self.size or 0)
        else:
            short = self._bytes_seen < (self.size or 0)
            if short:
                problem = "got %d bytes, expected %d" % (self._bytes_seen, self.size)
        if problem is not None:
            self.mismatch = problem
            outcome = "size" if short or problem.startswith("got ") else "verification"
            self._invalidate_writer(problem, outcome)
            if raise_mismatch or short:
                # A short body always fails: the server must end the connection rather than
                # keep it alive after fewer bytes than Content-Length.
                raise ImageDataMismatch(image_id=self.image_id, reason=problem)
            LOG.error("image %s: the origin's bytes do not match the image record (%s); "
                      "not cached (bytes already sent went out as the origin sent them)",
                      self.image_id, problem)
            return
        if self.caching:
            self.committed = self._writer.commit()
            self._count_commit()

    def _invalidate_writer(self, reason, outcome):
        """Stop caching: the bytes go to invalid/ (kept for debugging); counted as ``outcome``."""
        if self.caching:
            self._count_failure(outcome)   # first: once the file is gone, it is counted
            self._writer.invalidate(reason)

    def _discard_writer(self, reason, outcome):
        """Stop caching: the partial file is removed; counted as ``outcome``."""
        if self.caching:
            self._count_failure(outcome)
            self._writer.discard(reason)

    # The fill's verdict, counted once where it is decided (metrics.py: fills_*).
    def _count_commit(self):
        if self._metrics is None:
            return
        if self.committed:
            self._metrics.fill_committed(time.monotonic() - self._started)
        else:
            self._metrics.fill_failed("cancelled")

    def _count_failure(self, outcome):
        if self._metrics is not None:
            self._metrics.fill_failed(outcome)

    def close(self, outcome="abandoned"):
        """End the fill here (PEP 3333 close, or its FillPump's end). A fill still caching
        is discarded and counted as ``outcome``: "abandoned" (nobody reads it and it is not
        worth finishing), or "cancelled" when its image was evicted or deleted meanwhile."""
        if not self._done and self.caching and (
                self.complete_in_background or self._has_followers()):
            self._done = True
            LOG.info("client of image %s left; finishing the fill in the background",
                     self.image_id)
            self.background = threading.Thread(target=self._drain, daemon=True,
                                               name="cache-fill-%s" % self.image_id)
            self.background.start()
            return
        self._done = True
        try:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        finally:
            try:
                if self.caching and self._writer.is_cancelled():
                    outcome = "cancelled"
                self._discard_writer("ended before the origin's end (%s)" % outcome,
                                     outcome)
            finally:
                self._close_verifier()

    def _close_verifier(self):
        if self._verifier is not None:
            self._verifier.close()

    def _drain(self):
        try:
            for chunk in self._chunks:
                if chunk:
                    self._consume(chunk)
                if not self.caching:
                    return
            self._finish()
        except Exception as err:  # background: nobody to raise to
            LOG.warning("background fill of image %s failed: %s", self.image_id, err)
            self._invalidate_writer("origin failed: %r" % (err,), "origin")
        finally:
            try:
                close = getattr(self._source, "close", None)
                if close is not None:
                    close()
            finally:
                self._close_verifier()


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
        self._fallback_iter = iter(self._fallback(self.offset))
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
            fallback, self._fallback_iter = self._fallback_iter, None
            close = getattr(fallback, "close", None)
            if close is not None:
                close()


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
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
