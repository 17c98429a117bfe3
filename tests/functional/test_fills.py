"""Fills at the origin's pace under the three servers: real processes, real HTTP clients.

The built-in eventlet server, gunicorn (gthread, keep-alive on) and uWSGI (the documented
command line) each serve the pipeline with the test-only filter in front of the images app,
which logs every origin read (tests/functional/server.py). Checked on each: a client reading
1 byte/s holds up nobody; a store file shorter than its record ends every connection after
its last byte (never a kept-alive connection waiting for bytes that will not come) and
nothing is cached; 16 concurrent cold downloads read the origin once; an origin that stalls
costs later requests nothing (the stalled fill is abandoned, the next request fills afresh).
On the built-in server also: flipped bytes are never cached nor served as a HIT, and a cache
DELETE or an image DELETE during a fill lets the clients following it finish (or cuts them
cleanly), never 500.
"""

import concurrent.futures
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

import pytest

from tests.functional import server as helpers
from tests.functional.server import fetch

pytestmark = pytest.mark.realservice

MIB = 1024 * 1024
# Larger than what the socket buffers of a stalled client absorb (a few MiB on loopback).
SLOW_CLIENT_IMAGE = 24 * MIB
FOLLOWERS = 8
CLIENT_TIMEOUT_S = 60


class Served:
    """A running server: its URL, its data_dir (the store is ``images/`` in it), stop()."""

    def __init__(self, name, url, data_dir, stop):
        self.name, self.url, self.data_dir, self.stop = name, url, str(data_dir), stop

    def store_path(self, image_id):
        return os.path.join(self.data_dir, "images", image_id)


def _start_eventlet(tmp_path, settings=None, origin_stall_s=None):
    server = helpers.ServerProcess(tmp_path, settings=settings,
                                   origin_stall_s=origin_stall_s).start()
    return Served("eventlet", server.url, server.data_dir, server.stop)


def _start_gunicorn(tmp_path, settings=None, origin_stall_s=None):
    url, process = helpers.start_gunicorn(
        tmp_path, "--workers", "2", "--worker-class", "gthread", "--threads", "16",
        "--keep-alive", "300", "--timeout", "0", testing=True, settings=settings,
        origin_stall_s=origin_stall_s)
    return Served("gunicorn", url, tmp_path / "data", lambda: _terminate(process))


def _start_uwsgi(tmp_path, settings=None, origin_stall_s=None):
    url, process, _log = helpers.start_uwsgi(tmp_path, testing=True, settings=settings,
                                             origin_stall_s=origin_stall_s)
    return Served("uwsgi", url, tmp_path / "data", lambda: _terminate(process))


def _terminate(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except Exception:
        process.kill()
        process.wait()


STARTERS = {"eventlet": _start_eventlet, "gunicorn": _start_gunicorn, "uwsgi": _start_uwsgi}


@pytest.fixture(scope="module", params=sorted(STARTERS))
def served(request, tmp_path_factory):
    server = STARTERS[request.param](tmp_path_factory.mktemp(request.param))
    yield server
    server.stop()


def upload(url, data):
    """A new active image with ``data``: its id."""
    return helpers.upload_image(url, data, "fill")


def file_path(image_id):
    return "/v2/images/%s/file" % image_id


def cached_ids(url):
    body = helpers.http_request(url, "GET", "/v2/cache")[2]
    return [entry["image_id"] for entry in json.loads(body)["cached_images"]]


def fetch_all(url, path, count, timeout_s=CLIENT_TIMEOUT_S):
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: fetch(url, path, timeout_s), range(count)))


class SlowClient:
    """GET ``path`` with a tiny receive window, then read the body 1 byte per second."""

    def __init__(self, url, path):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(CLIENT_TIMEOUT_S)
        self.sock.connect((parts.hostname, parts.port))
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: slow\r\n\r\n" % path.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            byte = self.sock.recv(1)
            assert byte, "the server closed the connection before the headers"
            head += byte
        self.head = head.decode("latin-1")
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.wait(1.0):
            try:
                if not self.sock.recv(1):
                    return
            except OSError:
                return
            self.received += 1

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_a_client_reading_1_byte_per_second_holds_up_nobody(served):
    data = os.urandom(SLOW_CLIENT_IMAGE)
    image_id = upload(served.url, data)
    slow = SlowClient(served.url, file_path(image_id))
    try:
        assert "X-Image-Cache: MISS" in slow.head
        results = fetch_all(served.url, file_path(image_id), FOLLOWERS)
        slow_had = slow.received
        for status, kind, body, end in results:
            assert (status, end) == (200, "complete") and body == data
            assert kind in ("COALESCED", "HIT")
        # All of them had every byte while the slow client had read a few: the fill went on
        # at the origin's pace, not at the pace of the client that caused it.
        assert slow_had < 64
    finally:
        slow.close()
    helpers.wait_for(lambda: image_id in cached_ids(served.url), timeout_s=30,
                     what="the fill to be committed")
    assert helpers.origin_reads(served.data_dir, image_id) == ["-"]


def test_a_store_file_shorter_than_its_record_ends_every_connection(served):
    data = os.urandom(3 * MIB + 5)
    image_id = upload(served.url, data)
    half = len(data) // 2
    os.truncate(served.store_path(image_id), half)
    # 10 s is far beyond "at once" and far below the servers' idle timeouts (900 s for the
    # built-in server, 300 s given to gunicorn here): a kept-alive connection shows.
    for status, kind, body, end in fetch_all(served.url, file_path(image_id), 4, 10):
        assert (status, end) == (200, "cut"), kind
        assert body == data[:half]
    assert image_id not in cached_ids(served.url)
    status, kind, body, end = fetch(served.url, file_path(image_id), 10)
    assert (status, kind, end) == (200, "MISS", "cut") and body == data[:half]
    assert image_id not in cached_ids(served.url)


def test_16_concurrent_cold_downloads_read_the_origin_once(served):
    data = os.urandom(4 * MIB + 3)
    image_id = upload(served.url, data)
    results = fetch_all(served.url, file_path(image_id), 16)
    assert all((status, end, body) == (200, "complete", data)
               for status, _, body, end in results)
    kinds = sorted(kind for _, kind, _, _ in results)
    assert kinds.count("MISS") == 1 and kinds.count("COALESCED") + kinds.count("HIT") == 15
    assert helpers.origin_reads(served.data_dir, image_id) == ["-"]


STALL_BOUND_S = 1     # image_cache_follow_idle_timeout of the stall test
ORIGIN_STALL_S = 10   # how long its first origin read stalls


def _stalled_or_gone(served, image_id):
    path = os.path.join(served.data_dir, "image-cache", "incomplete", image_id)
    try:
        return time.time() - os.stat(path).st_mtime > STALL_BOUND_S
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("server_name", sorted(STARTERS))
def test_an_origin_stall_costs_later_requests_nothing(tmp_path, server_name):
    served = STARTERS[server_name](
        tmp_path, settings={"image_cache_follow_idle_timeout": str(STALL_BOUND_S)},
        origin_stall_s=ORIGIN_STALL_S)
    try:
        data = os.urandom(4 * MIB + 1)
        image_id = upload(served.url, data)
        marker = os.path.join(served.data_dir, "origin-%s-" + image_id)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(fetch, served.url, file_path(image_id))
            helpers.wait_for(lambda: helpers.origin_reads(served.data_dir, image_id),
                             timeout_s=30, what="the fill to start")
            helpers.wait_for(lambda: _stalled_or_gone(served, image_id), timeout_s=30,
                             what="the fill to stall for longer than the bound")
            # Not joined to the stalled fill: a fresh one, done while the first origin read
            # is still stalled.
            assert fetch(served.url, file_path(image_id)) == (200, "MISS", data, "complete")
            assert not os.path.exists(marker % "resumed")
            helpers.wait_for(lambda: image_id in cached_ids(served.url), timeout_s=30,
                             what="the fresh fill to be committed")
            assert fetch(served.url, file_path(image_id)) == (200, "HIT", data, "complete")
            # The client of the stalled fill read the rest from the origin, at its offset.
            assert first.result() == (200, "MISS", data, "complete")
        reads = helpers.origin_reads(served.data_dir, image_id)
        assert reads.count("-") == 2 and len(reads) == 3, reads
        assert not os.path.exists(marker % "resumed")
        # The stalled origin wakes up: its fill stops without committing nor invalidating.
        helpers.wait_for(lambda: os.path.exists(marker % "closed"), timeout_s=2 * ORIGIN_STALL_S,
                         what="the stalled fill to end")
        assert fetch(served.url, file_path(image_id)) == (200, "HIT", data, "complete")
        cache_dir = os.path.join(served.data_dir, "image-cache")
        assert os.listdir(os.path.join(cache_dir, "invalid")) == []
        assert [name for name in os.listdir(os.path.join(cache_dir, "incomplete"))
                if image_id in name] == []
    finally:
        served.stop()


# --- the built-in server only -----------------------------------------------------------------

@pytest.mark.parametrize("before_last_byte", ["false", "true"])
def test_flipped_bytes_are_never_cached_nor_a_hit(start_server, before_last_byte):
    server = start_server(settings={"image_cache_verify_before_last_byte": before_last_byte})
    data = os.urandom(3 * MIB)
    image_id = upload(server.url, data)
    with open(os.path.join(server.data_dir, "images", image_id), "r+b") as handle:
        handle.seek(MIB)
        handle.write(bytes([data[MIB] ^ 0xFF]))
    corrupt = data[:MIB] + bytes([data[MIB] ^ 0xFF]) + data[MIB + 1:]
    for _ in range(2):
        for status, kind, body, end in fetch_all(server.url, file_path(image_id), 4, 10):
            assert status == 200 and kind in ("MISS", "COALESCED")
            if end == "complete":
                # Only the client that caused the fill, and only when it is not verified
                # before the last byte (docs/deployment.md), gets all of the origin's bytes.
                assert (kind, before_last_byte, body) == ("MISS", "false", corrupt)
            else:
                assert end == "cut" and len(body) < len(data) and body == corrupt[:len(body)]
        assert image_id not in cached_ids(server.url)


def _delete_during_a_fill(start_server, delete):
    """4 clients start a download of a 4 MiB image read from the origin at 4 MiB/s; once
    the fill is under way ``delete(server, image_id)`` runs. Their results."""
    server = start_server(origin_bytes_per_s=4 * MIB)
    data = os.urandom(4 * MIB)
    image_id = upload(server.url, data)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(fetch, server.url, file_path(image_id))]
        helpers.wait_for(lambda: helpers.origin_reads(server.data_dir, image_id), timeout_s=30,
                         what="the fill to start")
        futures += [pool.submit(fetch, server.url, file_path(image_id)) for _ in range(3)]
        time.sleep(0.3)    # all of them following the fill (and none of them done)
        delete(server, image_id)
        return server, data, image_id, [future.result() for future in futures]


def test_a_cache_delete_during_a_fill_lets_its_clients_finish(start_server):
    def delete(server, image_id):
        assert server.request("DELETE", "/v2/cache/%s" % image_id)[0] in (200, 204)

    server, data, image_id, results = _delete_during_a_fill(start_server, delete)
    for status, kind, body, end in results:
        assert (status, end) == (200, "complete") and body == data, (kind, end)
    assert image_id not in cached_ids(server.url)


def test_an_image_delete_during_a_fill_never_answers_500(start_server):
    def delete(server, image_id):
        assert server.request("DELETE", "/v2/images/%s" % image_id)[0] == 204

    server, data, image_id, results = _delete_during_a_fill(start_server, delete)
    for status, kind, body, end in results:
        # The store file is gone but the fill has it open: every byte, or a clean cut.
        assert status == 200 and end in ("complete", "cut"), (kind, end)
        assert body == data[:len(body)]
    assert image_id not in cached_ids(server.url)
