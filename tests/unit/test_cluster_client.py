"""cluster/client.py's PeerReader against a real HTTP server on 127.0.0.1 in a thread.

The server (tests/unit/peer_stub.py) checks each request's signature with cluster/signing.py
(as a peer endpoint does) and misbehaves on demand: it stops sending (timeout), resets the
connection, ends short of its Content-Length, answers an error status, or ignores the Range.
Every failure must be a PeerError naming the peer and the offset reached; a good peer's bytes
arrive whole.
"""

import threading
import time
import wsgiref.simple_server

import pytest

from glance_cache_mw import cluster
from glance_cache_mw.cluster import client, signing
from glance_cache_mw.middleware import peer as peer_mw
from tests.functional.serving import free_port
from tests.unit import cache_helpers
from tests.unit.peer_stub import DATA, IMAGE_ID, NODE, SECRET, TTL_S, Peer


@pytest.fixture
def peer():
    server = Peer()
    yield server
    server.close()


def reader(url, offset=0, secret=SECRET, timeout_s=5, size=len(DATA), end=None):
    return client.PeerReader(url, IMAGE_ID, offset, secret, NODE, timeout_s, chunk_size=65536,
                             size=size, ttl_s=TTL_S, end=end)


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


@pytest.mark.parametrize("offset, end", [(0, 1), (0, 70000), (5, 10), (65536, len(DATA) - 1),
                                         (len(DATA) - 1, len(DATA))])
def test_a_bounded_read_asks_for_that_range_and_gets_exactly_it(peer, offset, end):
    peer_reader = reader(peer.url, offset, end=end)
    assert read_all(peer_reader) == DATA[offset:end]
    assert peer_reader.offset == end
    assert peer.requests[0]["Range"] == "bytes=%d-%d" % (offset, end - 1)


def test_a_peer_that_sends_past_the_end_asked_for_is_not_trusted(peer):
    peer.mode = "ignore-end"
    err, got = failure(reader(peer.url, offset=100, end=200))
    assert got == b"" and "sends bytes 100-%d, not 100-199" % (len(DATA) - 1) in str(err)


def test_a_whole_image_for_a_range_from_0_is_read_up_to_its_end_only(peer):
    peer.mode = "ignore-end"   # 200 with every byte: the range's bytes are its first ones
    peer_reader = reader(peer.url, 0, end=1000)
    assert read_all(peer_reader) == DATA[:1000] and peer_reader.offset == 1000


def test_a_bounded_read_of_a_peer_with_another_size_is_not_trusted(peer):
    err, got = failure(reader(peer.url, offset=10, end=20, size=len(DATA) + 1))
    assert got == b"" and str(len(DATA) + 1) in str(err)


def test_an_end_not_after_the_offset_is_a_programming_error():
    with pytest.raises(ValueError, match="end=5 is not after offset=5"):
        reader("http://127.0.0.1:1", 5, end=5)


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


def test_a_request_that_cannot_be_made_for_an_id_is_a_peer_error():
    # A lone surrogate is text Python holds but no UTF-8 (or request line) can carry.
    err, got = failure(client.PeerReader("http://127.0.0.1:1", "bad-\udcff", 0, SECRET, NODE, 5))
    assert got == b"" and err.peer_url == "http://127.0.0.1:1" and err.status is None
    assert "UnicodeEncodeError" in str(err)


def test_a_peer_url_with_a_bad_port_is_a_peer_error():
    err, _ = failure(reader("http://127.0.0.1:99999"))
    assert err.peer_url == "http://127.0.0.1:99999" and "port" in str(err).lower()


# -- ids with reserved and non-ASCII characters, against the real peer endpoint -------------

ODD_IDS = ["a b", "100%", "%2Fx", "a?b=c", "a#b", "caf\u00e9-\u4e2d", "a b%c?d#\u00e9"]


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(tmp_path):
    """middleware/peer.py's PeerFilter in front of a real cache (sqlite driver) holding each
    of ODD_IDS, under the standard library's WSGI server on 127.0.0.1 (which, as eventlet,
    gunicorn and uWSGI do, hands the percent-decoded path over as PEP 3333 latin-1 text)."""
    cache = cache_helpers.make_cache(tmp_path)
    for image_id in ODD_IDS:
        data = image_id.encode("utf-8") * 1000
        assert cache.cache_image_iter(image_id, iter([data]), len(data),
                                      **cache_helpers.hashes(data))

    def not_peer(environ, start_response):
        start_response("418 I'm a teapot", [("Content-Length", "0")])
        return [b""]
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, peer_mw.PeerFilter(not_peer, cache, SECRET, ttl_s=TTL_S),
        handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("image_id", ODD_IDS)
def test_an_odd_id_is_percent_encoded_and_its_signature_holds_at_the_peer(endpoint, image_id):
    data = image_id.encode("utf-8") * 1000
    peer_reader = client.PeerReader(endpoint, image_id, 3, SECRET, NODE, 5, size=len(data),
                                    ttl_s=TTL_S)
    assert read_all(peer_reader) == data[3:]


def test_the_wire_path_keeps_every_reserved_character_in_the_id():
    assert client.wire_peer_path("a b%c?d#/\u00e9") == \
        "/cluster/v1/images/a%20b%25c%3Fd%23%2F%C3%A9/file"
    assert client.wire_peer_path(IMAGE_ID) == cluster.peer_path(IMAGE_ID)


# -- cluster_peer_min_rate ------------------------------------------------------------------

def test_a_peer_under_the_minimum_rate_fails_at_the_offset_reached(peer):
    peer.mode = "trickle"   # ~200 KiB/s
    peer_reader = client.PeerReader(peer.url, IMAGE_ID, 0, SECRET, NODE, 0.5, size=len(DATA),
                                    ttl_s=TTL_S, min_rate=4 * 1024 * 1024)
    err, got = failure(peer_reader)
    assert got == DATA[:len(got)] and 0 < len(got) < len(DATA)
    assert err.offset == len(got) and err.peer_url == peer.url
    assert "KiB/s, under cluster_peer_min_rate (4096.0 KiB/s)" in str(err)


def test_a_slow_reader_of_a_fast_peer_is_not_failed_by_the_minimum_rate(peer):
    # Read at ~16 KiB per 50 ms (~320 KiB/s of wall time, for over a second, i.e. more than
    # two rate windows): only the time spent waiting for the peer counts, and it had sent.
    peer_reader = client.PeerReader(peer.url, IMAGE_ID, 0, SECRET, NODE, 0.5, 16384,
                                    size=len(DATA), ttl_s=TTL_S, min_rate=4 * 1024 * 1024)
    got = []
    try:
        for chunk in peer_reader:
            got.append(chunk)
            time.sleep(0.05)
    finally:
        peer_reader.close()
    assert b"".join(got) == DATA
