"""python-glanceclient 4.x against real servers on 127.0.0.1:0.

Two servers run the same tests: tests/functional/serve_app.py (the images app alone) and
``glance-cache-mw-api`` with the ``context`` flavor (context → cache management → cache filter →
images app), so every download below also goes through the cache. Each client is
``glanceclient.Client(endpoint=ENDPOINT/v2, token=...)`` (the version in the URL, as the client
asks) with identity headers naming its project.
"""

import hashlib
import io
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

glanceclient = pytest.importorskip("glanceclient")
from glanceclient import exc  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve_app(data_dir):
    """tests/functional/serve_app.py: the images app alone, context from identity headers."""
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.functional.serve_app", "--data-dir", str(data_dir)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=log)
    try:
        line = proc.stdout.readline().decode().strip()
        if not line.isdigit():
            proc.wait(timeout=10)
            pytest.fail("server did not start: %s" % log_path.read_text())
        yield "http://127.0.0.1:%s" % line, data_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def _pipeline(data_dir):
    """glance-cache-mw-api with the ``context`` flavor: context → cachemanage → cache → images."""
    from tests.functional import server as server_helpers
    process = server_helpers.ServerProcess(data_dir, flavor="context", testing=False)
    process.start()
    try:
        yield process.url, pathlib.Path(process.data_dir)
    finally:
        process.stop()


@pytest.fixture(scope="module", params=["serve_app", "pipeline"])
def server(request, tmp_path_factory):
    """(endpoint URL, data directory) of a running server: the stand-in or the real one."""
    data_dir = tmp_path_factory.mktemp(request.param)
    starter = _serve_app if request.param == "serve_app" else _pipeline
    yield from starter(data_dir)


@pytest.fixture
def endpoint(server):
    return server[0]


def client_for(endpoint, project="admin-project", roles=None):
    """A client for ``project`` (an admin without arguments), as an authenticating proxy
    in front of the context filter would present it."""
    if roles is None:
        roles = "admin" if project == "admin-project" else "member"
    headers = {"X-Project-Id": project, "X-User-Id": "user-" + project, "X-Roles": roles,
               "X-Identity-Status": "Confirmed"}
    return glanceclient.Client(endpoint=endpoint + "/v2", token="test-token",
                               identity_headers=headers)


def download(client, image_id):
    return b"".join(client.images.data(image_id))


def create_with_data(client, data, **kwargs):
    kwargs.setdefault("disk_format", "raw")
    kwargs.setdefault("container_format", "bare")
    image = client.images.create(**kwargs)
    client.images.upload(image.id, io.BytesIO(data))
    return client.images.get(image.id)


def test_versions_are_listed(endpoint):
    ids = [version["id"] for version in client_for(endpoint).versions.list()]
    assert "v2.0" in ids


def test_create_upload_and_download(endpoint):
    client = client_for(endpoint, "p1")
    data = os.urandom(300 * 1024 + 7)
    image = create_with_data(client, data, name="cirros")
    assert image.status == "active"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.os_hash_algo == "sha512"
    assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert image.owner == "p1"
    assert download(client, image.id) == data      # glanceclient checks the hash as it reads
    body = client.images.data(image.id, do_checksum=False)
    assert len(body) == len(data)
    assert b"".join(body) == data


def test_upload_with_size_and_empty_image(endpoint):
    client = client_for(endpoint, "p1")
    image = client.images.create(name="sized", disk_format="raw", container_format="bare")
    client.images.upload(image.id, io.BytesIO(b"12345"), image_size=5)
    assert download(client, image.id) == b"12345"
    empty = client.images.create(name="empty")
    assert client.images.data(empty.id).__wrapped__ is None  # 204: no data yet
    with pytest.raises(exc.HTTPConflict):
        client.images.upload(image.id, io.BytesIO(b"again"))


def test_list_with_paging_filters_and_sort(endpoint):
    client = client_for(endpoint, "lister")
    ids = [client.images.create(name="page-%d" % i, disk_format="qcow2").id for i in range(5)]
    listed = [image.id for image in client.images.list(page_size=2)]
    assert sorted(listed) == sorted(ids)
    by_name = [image.name for image in client.images.list(page_size=2, sort_key="name",
                                                          sort_dir="asc")]
    assert by_name == ["page-%d" % i for i in range(5)]
    newest = list(client.images.list(page_size=2, sort="name:desc", limit=3))
    assert [image.name for image in newest] == ["page-4", "page-3", "page-2"]
    one = list(client.images.list(filters={"name": "page-3"}))
    assert [image.id for image in one] == [ids[3]]
    assert list(client.images.list(filters={"disk_format": "vmdk"})) == []


def test_update_properties_and_attributes(endpoint):
    client = client_for(endpoint, "p1")
    image = client.images.create(name="before", foo="1")
    updated = client.images.update(image.id, name="after", min_ram=512, bar="2", foo="3")
    assert updated.name == "after" and updated.min_ram == 512
    assert updated.bar == "2" and updated.foo == "3"
    updated = client.images.update(image.id, remove_props=["foo"])
    assert "foo" not in updated and updated.bar == "2"
    with pytest.raises(exc.HTTPForbidden):
        client.images.update(image.id, visibility="public")
    admin = client_for(endpoint)
    assert admin.images.update(image.id, visibility="public").visibility == "public"


def test_tags(endpoint):
    client = client_for(endpoint, "p1")
    image = client.images.create(name="tagged", tags=["one"])
    client.image_tags.update(image.id, "two")
    assert sorted(client.images.get(image.id).tags) == ["one", "two"]
    client.image_tags.delete(image.id, "one")
    assert client.images.get(image.id).tags == ["two"]
    with pytest.raises(exc.HTTPNotFound):
        client.image_tags.delete(image.id, "one")
    # an update keeps the tags (glanceclient sends a "replace /tags" with every patch)
    assert client.images.update(image.id, name="renamed").tags == ["two"]


def test_members(endpoint):
    owner = client_for(endpoint, "owner")
    other = client_for(endpoint, "friend")
    image = create_with_data(owner, b"shared bytes", name="shared", visibility="shared")
    member = owner.image_members.create(image.id, "friend")
    assert member.status == "pending" and member.member_id == "friend"
    assert [m.member_id for m in owner.image_members.list(image.id)] == ["friend"]
    assert image.id not in [i.id for i in other.images.list()]
    assert download(other, image.id) == b"shared bytes"  # pending members may read
    with pytest.raises(exc.HTTPForbidden):
        owner.image_members.update(image.id, "friend", "accepted")
    assert other.image_members.update(image.id, "friend", "accepted").status == "accepted"
    assert image.id in [i.id for i in other.images.list()]
    with pytest.raises(exc.HTTPConflict):
        owner.image_members.create(image.id, "friend")
    with pytest.raises(exc.HTTPForbidden):
        other.image_members.delete(image.id, "friend")
    owner.image_members.delete(image.id, "friend")
    assert list(owner.image_members.list(image.id)) == []
    with pytest.raises(exc.HTTPNotFound):
        other.images.get(image.id)


def test_deactivate_and_reactivate(endpoint):
    owner = client_for(endpoint, "p1")
    admin = client_for(endpoint)
    image = create_with_data(owner, b"data", name="deact")
    owner.images.deactivate(image.id)
    assert owner.images.get(image.id).status == "deactivated"
    with pytest.raises(exc.HTTPForbidden):
        download(owner, image.id)
    assert download(admin, image.id) == b"data"
    owner.images.reactivate(image.id)
    assert download(owner, image.id) == b"data"


def test_delete(endpoint):
    client = client_for(endpoint, "p1")
    image = create_with_data(client, b"bye", name="doomed")
    client.images.delete(image.id)
    with pytest.raises(exc.HTTPNotFound):
        client.images.get(image.id)
    with pytest.raises(exc.HTTPNotFound):
        client.images.delete(image.id)
    protected = client.images.create(name="keep", protected=True)
    with pytest.raises(exc.HTTPForbidden):
        client.images.delete(protected.id)


def test_errors_carry_a_reason(endpoint):
    client = client_for(endpoint, "p1")
    with pytest.raises(exc.HTTPNotFound) as err:
        client.images.get("00000000-0000-0000-0000-000000000000")
    assert "00000000-0000-0000-0000-000000000000" in str(err.value)
    with pytest.raises(exc.HTTPBadRequest):
        list(client.images.list(filters={"visibility": "everyone"}))


class SlowFile:
    """A file whose reads wait for ``gate`` after the first chunk (an upload in progress)."""

    def __init__(self, data, started, gate):
        self._data, self._started, self._gate = io.BytesIO(data), started, gate

    def read(self, size=-1):
        chunk = self._data.read(min(size, 1024) if size > 0 else 1024)
        if self._data.tell() > 1024:
            self._started.set()
            self._gate.wait(30)
        return chunk


def test_concurrent_uploads_one_wins_with_409(endpoint):
    client = client_for(endpoint, "p1")
    image = client.images.create(name="race")
    started, gate, errors = threading.Event(), threading.Event(), []

    def slow_upload():
        try:
            client_for(endpoint, "p1").images.upload(image.id, SlowFile(b"a" * 4096, started,
                                                                        gate))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=slow_upload)
    thread.start()
    try:
        assert started.wait(30)
        deadline = time.time() + 30       # the server may not have read the first chunk yet
        while client.images.get(image.id).status != "saving" and time.time() < deadline:
            time.sleep(0.02)
        assert client.images.get(image.id).status == "saving"
        with pytest.raises(exc.HTTPConflict):
            client.images.upload(image.id, io.BytesIO(b"b" * 10))
    finally:
        gate.set()
        thread.join(30)
    assert errors == []
    assert download(client, image.id) == b"a" * 4096


def test_aborted_upload_kills_image_and_leaves_no_file(server):
    endpoint, data_dir = server
    client = client_for(endpoint, "p1")
    image = client.images.create(name="aborted")
    url = urllib.parse.urlsplit(endpoint)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(("PUT /v2/images/%s/file HTTP/1.1\r\nHost: x\r\nX-Project-Id: p1\r\n"
                      "X-Roles: member\r\nX-Identity-Status: Confirmed\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n"
                      "\r\n" % image.id).encode() + b"x" * 1000)
        time.sleep(0.2)
    deadline = time.time() + 10
    while (client.images.get(image.id).status in ("queued", "saving")
           and time.time() < deadline):
        time.sleep(0.05)
    assert client.images.get(image.id).status == "killed"
    assert [name for name in os.listdir(data_dir / "images") if image.id in name] == []
    assert client.images.data(image.id).__wrapped__ is None


@pytest.fixture(scope="module")
def pipeline_endpoint(tmp_path_factory):
    """A real pipeline of its own, to watch X-Image-Cache from a cold cache."""
    for url, _ in _pipeline(tmp_path_factory.mktemp("pipeline-only")):
        yield url


def test_second_download_is_a_cache_hit(pipeline_endpoint):
    from tests.functional.server import http_request
    endpoint = pipeline_endpoint
    client = client_for(endpoint, "p1")
    data = os.urandom(64 * 1024)
    image = create_with_data(client, data, name="cached")
    headers = {"X-Project-Id": "p1", "X-Roles": "member", "X-Identity-Status": "Confirmed"}
    url = "/v2/images/%s/file" % image.id
    statuses = []
    for _ in range(3):
        status, response_headers, body = http_request(endpoint, "GET", url, headers=headers)
        assert status == 200 and body == data
        assert response_headers["content-md5"] == hashlib.md5(data).hexdigest()
        statuses.append(response_headers.get("x-image-cache"))
    assert statuses[0] == "MISS" and statuses[-1] == "HIT"
    assert download(client, image.id) == data


def test_a_corrupt_origin_is_caught_by_the_client_and_never_cached(tmp_path):
    """Store bytes that no longer match the record: the filler's client gets them as the
    origin sends them (image_cache_verify_before_last_byte is off by default) and
    glanceclient's own os_hash_value check fails the download; the cache keeps nothing, so
    the next download is a MISS again, never a HIT of bad bytes."""
    from tests.functional.server import http_request
    for endpoint, data_dir in _pipeline(tmp_path):
        client = client_for(endpoint, "p1")
        data = os.urandom(6 * 1024 * 1024)   # hashed in threads, from the cache file
        image = create_with_data(client, data, name="rotting")
        stored = data_dir / "images" / image.id
        with open(stored, "r+b") as handle:
            handle.seek(len(data) // 2)
            handle.write(b"\0" if data[len(data) // 2] else b"\1")
        with pytest.raises(IOError, match="(?i)corrupt|checksum|hash"):
            download(client, image.id)
        # The verdict comes after the last byte: until the fill has ended, a new request
        # would follow it (COALESCED) and be cut before its last, unverified bytes.
        filling = data_dir / "image-cache" / "incomplete" / image.id
        deadline = time.monotonic() + 30
        while filling.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not filling.exists()
        headers = {"X-Project-Id": "p1", "X-Roles": "member", "X-Identity-Status": "Confirmed"}
        status, response_headers, body = http_request(
            endpoint, "GET", "/v2/images/%s/file" % image.id, headers=headers)
        assert status == 200 and response_headers["x-image-cache"] == "MISS"
        assert len(body) == len(data) and body != data
        admin = {"X-Project-Id": "admin-project", "X-Roles": "admin",
                 "X-Identity-Status": "Confirmed"}
        status, _, listing = http_request(endpoint, "GET", "/v2/cache", headers=admin)
        assert status == 200 and image.id.encode() not in listing
        cache_dir = data_dir / "image-cache"
        assert not (cache_dir / image.id).exists()
        assert (cache_dir / "invalid" / image.id).exists()   # for the cleaner
