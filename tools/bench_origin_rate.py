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

The package never imports this module.
"""

import re

from tests.functional.serving import PacedBody

_FILE_RE = re.compile(r"/images/[^/]+/file/?$")


def filter_factory(global_conf, rate_mib_s="100", **_local):
    rate = float(rate_mib_s) * 1024 * 1024
    if rate <= 0:
        raise ValueError("rate_mib_s=%r must be positive" % rate_mib_s)
    return lambda app: OriginRate(app, rate)


class OriginRate:
    def __init__(self, app, bytes_per_s):
        self.app = app
        self.bytes_per_s = bytes_per_s

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET" or not _FILE_RE.search(
                environ.get("PATH_INFO", "")):
            return body
        return PacedBody(body, 1.0 / self.bytes_per_s)
