"""Cache hits sent with wsgi.file_wrapper: glance-cache-mw-api (sendfile through
cmd/sendfile.py) and gunicorn, real servers in subprocesses, real HTTP, an 8 MiB image (more
than one sendfile call: loopback's send buffer is at most 4 MiB)."""

import hashlib
import http.client
import os
import signal
import socket
import time

import pytest

from tests.functional import server as helpers

SIZE = 8 * 1024 * 1024
DATA = os.urandom(SIZE)
RANGES = [("bytes=1000-5000999", 1000, 5_001_000), ("bytes=-4096", SIZE - 4096, SIZE),
          ("bytes=8000000-", 8_000_000, SIZE), ("bytes=0-0", 0, 1)]


wait_for = helpers.wait_for


def upload(url, data):
    """Create an image, upload ``data``; return the path of its data."""
    return "/v2/images/%s/file" % helpers.upload_image(url, data, "sendfile")


def cache_it(url, path):
    """Download once (MISS, the fill) and wait until the image is a HIT."""
    status, headers, body = helpers.http_request(url, "GET", path)
    assert (status, headers["x-image-cache"], body == DATA) == (200, "MISS", True)
    wait_for(lambda: helpers.http_request(url, "HEAD", path)[1]["x-image-cache"] == "HIT",
             what="the fill to commit")


def md5(data):
    return hashlib.md5(data).hexdigest()


# --- glance-cache-mw-api --------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A --debug server (its sendfile path logs each body) with the image cached: (server, path)."""
    process = helpers.ServerProcess(tmp_path_factory.mktemp("sendfile"), testing=False,
                                    extra_args=["--debug"]).start()
    try:
        path = upload(process.url, DATA)
        cache_it(process.url, path)
        yield process, path
    finally:
        process.stop()


def log_lines(server, fragment):
    return [line for line in server.stderr().splitlines() if fragment in line]


def test_a_hit_is_the_image_sent_with_sendfile(server):
    process, path = server
    before = len(log_lines(process, "sent %d bytes with sendfile" % SIZE))
    status, headers, body = process.request("GET", path)
    assert (status, headers["x-image-cache"], headers["content-length"]) == (200, "HIT",
                                                                             str(SIZE))
    assert md5(body) == md5(DATA) and body == DATA
    wait_for(lambda: len(log_lines(process, "sent %d bytes with sendfile" % SIZE)) > before,
             what="the sendfile debug line")


@pytest.mark.parametrize("header, start, end", RANGES)
def test_a_range_hit_is_sent_with_sendfile(server, header, start, end):
    process, path = server
    fragment = "sent %d bytes with sendfile" % (end - start)
    before = len(log_lines(process, fragment))
    status, headers, body = process.request("GET", path, headers={"Range": header})
    assert (status, headers["x-image-cache"]) == (206, "HIT")
    assert headers["content-range"] == "bytes %d-%d/%d" % (start, end - 1, SIZE)
    assert body == DATA[start:end]
    wait_for(lambda: len(log_lines(process, fragment)) > before, what="the sendfile line")


def test_a_head_hit_has_no_body(server):
    process, path = server
    status, headers, body = process.request("HEAD", path)
    assert (status, headers["x-image-cache"], headers["content-length"], body) == (
        200, "HIT", str(SIZE), b"")


def test_two_hits_on_one_keep_alive_connection(server):
    process, path = server
    conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=30)
    try:
        conn.request("GET", path)
        first = conn.getresponse()
        first_body = first.read()
        sock = conn.sock
        assert not first.will_close and sock is not None
        conn.request("GET", path, headers={"Range": "bytes=4096-"})
        second = conn.getresponse()
        second_body = second.read()
        assert conn.sock is sock                 # the same connection, not a reconnect
    finally:
        conn.close()
    assert (first.status, first.getheader("X-Image-Cache"), first_body) == (200, "HIT", DATA)
    assert (second.status, second_body) == (206, DATA[4096:])


def test_a_client_gone_mid_hit_does_not_hurt_the_worker(server):
    process, path = server
    sock = socket.socket()
    # A small receive window: the server blocks in sendfile long before the end.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", process.port))
        sock.sendall(b"GET %s?gone=1 HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        time.sleep(0.3)                          # let the server fill the window and wait
    finally:
        sock.close()                             # unread data: the server gets a reset
    wait_for(lambda: log_lines(process, '"GET %s?gone=1" 200' % path), what="access log")
    line = log_lines(process, '"GET %s?gone=1" 200' % path)[0]
    assert line.endswith("cache=HIT")
    assert int(line.split('" 200 ')[1].split()[0]) < SIZE
    assert log_lines(process, "went away after")
    status, headers, body = process.request("GET", path)
    assert (status, headers["x-image-cache"], body == DATA) == (200, "HIT", True)


# --- gunicorn --------------------------------------------------------------------------------

@pytest.mark.parametrize("sendfile_args", [[], ["--no-sendfile"]], ids=["sendfile", "no-sendfile"])
def test_range_hits_under_gunicorn_are_the_image_bytes(tmp_path, sendfile_args):
    url, process = helpers.start_gunicorn(tmp_path, "--workers", "1", "--worker-class",
                                          "gthread", "--threads", "4", *sendfile_args)
    try:
        path = upload(url, DATA)
        cache_it(url, path)
        for header, start, end in RANGES:
            status, headers, body = helpers.http_request(url, "GET", path,
                                                         headers={"Range": header})
            assert (status, headers["x-image-cache"]) == (206, "HIT"), header
            assert headers["content-length"] == str(end - start)
            assert body == DATA[start:end], header
        status, headers, body = helpers.http_request(url, "GET", path)
        assert (status, headers["x-image-cache"], body == DATA) == (200, "HIT", True)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
