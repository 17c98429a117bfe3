"""Error bodies in Glance 33's format (WebOb's, chosen by Accept) on every path, as the real
glance CLI and glanceclient read them.

Glance raises ``webob.exc`` errors and lets WebOb render them: HTML for ``Accept: */*`` (what
glanceclient sends), JSON ``{"message", "code", "title"}`` for ``application/json``, plain text
otherwise. glanceclient turns the HTML into ``HTTP 404 Not Found: <message>``.
"""

import json
import os
import subprocess
import sys

import pytest

glanceclient = pytest.importorskip("glanceclient")
from glanceclient import exc as glance_exc  # noqa: E402

ACCEPTS = {"html": "*/*", "json": "application/json", "plain": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.functional import server as server_helpers
    process = server_helpers.ServerProcess(tmp_path_factory.mktemp("errors"), flavor="noauth",
                                           testing=False)
    process.start()
    yield process
    process.stop()


def _create(server, data=None, **values):
    values.update(disk_format="raw", container_format="bare")
    status, _, body = server.request("POST", "/v2/images", json.dumps(values).encode(),
                                     {"Content-Type": "application/json"})
    assert status == 201, body
    image_id = json.loads(body)["id"]
    if data is not None:
        status, _, body = server.request("PUT", "/v2/images/%s/file" % image_id, data,
                                         {"Content-Type": "application/octet-stream"})
        assert status == 204, body
    return image_id


@pytest.fixture(scope="module")
def deleted_id(server):
    image_id = _create(server, b"some data", name="doomed")
    assert server.request("GET", "/v2/images/%s/file" % image_id)[0] == 200   # cached now
    assert server.request("DELETE", "/v2/images/%s" % image_id)[0] == 204
    return image_id


def _error(server, path, kind, method="GET", headers=None):
    all_headers = dict(headers or {})
    if ACCEPTS[kind]:
        all_headers["Accept"] = ACCEPTS[kind]
    status, headers, body = server.request(method, path, headers=all_headers)
    return status, headers["content-type"].split(";")[0], body.decode("utf-8")


def _check_format(kind, content_type, body, status_line, message):
    if kind == "json":
        assert content_type == "application/json"
        assert json.loads(body) == {"message": message, "code": status_line,
                                    "title": status_line.split(" ", 1)[1]}
    elif kind == "html":
        assert content_type == "text/html"
        assert "<title>%s</title>" % status_line in body
        assert "<h1>%s</h1>" % status_line in body and message in body
    else:
        assert content_type == "text/plain"
        assert body.startswith("%s\n\n%s" % (status_line, message))
    assert "Traceback" not in body


@pytest.mark.parametrize("kind", sorted(ACCEPTS))
def test_not_found_has_the_same_body_on_the_image_and_its_file(server, deleted_id, kind):
    message = "No image found with ID %s" % deleted_id
    bodies = []
    for path in ("/v2/images/%s" % deleted_id, "/v2/images/%s/file" % deleted_id,
                 "/v2/images/%s/members" % deleted_id):
        status, content_type, body = _error(server, path, kind)
        assert status == 404
        _check_format(kind, content_type, body, "404 Not Found", message)
        bodies.append(body)
    assert len(set(bodies)) == 1


@pytest.mark.parametrize("kind", sorted(ACCEPTS))
@pytest.mark.parametrize("request_line,status_line,fragment", [
    (("GET", "/v2/images?limit=x"), "400 Bad Request", "limit param must be an integer"),
    (("GET", "/v2/nowhere"), "404 Not Found", "The resource could not be found."),
    (("PUT", "/v2/images"), "405 Method Not Allowed", "The method PUT is not allowed"),
    (("PATCH", "/v2/cache"), "405 Method Not Allowed", "The method PATCH is not allowed"),
    (("DELETE", "/v2/cache/nope"), "404 Not Found", "No image found with ID nope"),
    (("GET", "/v2/images/{id}/file", {"Range": "bytes=99-"}),
     "416 Request Range Not Satisfiable", "cannot be"),
    (("GET", "/v2/images/{cold}/file", {"Range": "bytes=99-"}),
     "416 Request Range Not Satisfiable", "cannot be"),
])
def test_every_error_is_in_webob_format(server, kind, request_line, status_line, fragment):
    image_id = _create(server, b"0123456789", name="ranged")
    assert server.request("GET", "/v2/images/%s/file" % image_id)[0] == 200   # cached now
    cold = _create(server, b"0123456789", name="cold")
    method, path = request_line[:2]
    headers = request_line[2] if len(request_line) > 2 else None
    status, content_type, body = _error(server, path.format(id=image_id, cold=cold), kind,
                                        method, headers)
    assert status == int(status_line[:3]), body
    if kind == "json":
        assert content_type == "application/json"
        document = json.loads(body)
        assert document["code"] == status_line and fragment in document["message"]
        assert "<" not in document["message"] and not document["message"].endswith("\n")
    elif kind == "html":
        assert content_type == "text/html" and "<h1>%s</h1>" % status_line in body
        assert fragment in body
    else:
        assert content_type == "text/plain" and body.startswith(status_line + "\n\n")
        assert fragment in body


def test_glanceclient_reports_the_status_and_the_message(server, deleted_id):
    client = glanceclient.Client(endpoint=server.url + "/v2", token="any")
    for call in (lambda: client.images.get(deleted_id),
                 lambda: b"".join(client.images.data(deleted_id))):
        with pytest.raises(glance_exc.HTTPNotFound) as caught:
            call()
        assert str(caught.value) == "HTTP 404 Not Found: No image found with ID %s" % deleted_id


@pytest.mark.parametrize("command", [["image-show"], ["image-download", "--file", "out"]])
def test_glance_cli_prints_http_404_not_found(server, deleted_id, tmp_path, command):
    glance = os.path.join(os.path.dirname(sys.executable), "glance")
    env = dict(os.environ, OS_AUTH_TOKEN="any", OS_IMAGE_URL=server.url)
    result = subprocess.run([glance] + command[:1] + [deleted_id] + command[1:], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "HTTP 404 Not Found: No image found with ID %s" % deleted_id in result.stderr, \
        result.stderr
