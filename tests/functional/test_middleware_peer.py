"""The peer endpoint (middleware/peer.py) on a real server process, with real HTTP clients.

One node in cluster mode (centralized_db driver, cluster_secret): signed GETs of a cached image
(sendfile, Range) and of an image whose fill is in progress (its origin stalls after the first
chunk: tests/functional/server.py StallOnce) get the image's bytes; unsigned, expired and
forged requests, tenants' credentials (noauth and context flavor headers, a keystone flavor
token) and a node with cluster mode off get 403 with a reason, while the same tenant gets 404
from the images API for another project's private image.
"""

import concurrent.futures
import configparser
import io
import json
import os
import time
import urllib.parse

import pytest

from glance_cache_mw import cluster
from glance_cache_mw.cluster import signing
from tests.functional import server as helpers

pytestmark = pytest.mark.realservice

MIB = 1024 * 1024
SECRET = "the-cluster-secret-of-the-tests"
ASKING_NODE = "http://127.0.0.1:1"
TTL_S = 30
ORIGIN_STALL_S = 3   # the first origin read of each image stalls that long after 1 chunk


def _cluster_settings(node_url="http://127.0.0.1:9292"):
    return {"image_cache_driver": "centralized_db", "worker_self_reference_url": node_url,
            "cluster_secret": SECRET, "chunk_size": str(256 * 1024)}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A noauth node in cluster mode whose origin stalls on each image's first read."""
    server = helpers.ServerProcess(tmp_path_factory.mktemp("peer"), settings=_cluster_settings(),
                                   origin_stall_s=ORIGIN_STALL_S).start()
    yield server
    server.stop()


def peer_get(server, image_id, headers=None, method="GET", secret=SECRET, now=None):
    """A request to the peer endpoint, signed with ``secret`` unless ``headers`` is given."""
    path = cluster.peer_path(image_id)
    if headers is None:
        headers = signing.signed_headers(secret, method, path, image_id, ASKING_NODE, TTL_S,
                                         now=now)
    return server.request(method, path, headers=headers)


def _cached_image(server, size=MIB + 7):
    """A new image, downloaded once (its fill committed): (id, bytes)."""
    data = os.urandom(size)
    image_id = helpers.upload_image(server.url, data, "peer")
    status, _, body = server.request("GET", "/v2/images/%s/file" % image_id, timeout_s=60)
    assert (status, body) == (200, data)
    helpers.wait_for(lambda: _is_cached(server, image_id), timeout_s=30,
                     what="the fill to be committed")
    return image_id, data


def _is_cached(server, image_id):
    body = server.request("GET", "/v2/cache")[2]
    return image_id in [entry["image_id"] for entry in json.loads(body)["cached_images"]]


def _refusal(response):
    status, headers, body = response
    assert status == 403, (status, body)
    assert headers["content-type"].startswith("text/plain") or b"Forbidden" in body
    return body.decode()


def _peer_metrics(server):
    """(peer_requests_total{outcome="hit"}, peer_bytes_served_total) from GET /metrics."""
    text = server.request("GET", "/metrics")[2].decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith("glance_cache_mw_peer_"))
    return (float(values['glance_cache_mw_peer_requests_total{outcome="hit"}']),
            float(values["glance_cache_mw_peer_bytes_served_total"]))


def test_a_signed_get_of_a_cached_image_gets_its_bytes(node):
    image_id, data = _cached_image(node)
    hits, served = _peer_metrics(node)
    status, headers, body = peer_get(node, image_id)
    assert (status, headers["x-image-cache"], body) == (200, "PEER-HIT", data)
    assert int(headers["content-length"]) == len(data)
    assert _peer_metrics(node) == (hits + 1, served + len(data))
    status, headers, body = peer_get(node, image_id, method="HEAD")
    assert (status, headers["x-image-cache"], body) == (200, "PEER-HIT", b"")
    assert int(headers["content-length"]) == len(data)


@pytest.mark.parametrize("range_header, first, last", [
    ("bytes=1000-", 1000, MIB + 6), ("bytes=5-9", 5, 9), ("bytes=-100", MIB - 93, MIB + 6)])
def test_a_range_of_a_cached_image_is_206(node, range_header, first, last):
    image_id, data = _cached_image(node, size=MIB + 7)
    headers = signing.signed_headers(SECRET, "GET", cluster.peer_path(image_id), image_id,
                                     ASKING_NODE, TTL_S)
    status, answer, body = peer_get(node, image_id, {**headers, "Range": range_header})
    assert (status, answer["x-image-cache"], body) == (206, "PEER-HIT", data[first:last + 1])
    assert answer["content-range"] == "bytes %d-%d/%d" % (first, last, len(data))
    status, _, _ = peer_get(node, image_id, {**headers, "Range": "bytes=%d-" % len(data)})
    assert status == 416


def test_a_signed_get_during_a_fill_streams_the_growing_file(node):
    data = os.urandom(3 * MIB + 5)
    image_id = helpers.upload_image(node.url, data, "filling")
    incomplete = os.path.join(node.data_dir, "image-cache", "incomplete", image_id)
    offset = 2 * MIB   # beyond what the stalled fill has written: waits for the file to grow
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        client = pool.submit(node.request, "GET", "/v2/images/%s/file" % image_id,
                             timeout_s=60)
        helpers.wait_for(lambda: os.path.exists(incomplete) and os.path.getsize(incomplete),
                         timeout_s=30, what="the fill's first chunk")
        assert os.path.getsize(incomplete) < offset
        whole = pool.submit(peer_get, node, image_id)
        headers = signing.signed_headers(SECRET, "GET", cluster.peer_path(image_id), image_id,
                                         ASKING_NODE, TTL_S)
        tail = pool.submit(peer_get, node, image_id, {**headers, "Range": "bytes=%d-" % offset})
        middle = pool.submit(peer_get, node, image_id,
                             {**headers, "Range": "bytes=%d-%d" % (offset, offset + 99)})
        status, answer, body = whole.result()
        assert (status, answer["x-image-cache"], body) == (200, "PEER-FILL", data)
        status, answer, body = tail.result()
        assert (status, answer["x-image-cache"], body) == (206, "PEER-FILL", data[offset:])
        assert answer["content-range"] == "bytes %d-%d/%d" % (offset, len(data) - 1, len(data))
        status, answer, body = middle.result()
        assert (status, answer["x-image-cache"], body) == (206, "PEER-FILL",
                                                           data[offset:offset + 100])
        assert client.result()[::2] == (200, data)
    assert helpers.origin_reads(node.data_dir, image_id) == ["-"]   # the peers read no origin


def test_a_fill_that_fails_verification_cuts_the_peers_connection(node):
    """The fill's bytes do not match the image's hash (a flipped byte in the store): the peer
    following it never gets the last bytes, so it can never take the body for complete."""
    data = os.urandom(2 * MIB + 3)
    image_id = helpers.upload_image(node.url, data, "corrupt")
    with open(os.path.join(node.data_dir, "images", image_id), "r+b") as handle:
        handle.seek(MIB)
        handle.write(bytes([data[MIB] ^ 0xFF]))
    incomplete = os.path.join(node.data_dir, "image-cache", "incomplete", image_id)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        client = pool.submit(node.request, "GET", "/v2/images/%s/file" % image_id,
                             timeout_s=60)
        helpers.wait_for(lambda: os.path.exists(incomplete) and os.path.getsize(incomplete),
                         timeout_s=30, what="the fill's first chunk")
        path = cluster.peer_path(image_id)
        signed = signing.signed_headers(SECRET, "GET", path, image_id, ASKING_NODE, TTL_S)
        status, kind, body, end = pool.submit(helpers.fetch, node.url, path,
                                              headers=signed).result()
        client.result()
    assert (status, kind, end) == (200, "PEER-FILL", "cut")
    corrupt = data[:MIB] + bytes([data[MIB] ^ 0xFF]) + data[MIB + 1:]
    assert len(body) < len(data) and body == corrupt[:len(body)]
    assert not os.path.exists(os.path.join(node.data_dir, "image-cache", image_id))


def test_an_image_neither_cached_nor_filling_is_404(node):
    image_id = helpers.upload_image(node.url, b"never downloaded", "cold")
    status, _, body = peer_get(node, image_id)
    assert status == 404 and b"neither cached nor being cached" in body
    assert helpers.origin_reads(node.data_dir, image_id) == []


@pytest.mark.parametrize("image_id", ["a" * 37, ".hidden", "incomplete", "a..b"])
def test_a_malformed_image_id_is_404(node, image_id):
    status, _, body = peer_get(node, image_id)
    assert status == 404, body


def test_unsigned_expired_and_forged_requests_are_403_with_the_reason(node):
    image_id, _ = _cached_image(node, size=1000)
    assert "unsigned request" in _refusal(peer_get(node, image_id, headers={}))
    expired = peer_get(node, image_id, now=time.time() - 2 * TTL_S)
    assert "signature expired" in _refusal(expired)
    assert "bad signature" in _refusal(peer_get(node, image_id, secret="a-forged-secret-value"))
    signed = signing.signed_headers(SECRET, "GET", cluster.peer_path(image_id), image_id,
                                    ASKING_NODE, TTL_S)
    tampered = {**signed, signing.NODE_HEADER: "http://127.0.0.1:2"}
    assert "bad signature" in _refusal(peer_get(node, image_id, headers=tampered))
    other_id = helpers.upload_image(node.url, b"x", "other")   # one image's signature only
    assert "bad signature" in _refusal(peer_get(node, other_id, headers=signed))


def test_a_tenants_noauth_headers_open_nothing(node):
    image_id, _ = _cached_image(node, size=1000)
    tenant = {"X-Project-Id": "tenant-a", "X-User-Id": "alice", "X-Roles": "admin"}
    assert "unsigned request" in _refusal(peer_get(node, image_id, headers=tenant))


def _context_headers(project, roles="member"):
    return {"X-Identity-Status": "Confirmed", "X-User-Id": "user-" + project,
            "X-Project-Id": project, "X-Roles": roles}


def _upload_private(server, project, data):
    headers = {**_context_headers(project), "Content-Type": "application/json"}
    status, _, body = server.request("POST", "/v2/images", json.dumps(
        {"name": "private", "disk_format": "raw", "container_format": "bare",
         "visibility": "private"}).encode(), headers)
    assert status == 201, body
    image_id = json.loads(body)["id"]
    headers = {**_context_headers(project), "Content-Type": "application/octet-stream"}
    assert server.request("PUT", "/v2/images/%s/file" % image_id, data, headers)[0] == 204
    return image_id


def test_a_tenant_gets_403_at_the_peer_endpoint_and_404_at_the_images_api(start_server):
    """The context flavor (identity headers from a trusted proxy): tenant B may not see
    project A's private image; neither the peer endpoint nor the images API gives it out."""
    server = start_server(flavor="context", settings=_cluster_settings())
    data = os.urandom(4096)
    image_id = _upload_private(server, "project-a", data)
    owner = _context_headers("project-a")
    assert server.request("GET", "/v2/images/%s/file" % image_id, headers=owner)[::2] \
        == (200, data)
    helpers.wait_for(lambda: os.path.exists(
        os.path.join(server.data_dir, "image-cache", image_id)), what="the fill to commit")
    for headers in (_context_headers("project-b"), _context_headers("project-b", "admin"),
                    {**_context_headers("project-b"), "X-Auth-Token": "a-token"}):
        assert "unsigned request" in _refusal(peer_get(server, image_id, headers=headers))
    status, _, body = server.request("GET", "/v2/images/%s/file" % image_id,
                                     headers=_context_headers("project-b"))
    assert status == 404, body


def test_a_keystone_token_opens_nothing(start_server, tmp_path):
    """The keystone flavor (Keystone itself is not needed: the peer filter comes before
    auth_token): a token, with or without forged identity headers, is refused at the peer
    endpoint as unsigned, while the images API sends it to auth_token (401)."""
    path = helpers.write_config(tmp_path / "keystone.ini", tmp_path / "data", flavor="keystone",
                                settings=_cluster_settings(), testing=False)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    nowhere = "http://127.0.0.1:%d" % helpers.free_port()
    for key, value in {"www_authenticate_uri": nowhere, "auth_url": nowhere,
                       "auth_type": "password", "username": "glance", "password": "secret",
                       "project_name": "service", "user_domain_name": "Default",
                       "project_domain_name": "Default", "http_connect_timeout": "2",
                       "http_request_max_retries": "0"}.items():
        parser.set("filter:authtoken", key, value)
    text = io.StringIO()
    parser.write(text)
    server = start_server(ini_text=text.getvalue())
    image_id = "0b6f3b57-9b0f-4f27-8d7d-3b2a1f4e9c10"
    token = {"X-Auth-Token": "a-tenants-token"}
    forged = {**token, **_context_headers("project-b", "admin")}
    for headers in (token, forged):
        assert "unsigned request" in _refusal(peer_get(server, image_id, headers=headers))
        status, _, _ = server.request("GET", "/v2/images/%s/file" % image_id, headers=headers)
        assert status in (401, 503)   # auth_token: invalid token, or Keystone unreachable


def test_with_cluster_mode_off_every_peer_request_is_403(start_server):
    server = start_server()   # the sqlite driver, no cluster_secret
    data = os.urandom(4096)
    image_id = helpers.upload_image(server.url, data, "single")
    assert server.request("GET", "/v2/images/%s/file" % image_id)[::2] == (200, data)
    assert "cluster mode is off" in _refusal(peer_get(server, image_id))
    assert "cluster mode is off" in _refusal(peer_get(server, image_id, headers={}))


def test_other_methods_are_405(node):
    image_id, _ = _cached_image(node, size=1000)
    status, headers, _ = node.request("DELETE", cluster.peer_path(image_id))
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_a_peer_read_of_a_cached_copy_counts_as_a_hit_of_that_copy(node):
    """docs/cluster.md, "Database load": the hits and last access of the serving node's
    cached_images row count peer reads (the pruner keeps a copy the cluster reads from)."""
    image_id, data = _cached_image(node, size=5000)
    assert _hits(node, image_id) == 0   # the download that filled it was a miss
    assert peer_get(node, image_id)[::2] == (200, data)
    helpers.wait_for(lambda: _hits(node, image_id) == 1, timeout_s=30,
                     what="the peer read to be recorded as a hit")


def _hits(server, image_id):
    body = server.request("GET", "/v2/cache")[2]
    return {entry["image_id"]: entry["hits"]
            for entry in json.loads(body)["cached_images"]}[image_id]


def test_a_newline_in_the_path_cannot_start_a_log_line(start_server):
    """A refused request's id is logged as a repr, on one line: a client cannot forge log
    lines (a fresh node: its first refusal is logged at WARNING, not rate-limited away)."""
    server = start_server(settings=_cluster_settings())
    forged_id = "x\nFORGED-LINE node 1 ok\r\x1b[2K"
    path = cluster.peer_path(urllib.parse.quote(forged_id))
    assert "unsigned request" in _refusal(server.request("GET", path))
    log = server.stderr()
    assert "refused peer request for image %r" % forged_id in log, log
    assert not [line for line in log.splitlines() if line.startswith("FORGED-LINE")], log
    assert "\r" not in log and "\x1b" not in log
