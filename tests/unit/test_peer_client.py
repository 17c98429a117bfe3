"""cluster/client.py's PeerReader against a real HTTP server on 127.0.0.1 in a thread.

The server checks each request's signature with cluster/signing.py (as a peer endpoint does)
and misbehaves on demand: it stops sending (timeout), resets the connection, ends short of
its Content-Length, answers an error status, or ignores the Range. Every failure must be a
PeerError naming the peer and the offset reached; a good peer's bytes arrive whole.
"""

import http.server
import os
import re
import socket
import struct
import threading

import pytest

from glance_cache_mw import cluster
from glance_cache_mw.cluster import client, signing
from tests.functional.serving import free_port

SECRET = "s" * 32
NODE = "http://asking-node:9292"
IMAGE_ID = "0b2c1d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
DATA = os.urandom(300 * 1024 + 7)
TTL_S = 30
_RANGE = re.compile(r"^bytes=(\d+)-$")


class PeerHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        peer = self.server.peer
        peer.requests.append(dict(self.headers))
        reason = signing.verify(SECRET, "GET", self.path, IMAGE_ID, self.headers, TTL_S)
        if self.path != cluster.peer_path(IMAGE_ID) or reason:
            return self._answer(403, reason or "wrong path")
        if peer.mode == "status":
            return self._answer(404, "not here")
        match = _RANGE.match(self.headers.get("Range", ""))
        start = int(match.group(1)) if match and peer.mode != "ignore-range" else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(DATA) - start))
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(DATA) - 1,
                                                                  len(DATA)))
        self.end_headers()
        body = DATA[start:]
        if peer.mode in ("serve", "ignore-range"):
            self.wfile.write(body)
            return
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        if peer.mode == "silent":
            peer.release.wait(10)
        elif peer.mode == "reset":   # SO_LINGER 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        self.close_connection = True

    def _answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass   # a client that left (the reader closes early on purpose)


class Peer:
    """A peer endpoint stand-in; ``mode`` says how it answers."""

    def __init__(self):
        self.mode = "serve"
        self.requests = []
        self.release = threading.Event()
        self.server = QuietServer(("127.0.0.1", 0), PeerHandler)
        self.server.peer = self
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer():
    server = Peer()
    yield server
    server.close()


def reader(url, offset=0, secret=SECRET, timeout_s=5, size=len(DATA)):
    return client.PeerReader(url, IMAGE_ID, offset, secret, NODE, timeout_s, chunk_size=65536,
                             size=size, ttl_s=TTL_S)


def read_all(peer_reader):
    try:
        return b"".join(peer_reader)
    finally:
        peer_reader.close()


def failure(peer_reader):
    """The PeerError reading ``peer_reader`` raises, and the bytes that came before it."""
    got = []
    with pytest.raises(client.PeerError) as caught:
        try:
            for chunk in peer_reader:
                got.append(chunk)
        finally:
            peer_reader.close()
    return caught.value, b"".join(got)


def test_a_signed_read_of_the_whole_image(peer):
    assert read_all(reader(peer.url)) == DATA
    assert peer.requests[0][signing.NODE_HEADER] == NODE
    assert peer.requests[0]["Range"] == "bytes=0-"


@pytest.mark.parametrize("offset", [1, 65536, len(DATA) - 1])
def test_a_read_from_an_offset_asks_for_a_range(peer, offset):
    peer_reader = reader(peer.url, offset)
    assert read_all(peer_reader) == DATA[offset:]
    assert peer_reader.offset == len(DATA)
    assert peer.requests[0]["Range"] == "bytes=%d-" % offset


def test_a_peer_that_stops_sending_times_out(peer):
    peer.mode = "silent"
    err, got = failure(reader(peer.url, timeout_s=0.5))
    assert got == DATA[:len(got)] and 0 < len(got) < len(DATA)
    assert err.peer_url == peer.url and err.offset == len(got)
    assert "timed out" in str(err) or "Timeout" in str(err)


def test_a_reset_connection_fails_at_the_offset_reached(peer):
    peer.mode = "reset"
    err, got = failure(reader(peer.url))
    assert got == DATA[:len(got)] and len(got) < len(DATA)
    assert err.offset == len(got) and peer.url in str(err)


def test_a_body_shorter_than_its_content_length_fails(peer):
    peer.mode = "short"
    err, got = failure(reader(peer.url, offset=10))
    assert got == DATA[10:10 + len(got)]
    assert err.offset == 10 + len(got) < len(DATA)
    assert "ended at byte %d" % err.offset in str(err)


def test_an_error_status_fails_with_that_status(peer):
    peer.mode = "status"
    err, got = failure(reader(peer.url))
    assert got == b"" and err.status == 404 and err.offset == 0


def test_a_wrong_secret_is_refused_by_the_peer(peer):
    err, _ = failure(reader(peer.url, secret="t" * 32))
    assert err.status == 403


def test_a_peer_that_ignores_the_range_is_not_trusted(peer):
    peer.mode = "ignore-range"
    err, got = failure(reader(peer.url, offset=100))
    assert got == b"" and "from byte 0, not 100" in str(err)


def test_a_peer_with_another_size_is_not_trusted(peer):
    err, got = failure(reader(peer.url, size=len(DATA) + 1))
    assert got == b"" and str(len(DATA) + 1) in str(err)


def test_a_peer_nobody_listens_on_fails_at_connect():
    url = "http://127.0.0.1:%d" % free_port()
    err, got = failure(reader(url))
    assert got == b"" and err.peer_url == url and err.status is None
