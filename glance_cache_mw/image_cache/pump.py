"""FillPump: read the origin into the cache at the origin's pace, whoever reads the file.

A fill used to advance only as fast as the client that caused it read its response, so one
slow client held up every request following the fill. The pump drains the fill's
``TeeIterator`` (write, verify, commit) on its own: in a thread of its own for the server's
fills (``start()``: a green thread under eventlet's monkey patching, a real OS thread under
gunicorn's gthread/sync workers and uWSGI's threads), or in the caller's thread for the
prefetcher (``run()``). Every client, the one that caused the fill included, reads the
growing ``incomplete/`` file through a ``FollowIterator``. Memory: one chunk of the origin at
a time, whatever the number of clients.

A fill nobody reads any more is finished only when that is worth it (``keep_going``, asked
at most every ``CHECK_INTERVAL_S`` between chunks; ``ImageCache.is_worth_finishing`` is the
rule: see docs/operations.md).
"""

import logging
import threading
import time

LOG = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.05   # how often a fill asks whether it is still worth going on


class FillPump:
    """Drains ``tee`` (a TeeIterator with a writer) chunk by chunk until the origin ends,
    the writer stops or ``keep_going()`` says no more; ``close()``s it at the end."""

    def __init__(self, tee, keep_going=None, progress=None):
        """``progress``: a Progress to advance after each chunk and at the end."""
        self.image_id = tee.image_id
        self.tee = tee
        self._keep_going = keep_going or (lambda: True)
        self._progress = progress
        self.thread = None
        self.outcome = None    # "committed", "abandoned", "failed: ...", "not cached: ..."

    def start(self):
        """Run in a thread of its own (green under eventlet); returns self."""
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name="cache-fill-%s" % self.image_id)
        self.thread.start()
        return self

    def run(self, raise_errors=False):
        """Drain the origin into the cache; True when the image is now cached.

        The origin's and the cache's failures end the fill (the tee invalidates its file);
        ``outcome`` says what happened. They are raised with ``raise_errors`` (the
        prefetcher reports them), else only logged (nobody waits on a server's pump: its
        clients see the fill's end on the file)."""
        tee = self.tee
        checked_at = time.monotonic()
        try:
            for _chunk in tee:
                if not tee.caching:
                    break   # committed (the last chunk was held), or the cache file failed
                now = time.monotonic()
                if now - checked_at >= CHECK_INTERVAL_S:
                    checked_at = now
                    if not self._keep_going():
                        self.outcome = "abandoned"
                        LOG.info("fill of image %s stopped: no client follows it and it is "
                                 "not worth finishing, or it was abandoned as stalled",
                                 self.image_id)
                        return False
                if self._progress is not None:
                    self._progress.advance()
                time.sleep(0)   # under eventlet: let the clients run between two chunks
        except Exception as err:   # origin failure or mismatch: the tee invalidated the file
            self.outcome = "failed: %s" % (err,)
            if raise_errors:
                raise
            LOG.warning("fill of image %s failed: %s", self.image_id, err)
            return False
        finally:
            try:
                tee.close()
            finally:
                if self._progress is not None:
                    self._progress.advance()   # committed or not: its follower looks now
        self.outcome = "committed" if tee.committed else "not cached: %s" % (
            tee.mismatch or "cancelled or the cache file failed")
        return tee.committed

    def join(self, timeout_s=None):
        if self.thread is not None:
            self.thread.join(timeout_s)


class Progress:
    """Tells the follower of the client that caused a fill that the fill wrote more or
    ended, so that it reads on at once instead of polling the file.

    ``generation`` counts the fill's steps; ``wait(seen, timeout_s)`` returns once it is no
    longer ``seen`` or after ``timeout_s``. A green Condition under eventlet's patching.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self.generation = 0

    def advance(self):
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def wait(self, seen, timeout_s):
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen, timeout_s)
