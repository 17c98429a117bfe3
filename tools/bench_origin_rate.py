"""A Paste filter for benchmarks only: the images app's downloads at a remote store's rate.

The file store of a benchmark sits in the page cache and streams faster than the machine can
send 16 copies of an image, so there a coalesced fill is limited by sending, not by the
origin. Real origins (Ceph, Swift, HTTP stores) deliver an image at some hundreds of MiB/s;
this filter paces every ``GET .../file`` body of the app behind it to ``rate_mib_s``, so that
tools/bench_download_run.py can also measure what coalescing is for. Put it right before
``images`` (the origin), with tools/ and the repository root on PYTHONPATH (the pacing is
tests/functional/serving.py's ``PacedBody``, which also slows the tests' ``/test/slow``):

    [filter:origin_rate]
    paste.filter_factory = bench_origin_rate:filter_factory
    rate_mib_s = 100
    # optional: when each body is closed, append "IMAGE_ID BYTES_SENT" to this file
    count_file = /tmp/bench/origin-bytes
    # optional: rate_mib_s is the store's total, shared by every read that names this file
    shared_pace_file = /tmp/bench/origin-clock

``count_file`` is what the store really sent (tools/bench_boot_storm.py sums it over every
node and worker: one line per origin read, written with O_APPEND in one write). Without
``shared_pace_file`` each read gets ``rate_mib_s`` of its own (a store that scales with its
readers); with it, concurrent reads in any process share that rate (a store whose bandwidth
is the bottleneck): each chunk books its transfer time on one timeline kept in the file.

The package never imports this module.
"""

import fcntl
import os
import re
import struct
import time

from tests.functional.serving import PacedBody

_FILE_RE = re.compile(r"/images/([^/]+)/file/?$")
CATCH_UP_S = 0.05


def filter_factory(global_conf, rate_mib_s="100", count_file=None, shared_pace_file=None,
                   **_local):
    rate = float(rate_mib_s) * 1024 * 1024
    if rate <= 0:
        raise ValueError("rate_mib_s=%r must be positive" % rate_mib_s)
    return lambda app: OriginRate(app, rate, count_file or None, shared_pace_file or None)


class OriginRate:
    def __init__(self, app, bytes_per_s, count_file=None, shared_pace_file=None):
        self.app = app
        self.bytes_per_s = bytes_per_s
        self.count_file = count_file
        self.shared_pace_file = shared_pace_file

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        match = _FILE_RE.search(environ.get("PATH_INFO", ""))
        if environ["REQUEST_METHOD"] != "GET" or not match:
            return body
        if self.shared_pace_file:
            body = SharedPacedBody(body, 1.0 / self.bytes_per_s, self.shared_pace_file)
        else:
            body = PacedBody(body, 1.0 / self.bytes_per_s)
        if self.count_file:
            return CountedBody(body, self.count_file, match.group(1))
        return body


class SharedPacedBody:
    """``body`` at ``seconds_per_byte`` shared with every other body on ``clock_path``: under
    an flock, each chunk books ``len(chunk) x seconds_per_byte`` after the end of the last
    booking (a monotonic time, the same for every process of the machine; now, if the store
    was idle) and is yielded when its booking ends. ``sent``: bytes yielded; close() closes
    ``body``."""

    def __init__(self, body, seconds_per_byte, clock_path):
        self._body = body
        self._chunks = iter(body)
        self._seconds_per_byte = seconds_per_byte
        self._fd = os.open(clock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self._chunks)
        due = self._book(len(chunk) * self._seconds_per_byte)
        wait_s = due - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)   # green under eventlet
        self.sent += len(chunk)
        return chunk

    def _book(self, seconds):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self._fd, 8, 0)
            booked_until = struct.unpack("d", raw)[0] if len(raw) == 8 else 0.0
            now = time.monotonic()
            # Sleeps overshoot: a timeline busy until just now continues from its end, so
            # that the overshoots do not add up; one idle for longer starts again from now.
            due = (booked_until if booked_until > now - CATCH_UP_S else now) + seconds
            os.pwrite(self._fd, struct.pack("d", due), 0)
            return due
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self):
        try:
            getattr(self._body, "close", lambda: None)()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class CountedBody:
    """A paced ``body`` (with ``sent``) that appends ``{image_id} {bytes sent}`` to
    ``count_file`` when it is closed."""

    def __init__(self, body, count_file, image_id):
        self._body = body
        self._chunks = iter(body)
        self._count_file = count_file
        self._image_id = image_id

    def __iter__(self):
        return self   # not the paced body's iterator: whoever iterates must reach close()

    def __next__(self):
        return next(self._chunks)

    def close(self):
        try:
            self._body.close()
        finally:
            # One write to an O_APPEND file: lines from many processes never interleave.
            fd = os.open(self._count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, ("%s %d\n" % (self._image_id, self._body.sent)).encode())
            finally:
                os.close(fd)
