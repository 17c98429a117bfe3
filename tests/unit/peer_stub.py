"""A stand-in for a peer node's endpoint: a real HTTP server on 127.0.0.1 in a thread.

It checks each request's signature with cluster/signing.py, as middleware/peer.py does, and
serves ``DATA`` as image ``IMAGE_ID`` (Range: bytes=N- or bytes=N-M → 206), or misbehaves as
its ``mode`` says: "silent" (half the body, then nothing), "reset" (half, then RST), "short"
(half, then FIN), "status" (404), "ignore-range" (200 from byte 0 whatever the Range),
"ignore-end" (206 from the range's start to the image's end, whatever its end), "trickle" (every
byte, in pieces of ``TRICKLE_PIECE`` bytes ``TRICKLE_PAUSE_S`` apart: about 200 KiB/s). ``data``
may be replaced (e.g. by other bytes of the same size: a corrupt peer). The request's path is
percent-decoded as UTF-8 before its signature is checked, as a peer's WSGI server and endpoint
do. Used by tests/unit/test_cluster_client.py, test_cluster_source.py and test_cluster_proxy.py.

The server classes are imported with ``from http.server import``, not reached as
``http.server.X``: once anything in the process imported eventlet.wsgi (the SendfileProtocol
cases do), the ``http`` package's ``server`` attribute is eventlet's green copy of the module
(eventlet's patcher.inject restores sys.modules, not the package attribute). Its threading
server starts each handler as a green thread in the serving thread, which never yields to a hub:
requests were accepted and never answered.
"""

import os
import re
import socket
import struct
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from glance_cache_mw import cluster
from glance_cache_mw.cluster import signing

SECRET = "s" * 32
NODE = "http://asking-node:9292"
IMAGE_ID = "0b2c1d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
DATA = os.urandom(300 * 1024 + 7)
TTL_S = 30
TRICKLE_PIECE = 4096
TRICKLE_PAUSE_S = 0.02
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        peer = self.server.peer
        peer.requests.append(dict(self.headers))
        path = urllib.parse.unquote(self.path, errors="strict")
        reason = signing.verify(SECRET, "GET", path, IMAGE_ID, self.headers, TTL_S)
        if path != cluster.peer_path(IMAGE_ID) or reason:
            return self._answer(403, reason or "wrong path")
        if peer.mode == "status":
            return self._answer(404, "not here")
        match = _RANGE.match(self.headers.get("Range", ""))
        size = len(peer.data)
        start, last = 0, size - 1
        if match and peer.mode != "ignore-range":
            start = int(match.group(1))
            if match.group(2) and peer.mode != "ignore-end":
                last = min(int(match.group(2)), size - 1)
        partial = (start, last) != (0, size - 1)
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(last + 1 - start))
        if partial:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, last, size))
        self.end_headers()
        body = peer.data[start:last + 1]
        if peer.mode in ("serve", "ignore-range"):
            self.wfile.write(body)
            return
        if peer.mode == "trickle":
            for start in range(0, len(body), TRICKLE_PIECE):
                self.wfile.write(body[start:start + TRICKLE_PIECE])
                self.wfile.flush()
                if peer.release.wait(TRICKLE_PAUSE_S):
                    break   # the test is over
            self.close_connection = True
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


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass   # a client that left (the reader closes early on purpose)


class Peer:
    """A peer endpoint stand-in; ``mode`` says how it answers. It serves from its own loop
    (not serve_forever), so that close() is bounded whatever state the threads are in."""

    def __init__(self):
        self.mode = "serve"
        self.data = DATA
        self.requests = []
        self.release = threading.Event()
        self._stop = threading.Event()
        self.server = QuietServer(("127.0.0.1", 0), PeerHandler)
        self.server.timeout = 0.05
        self.server.peer = self
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            self.server.handle_request()

    def close(self):
        self.release.set()
        self._stop.set()
        self.thread.join(5)
        self.server.server_close()
