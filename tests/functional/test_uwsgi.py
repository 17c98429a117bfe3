"""uWSGI serves glance_cache_mw.wsgi:application as docs/deployment.md says: the cache works.

uWSGI (from the test extra; compiled by pip) runs the documented command line in a
subprocess on 127.0.0.1, with 2 processes x 8 threads; requests are real HTTP.
"""

import concurrent.futures
import hashlib
import json
import os
import signal
import time

import pytest

from tests.functional import server as helpers

pytestmark = pytest.mark.realservice

DATA = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def uwsgi(tmp_path_factory):
    url, process, log_path = helpers.start_uwsgi(tmp_path_factory.mktemp("uwsgi"))
    yield url, process, log_path
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def _upload(url, data):
    return "/v2/images/%s/file" % helpers.upload_image(url, data, "u")


def _wait_cached(url, path):
    """Until the fill is committed: its verdict comes after the client's last byte."""
    image_id = path.split("/")[3]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = helpers.http_request(url, "GET", "/v2/cache")[2]
        if image_id in [entry["image_id"] for entry in json.loads(body)["cached_images"]]:
            return
        time.sleep(0.05)
    raise AssertionError("image %s was not cached" % image_id)


def test_miss_then_hit_with_the_same_bytes(uwsgi):
    url, _, _ = uwsgi
    path = _upload(url, DATA)
    statuses = []
    for _ in range(2):
        status, headers, body = helpers.http_request(url, "GET", path)
        assert status == 200 and body == DATA
        assert headers["content-md5"] == hashlib.md5(DATA).hexdigest()
        statuses.append(headers["x-image-cache"])
        _wait_cached(url, path)
    assert statuses == ["MISS", "HIT"]


@pytest.mark.parametrize("first,last", [(0, 99), (1000, 1024 * 1024 + 5), (len(DATA) - 10,
                                                                         len(DATA) - 1)])
def test_range_hits_are_right(uwsgi, first, last):
    url, _, _ = uwsgi
    path = _upload(url, DATA)
    helpers.http_request(url, "GET", path)                       # fill
    _wait_cached(url, path)
    status, headers, body = helpers.http_request(url, "GET", path,
                                                 headers={"Range": "bytes=%d-%d" % (first, last)})
    assert status == 206 and headers["x-image-cache"] == "HIT"
    assert body == DATA[first:last + 1]
    assert headers["content-range"] == "bytes %d-%d/%d" % (first, last, len(DATA))


def test_concurrent_cold_downloads_read_the_origin_once(uwsgi):
    url, _, _ = uwsgi
    path = _upload(url, DATA)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: helpers.http_request(url, "GET", path), range(8)))
    assert all(status == 200 and body == DATA for status, _, body in results)
    kinds = sorted(headers["x-image-cache"] for _, headers, _ in results)
    assert kinds.count("MISS") == 1 and kinds.count("COALESCED") + kinds.count("HIT") == 7


def test_sigterm_stops_it(tmp_path_factory, uwsgi):
    # Last in this module: the fixture's process is stopped here and checked.
    _, process, log_path = uwsgi
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) is not None
    assert "Traceback" not in log_path.read_text(errors="replace")
