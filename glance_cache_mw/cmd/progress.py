"""The prefetcher's status line on a terminal: images, bytes and rate, rewritten in place.

``glance-cache-mw-prefetcher`` (cmd/periodic.py) shows it while a one-shot pass runs on a TTY;
the prefetcher calls it (``begin``, ``start``, ``advance``, ``stop``, ``end``) through the
``progress`` it is given, and a daemon or a server gives none.
"""

import threading
import time

PROGRESS_INTERVAL_S = 0.25


class Progress:
    """One self-rewriting status line (images, bytes, rate) on a terminal; silent otherwise.

    ``stream`` is written only when it is a TTY. Thread-safe; redrawn at most every
    ``interval_s``. ``clear_line`` is a logging filter that wipes the line before a log record
    is written to the same terminal.
    """

    def __init__(self, stream, interval_s=PROGRESS_INTERVAL_S, clock=time.monotonic):
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._active = {}
        self._total = self._done = self._bytes = 0
        self._started = self._drawn_at = 0.0
        self._shown = False

    def begin(self, total_images):
        with self._lock:
            self._total, self._done, self._bytes = total_images, 0, 0
            self._started = self._clock()

    def start(self, image_id, size):
        with self._lock:
            self._active[image_id] = [0, size]
        self._draw()

    def advance(self, image_id, nbytes):
        with self._lock:
            if image_id in self._active:
                self._active[image_id][0] += nbytes
            self._bytes += nbytes
        self._draw()

    def stop(self, image_id):
        with self._lock:
            self._active.pop(image_id, None)
            self._done += 1
        self._draw(force=True)

    def end(self):
        self.clear_line()

    def line(self):
        """The status text, e.g. ``prefetch 2/5 images, 12.0 MiB at 3.0 MiB/s; abc 40%``."""
        elapsed = max(self._clock() - self._started, 1e-6)
        text = "prefetch %d/%d images, %s at %s/s" % (
            self._done, self._total, _human(self._bytes), _human(self._bytes / elapsed))
        parts = []
        for image_id, (done, size) in sorted(self._active.items()):
            share = " %d%%" % (100 * done // size) if size else ""
            parts.append("%s %s%s" % (image_id, _human(done), share))
        return text + ("; " + ", ".join(parts) if parts else "")

    def _draw(self, force=False):
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            if not force and now - self._drawn_at < self._interval_s:
                return
            self._drawn_at = now
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
            self._shown = True

    def clear_line(self, record=None):
        """Erase the status line (also usable as a logging filter: always returns True)."""
        if self.enabled:
            with self._lock:
                if self._shown:
                    self.stream.write("\r\033[K")
                    self.stream.flush()
                    self._shown = False
        return True

    filter = clear_line


def _human(nbytes):
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % value
        value /= 1024
    return "%.1f TiB" % value
