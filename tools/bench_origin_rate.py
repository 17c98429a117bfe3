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

``count_file`` is what the store really sent (tools/bench_boot_storm.py sums it over every
node and worker: one line per origin read, written with O_APPEND in one write).

The package never imports this module.
"""

import os
import re

from tests.functional.serving import PacedBody

_FILE_RE = re.compile(r"/images/([^/]+)/file/?$")


def filter_factory(global_conf, rate_mib_s="100", count_file=None, **_local):
    rate = float(rate_mib_s) * 1024 * 1024
    if rate <= 0:
        raise ValueError("rate_mib_s=%r must be positive" % rate_mib_s)
    return lambda app: OriginRate(app, rate, count_file or None)


class OriginRate:
    def __init__(self, app, bytes_per_s, count_file=None):
        self.app = app
        self.bytes_per_s = bytes_per_s
        self.count_file = count_file

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        match = _FILE_RE.search(environ.get("PATH_INFO", ""))
        if environ["REQUEST_METHOD"] != "GET" or not match:
            return body
        if self.count_file:
            return CountedBody(body, 1.0 / self.bytes_per_s, self.count_file, match.group(1))
        return PacedBody(body, 1.0 / self.bytes_per_s)


class CountedBody(PacedBody):
    """A ``PacedBody`` that appends ``{image_id} {bytes sent}`` to ``count_file`` on close."""

    def __init__(self, body, seconds_per_byte, count_file, image_id):
        super().__init__(body, seconds_per_byte)
        self._count_file = count_file
        self._image_id = image_id

    def close(self):
        try:
            super().close()
        finally:
            # One write to an O_APPEND file: lines from many processes never interleave.
            fd = os.open(self._count_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, ("%s %d\n" % (self._image_id, self.sent)).encode())
            finally:
                os.close(fd)
