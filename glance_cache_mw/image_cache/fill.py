"""WSGI iterators of the miss path: the filler's tee and the followers' tail-reader.

``TeeIterator`` yields the origin's body to its client while writing it into the cache and
hashing it. It holds back the last chunk until size and hashes are checked, so a body that
does not match the image record ends short (a detectable failure) instead of being passed on
as if it were good (W7); the cache file is committed only on a match, else moved to invalid/.
``Verifier`` hashes a large body in OS threads beside the stream (one per digest), so the
client keeps receiving while MD5 and the multihash run on the other cores.

``FollowIterator`` serves a concurrent miss from the growing ``incomplete/{id}`` file of a
fill running in any thread or process (coalescing). It watches the writer's flock: when the
writer is gone without having verified the file, it falls back to the origin (``fallback``)
or raises ``FillAbandoned`` — it never waits on a dead fill.

Both own ``close()`` (PEP 3333): it reaches the origin iterator and the files.
"""

import collections
import hashlib
import logging
import os
import sys
import threading
import time

from glance_cache_mw import exception
from glance_cache_mw.image_cache.drivers import common

LOG = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.02
# Bodies up to this size are hashed inline: starting two threads costs more than it saves.
HASH_IN_THREADS_FROM = 4 * 1024 * 1024
# How far (bytes) a hashing thread may fall behind the stream before the stream waits.
HASH_QUEUE_BYTES = 8 * 1024 * 1024
# A hashing thread is woken when this many bytes wait for it (and at the end).
HASH_BATCH_BYTES = 1024 * 1024


class FillAbandoned(exception.GlanceException):
    message = "The fill of image %(image_id)s stopped before it was complete: %(reason)s"


class ImageDataMismatch(exception.GlanceException):
    message = "Image %(image_id)s data does not match its record: %(reason)s"


class Verifier:
    """Counts and hashes a body; ``problem()`` says why it does not match the image record.

    Past ``threads_from`` bytes each digest is computed in its own OS thread (hashlib releases
    the GIL on buffers over 2 KiB), so MD5 and the multihash run on other cores while the
    stream's thread writes and sends. They may lag ``queue_bytes`` behind the stream; beyond
    that ``update()`` waits (sleeping, so an eventlet hub keeps running). ``problem()`` waits
    for both digests; ``close()`` stops the threads and joins them (the owner calls it).
    """

    def __init__(self, size, checksum=None, os_hash_algo=None, os_hash_value=None, *,
                 threads_from=HASH_IN_THREADS_FROM, queue_bytes=HASH_QUEUE_BYTES):
        """Raises ValueError when os_hash_algo is unknown to hashlib (cannot be verified).

        ``threads_from=None`` hashes every chunk inline, in the caller's thread.
        """
        self.size = size
        self.bytes_seen = 0
        self._checksum = checksum
        self._md5 = hashlib.md5(usedforsecurity=False) if checksum else None
        self._os_hash_value = os_hash_value
        self._multihash = None
        if os_hash_value:
            try:
                self._multihash = hashlib.new(os_hash_algo or "sha512")
            except (ValueError, TypeError):
                raise ValueError("unsupported os_hash_algo %r" % (os_hash_algo,)) from None
        self._hashes = [h for h in (self._md5, self._multihash) if h is not None]
        self._threads_from = threads_from
        self._queue_bytes = queue_bytes
        self._threads = None
        self._closed = False

    @property
    def threads(self):
        """The hashing threads started so far (empty while hashing inline)."""
        return list(self._threads or ())

    def update(self, chunk):
        if self._closed:
            raise ValueError("update() of a closed Verifier")
        self.bytes_seen += len(chunk)
        if not self._hashes:
            return
        if self._threads is None:
            if self._threads_from is None or self.bytes_seen <= self._threads_from:
                for digest in self._hashes:
                    digest.update(chunk)
                return
            batch_bytes = min(HASH_BATCH_BYTES, self._queue_bytes)
            self._threads = [_HashThread(digest, batch_bytes) for digest in self._hashes]
        if type(chunk) is not bytes:
            chunk = bytes(chunk)   # hashed later: a buffer the source reuses must not change
        for thread in self._threads:
            thread.put(chunk)
        if any(thread.is_behind(self._queue_bytes) for thread in self._threads):
            _wait_until(lambda: not any(thread.is_behind(self._queue_bytes)
                                        for thread in self._threads))

    def problem(self):
        """None when size and every known hash match; else a reason."""
        if self.size is not None and self.bytes_seen != self.size:
            return "got %d bytes, expected %d" % (self.bytes_seen, self.size)
        failure = self._finish_hashing()
        if failure is not None:
            return failure
        if self._md5 is not None and self._md5.hexdigest() != self._checksum:
            return "checksum %s, expected %s" % (self._md5.hexdigest(), self._checksum)
        if self._multihash is not None and self._multihash.hexdigest() != self._os_hash_value:
            return "%s %s, expected %s" % (self._multihash.name, self._multihash.hexdigest(),
                                          self._os_hash_value)
        return None

    def _finish_hashing(self):
        """Wait until every queued chunk is hashed; a reason if that cannot happen."""
        if self._closed:
            return "verification was stopped"
        for thread in self._threads or ():
            thread.finish()
        for thread in self._threads or ():
            thread.join()
            if thread.failure is not None:
                return "hashing failed: %r" % (thread.failure,)
        return None

    def close(self):
        """Stop and join the hashing threads; the verdict is then always a mismatch."""
        if self._closed:
            return
        self._closed = True
        for thread in self._threads or ():
            thread.stop()
        for thread in self._threads or ():
            thread.join()


class _HashThread:
    """One digest, fed in order from a real OS thread (also under eventlet's monkey
    patching: a green thread would hash on the hub's core, not beside it)."""

    def __init__(self, digest, batch_bytes=HASH_BATCH_BYTES):
        """``batch_bytes``: wake the thread once this many bytes wait for it."""
        self.digest = digest
        self._batch_bytes = batch_bytes
        self.queued = 0      # bytes handed over; written by the stream's thread only
        self.hashed = 0      # bytes hashed; written by the hashing thread only
        self.failure = None
        self._chunks = collections.deque()
        self._stopped = False
        real_threading = os_threading()
        self._wake = real_threading.Event()
        self._thread = real_threading.Thread(target=self._run, daemon=True,
                                             name="cache-hash-%s" % digest.name)
        self._thread.start()

    def is_alive(self):
        return self._thread.is_alive()

    @property
    def native_id(self):
        """The OS thread's id (a green thread has none of its own)."""
        return self._thread.native_id

    def is_behind(self, limit):
        """True while more than ``limit`` queued bytes wait for a live thread."""
        return self.queued - self.hashed > limit and self._thread.is_alive()

    def put(self, chunk):
        if self.failure is not None:
            return
        self._chunks.append(chunk)
        self.queued += len(chunk)
        if self.queued - self.hashed >= self._batch_bytes:
            self._wake.set()   # a wake-up per batch, not per chunk: each one costs a switch

    def finish(self):
        """No more chunks: hash what is queued, then end."""
        self._chunks.append(None)
        self._wake.set()

    def stop(self):
        """End after the chunk being hashed; drop the rest."""
        self._stopped = True
        self._wake.set()

    def join(self):
        # A real thread: waiting by polling keeps an eventlet hub (and its sleep) running.
        _wait_until(lambda: not self._thread.is_alive())
        self._thread.join()
        self._chunks.clear()

    def _run(self):
        try:
            while not self._stopped:
                self._wake.wait()
                self._wake.clear()
                while self._chunks and not self._stopped:
                    chunk = self._chunks.popleft()
                    if chunk is None:
                        return
                    self.digest.update(chunk)
                    self.hashed += len(chunk)
        except Exception as err:   # e.g. MemoryError: problem() reports it, nothing commits
            self.failure = err


def os_threading():
    """The threading module of real OS threads, even when eventlet monkey-patched it."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return patcher.original("threading")
    return threading


def _wait_until(predicate, max_sleep_s=0.002):
    """Poll with time.sleep: a green sleep under eventlet, so the hub serves others meanwhile."""
    delay_s = 0.0001
    while not predicate():
        time.sleep(delay_s)
        delay_s = min(2 * delay_s, max_sleep_s)


class TeeIterator:
    """Yield the origin's body while copying it into the cache (best effort, verified).

    ``writer`` may be None (not admitted): the body is then only verified. A write error
    stops caching but never the download. ``complete_in_background`` (settable at any time,
    e.g. when followers appear) makes a client disconnect finish the fill in a thread instead
    of abandoning it; ``has_followers`` is consulted the same way at close time.
    """

    def __init__(self, image_id, source, writer, verifier, complete_in_background=False,
                 has_followers=None):
        self.image_id = image_id
        self._source = source
        self._chunks = iter(source)
        self._writer = writer
        self._verifier = verifier
        self._held = None
        self._done = False
        self.complete_in_background = complete_in_background
        self._has_followers = has_followers or (lambda: False)
        self.committed = False
        self.background = None

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
                self._finish()
                held, self._held = self._held, None
                if held is None:
                    raise
                return held
            except Exception as err:
                self._done = True
                # W8: an origin failure is passed on, never turned into a silently short body.
                self._end_writer("invalidate", "origin failed: %r" % (err,))
                self._close_verifier()
                raise
            if not chunk:
                continue
            self._consume(chunk)
            held, self._held = self._held, chunk
            if held is not None:
                return held

    def _consume(self, chunk):
        if self._verifier is not None:
            self._verifier.update(chunk)
        if self.caching:
            try:
                self._writer.write(chunk)
            except OSError as err:
                LOG.warning("stopped caching image %s: %s", self.image_id, err)
                self._writer.discard("write failed: %s" % err)

    def _finish(self):
        """The origin is exhausted: commit on a match, else invalidate and fail the body."""
        problem = None
        if self._verifier is not None:
            try:
                problem = self._verifier.problem()
            finally:
                self._verifier.close()
        if problem is not None:
            self._end_writer("invalidate", problem)
            raise ImageDataMismatch(image_id=self.image_id, reason=problem)
        if self.caching:
            self.committed = self._writer.commit()

    def _end_writer(self, how, reason):
        if self.caching:
            getattr(self._writer, how)(reason)

    def close(self):
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
                self._end_writer("discard", "client disconnected")
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
            self._end_writer("invalidate", "origin failed: %r" % (err,))
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
                 on_close=None):
        """``fd``: the fill's file, opened for reading; ``mark_fd``: the follower mark
        (closed with it); ``on_close()``: runs once after both are closed."""
        self.image_id = image_id
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
        common.hold_across_fork(self)

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
        if self._fallback_iter is not None:
            chunk = next(self._fallback_iter)
            self.offset += len(chunk)
            return chunk
        if self._fd is None or self.offset >= self.size:
            self.close()
            raise StopIteration
        idle_since = time.monotonic()
        while True:
            data = os.pread(self._fd, min(self._chunk_size, self.size - self.offset),
                            self.offset)
            if data:
                if self.offset + len(data) >= self.size:
                    self._await_verdict(idle_since)
                self.offset += len(data)
                return data
            if common.is_verified(self._fd):
                return self._abandoned("verified file shorter than expected")
            if not common.is_writer_alive(self._fd):
                if os.fstat(self._fd).st_size > self.offset:
                    continue    # the writer wrote its last bytes, then left: read them
                return self._abandoned("writer gone")
            if self._idle_for_too_long(idle_since):
                return self._abandoned("no progress for %ss" % self._idle_timeout_s)
            time.sleep(self._poll_interval_s)

    def _idle_for_too_long(self, idle_since):
        return (self._idle_timeout_s is not None
                and time.monotonic() - idle_since > self._idle_timeout_s)

    def _await_verdict(self, idle_since):
        """Hold the final bytes until the writer verified the file; if it gave up (or
        stalled) without verifying, fail rather than pass on unverified bytes."""
        while not common.is_verified(self._fd):
            if not common.is_writer_alive(self._fd) or self._idle_for_too_long(idle_since):
                if common.is_verified(self._fd):
                    return
                self.close()
                raise ImageDataMismatch(image_id=self.image_id,
                                        reason="the fill ended without being verified")
            time.sleep(self._poll_interval_s)

    def _abandoned(self, reason):
        if self._fallback is None:
            self.close()
            raise FillAbandoned(image_id=self.image_id, reason=reason)
        LOG.info("fill of image %s abandoned (%s); reading the rest from the origin at %d",
                 self.image_id, reason, self.offset)
        self._close_fd()
        self.fell_back = True
        self._fallback_iter = iter(self._fallback(self.offset))
        return next(self)

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
