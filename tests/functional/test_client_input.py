"""Hostile and odd client input against a real server (``context`` flavor, the full pipeline).

Issue 12, part A: absurd Range numbers, deeply nested JSON and lone surrogates are 4xx (never a
500, nothing stored); a confirmed identity without a project sees only public and community
images and cannot create any; errors come in Glance's (WebOb's) body formats on every path.
"""

import json
import os

import pytest

from tests.functional import server as server_helpers

HUGE = "9" * 5000           # more digits than Python's int-string conversion limit (4300)
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


def identity(project="p1", roles="member"):
    headers = {"X-Identity-Status": "Confirmed", "X-User-Id": "u-%s" % project,
               "X-Roles": roles}
    if project is not None:
        headers["X-Project-Id"] = project
    return headers


class Client:
    """Requests to the server as one identity; JSON bodies encoded, responses decoded."""

    def __init__(self, server, **identity_args):
        self.server = server
        self.headers = identity(**identity_args)

    def request(self, method, path, body=None, headers=None, json_body=None):
        all_headers = dict(self.headers, **(headers or {}))
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        return self.server.request(method, path, body=body, headers=all_headers)

    def create(self, data=None, **values):
        values.setdefault("disk_format", "raw")
        values.setdefault("container_format", "bare")
        status, _, body = self.request("POST", "/v2/images", json_body=values)
        assert status == 201, body
        image = json.loads(body)
        if data is not None:
            status, _, body = self.request(
                "PUT", "/v2/images/%s/file" % image["id"], body=data,
                headers={"Content-Type": "application/octet-stream"})
            assert status == 204, body
        return image

    def image_names(self, query=""):
        status, _, body = self.request("GET", "/v2/images" + query)
        assert status == 200, body
        return sorted(image["name"] for image in json.loads(body)["images"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = server_helpers.ServerProcess(tmp_path_factory.mktemp("client-input"),
                                           flavor="context", testing=False)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def p1(server):
    return Client(server, project="p1")


DATA = os.urandom(10_000)


@pytest.fixture(scope="module")
def images(p1):
    """A cached image (downloaded once: MISS), a cold one (never downloaded) and an empty one."""
    cached = p1.create(DATA, name="cached")
    status, headers, body = p1.request("GET", "/v2/images/%s/file" % cached["id"])
    assert status == 200 and body == DATA and headers["x-image-cache"] == "MISS"
    cold = p1.create(DATA, name="cold")
    empty = p1.create(b"", name="empty")
    return {"cached": cached["id"], "cold": cold["id"], "empty": empty["id"]}


# --- Range ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["cached", "cold", "empty"])
@pytest.mark.parametrize("range_value,expected", [
    ("bytes=%s-" % HUGE, None),                      # first byte beyond any file: 416
    ("bytes=%s-%s" % (HUGE, "9" * 3000), None),      # (both: longer than a header line)
    ("bytes=0-%s" % HUGE, (0, None)),                # last byte past the end: to the end
    ("bytes=-%s" % HUGE, (0, None)),                 # a suffix longer than the file: all of it
    ("bytes=%s1-" % ("0" * 5000), (1, None)),        # leading zeros: still the number 1
    ("bytes=%s-1" % HUGE, None),                     # last < first
    ("bytes=\u0661-", None),                         # not an ASCII digit: malformed
])
def test_an_absurd_range_is_416_or_the_range_never_500(p1, images, kind, range_value,
                                                       expected):
    image_id = images[kind]
    status, headers, body = p1.request("GET", "/v2/images/%s/file" % image_id,
                                       headers={"Range": range_value.encode("utf-8")})
    if kind == "cached":
        assert headers["x-image-cache"] == "HIT"
    if expected is None or kind == "empty":
        assert status == 416, body[:300]
        size = 0 if kind == "empty" else len(DATA)
        assert headers["content-range"] == "bytes */%d" % size
        assert b"Traceback" not in body
    else:
        start, end = expected
        assert status == 206, body[:300]
        assert body == DATA[start:end]
        assert headers["content-range"] == "bytes %d-%d/%d" % (start, len(DATA) - 1, len(DATA))
    assert p1.request("GET", "/v2/images/%s/file" % image_id)[0] in (200, 204)  # alive

# --- JSON bodies ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_image(p1):
    return p1.create(name="shared-one", visibility="shared")["id"]


def _json_requests(shared_image):
    """(method, path, content type) of every request that takes a JSON body."""
    return [("POST", "/v2/images", "application/json"),
            ("PATCH", "/v2/images/%s" % shared_image, PATCH_TYPE),
            ("POST", "/v2/images/%s/members" % shared_image, "application/json"),
            ("PUT", "/v2/images/%s/members/p2" % shared_image, "application/json")]


def _state(client, shared_image):
    """Everything a request could have stored: the image list, one image, its members."""
    listing = client.request("GET", "/v2/images?limit=1000")[2]
    image = client.request("GET", "/v2/images/%s" % shared_image)[2]
    members = client.request("GET", "/v2/images/%s/members" % shared_image)[2]
    return (sorted(item["id"] for item in json.loads(listing)["images"]),
            {key: value for key, value in json.loads(image).items() if key != "updated_at"},
            members)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000,
                                  b'{"name": ' + b"[" * 500 + b"]" * 500 + b"}"])
def test_deeply_nested_json_is_400(p1, shared_image, body):
    before = _state(p1, shared_image)
    for method, path, content_type in _json_requests(shared_image):
        status, headers, answer = p1.request(method, path, body=body,
                                             headers={"Content-Type": content_type})
        assert status == 400, (method, path, answer[:300])
        assert b"nested" in answer or b"must be" in answer, answer[:300]
    assert _state(p1, shared_image) == before


SURROGATE = "\ud800"


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v2/images", {"name": SURROGATE}),
    ("POST", "/v2/images", {"name": "x", "prop": "a" + SURROGATE}),
    ("POST", "/v2/images", {"name": "x", "a" + SURROGATE: "value"}),
    ("POST", "/v2/images", {"name": "x", "tags": ["ok", "\udfff"]}),
    ("PATCH", "/v2/images/{id}", [{"op": "replace", "path": "/name", "value": SURROGATE}]),
    ("PATCH", "/v2/images/{id}", [{"op": "add", "path": "/prop", "value": SURROGATE}]),
    ("PATCH", "/v2/images/{id}", [{"op": "add", "path": "/p" + SURROGATE, "value": "v"}]),
    ("PATCH", "/v2/images/{id}", [{"op": "replace", "path": "/tags", "value": [SURROGATE]}]),
    ("POST", "/v2/images/{id}/members", {"member": SURROGATE}),
    ("PUT", "/v2/images/{id}/members/p2", {"status": SURROGATE}),
])
def test_a_lone_surrogate_in_any_json_string_is_400(p1, shared_image, method, path, body):
    before = _state(p1, shared_image)
    content_type = PATCH_TYPE if method == "PATCH" else "application/json"
    status, _, answer = p1.request(method, path.format(id=shared_image),
                                   body=json.dumps(body).encode(),
                                   headers={"Content-Type": content_type})
    assert status == 400, answer[:300]
    assert b"surrogate" in answer or method == "PUT", answer[:300]
    assert _state(p1, shared_image) == before


# --- identity without a project ----------------------------------------------------------------

@pytest.fixture(scope="module")
def visibility_images(server, p1):
    """One image of every visibility, owned by p3 (the shared one has member p4)."""
    p3 = Client(server, project="p3")
    admin = Client(server, project="admin-project", roles="admin")
    names = {}
    for visibility in ("private", "shared", "community"):
        names[visibility] = p3.create(name="p3-" + visibility, visibility=visibility)
    names["public"] = admin.create(name="p3-public", visibility="public", owner="p3")
    status, _, body = p3.request("POST", "/v2/images/%s/members" % names["shared"]["id"],
                                 json_body={"member": "p4"})
    assert status == 200, body
    return names


@pytest.mark.parametrize("query,expected", [
    ("", ["p3-public"]),
    ("?visibility=all", ["p3-community", "p3-public"]),
    ("?visibility=public", ["p3-public"]),
    ("?visibility=community", ["p3-community"]),
    ("?visibility=shared", []),
    ("?visibility=shared&member_status=all", []),
    ("?member_status=pending", ["p3-public"]),
    ("?visibility=private", []),
])
def test_without_a_project_only_public_and_community_images_are_listed(
        server, visibility_images, query, expected):
    nobody = Client(server, project=None)
    names = [name for name in nobody.image_names(query) if name.startswith("p3-")]
    assert names == expected
    for visibility in ("private", "shared"):
        image_id = visibility_images[visibility]["id"]
        assert nobody.request("GET", "/v2/images/%s" % image_id)[0] == 404


def test_without_a_project_images_cannot_be_created(server, p1):
    nobody = Client(server, project=None)
    admin = Client(server, project="admin-project", roles="admin")
    before = admin.image_names("?visibility=all&limit=1000")
    status, _, body = nobody.request("POST", "/v2/images", json_body={"name": "orphan"})
    assert status == 403, body
    assert b"project" in body
    assert admin.image_names("?visibility=all&limit=1000") == before
    # An admin without a project still may (the noauth flavor's single user is one).
    nameless_admin = Client(server, project=None, roles="admin")
    assert nameless_admin.create(name="admin-orphan")["owner"] is None


def test_the_context_filter_refuses_in_glance_format(server):
    status, headers, body = server.request("GET", "/v2/images",
                                           headers={"Accept": "application/json"})
    assert status == 401
    assert json.loads(body) == {
        "code": "401 Unauthorized", "title": "Unauthorized",
        "message": "Authentication required: missing X-Identity-Status header (no "
                   "authenticated identity)"}
