"""The fill's tee: the origin's body passed on while it is written into the cache.

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

The clients read the growing file through ``follow.FollowIterator``. The tee owns ``close()``
(PEP 3333): it reaches the origin's body, the cache file and the verifier.
"""

import logging
import threading
import time

from glance_cache_mw import bodies, exception

LOG = logging.getLogger(__name__)


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
            bodies.close_body(self._source)
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
                bodies.close_body(self._source)
            finally:
                self._close_verifier()
