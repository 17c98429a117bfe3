"""Fuzzing (hypothesis) the request parsing, the Range parser and the JSON bodies: never a 5xx.

The whole ``context`` pipeline of etc/glance-cache-mw.ini runs in-process (context filter,
cache management, cache filter, images app) on a SQLite database in a temporary directory,
with a cached, a cold and an empty image to aim at. Each test's example count is bounded
(``FUZZ_SETTINGS``) so the module takes well under 30 s in CI; ``GLANCE_CACHE_MW_FUZZ_EXAMPLES``
raises it for a longer local run.
"""

import io
import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from glance_cache_mw import wsgi
from glance_cache_mw.db import engine as db_engine, migration
from glance_cache_mw.middleware import download
from tests.functional import server as server_helpers

EXAMPLES = int(os.environ.get("GLANCE_CACHE_MW_FUZZ_EXAMPLES", "150"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large])
DATA = b"0123456789" * 100
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


# --- the Range parser alone -------------------------------------------------------------------

def _number():
    return st.one_of(st.just(""), st.integers(0, 2 ** 70).map(str),
                     st.integers(0, 3000).map(lambda zeros: "0" * zeros + "7"),
                     st.integers(4290, 6000).map(lambda digits: "9" * digits))


_RANGE_TEXT = st.one_of(
    st.builds("{}{}-{}{}".format, st.sampled_from(["bytes=", " BYTES = ", "bytes=\t", "x="]),
              _number(), _number(), st.sampled_from(["", " ", ",0-1", "-", "\u0663"])),
    st.text(st.characters(max_codepoint=0x7FF), max_size=40))


@FUZZ_SETTINGS
@given(header=_RANGE_TEXT, size=st.integers(0, 2 ** 63))
def test_parse_range_answers_a_range_inside_the_file_or_not_satisfiable(header, size):
    try:
        start, length = download.parse_range(header, size)
    except download.RangeNotSatisfiable:
        return
    assert 0 <= start < size and 1 <= length and start + length <= size
    first, _, last = header.split("=", 1)[1].strip().partition("-")
    assert first.strip().isascii() and last.strip().isascii()


# --- the whole pipeline in-process ------------------------------------------------------------

class Pipeline:
    """The ``context`` flavor's WSGI app with three images of project p1."""

    def __init__(self, app):
        self.app = app
        self.ids = {}

    def call(self, method, path, query="", headers=None, body=b""):
        for name, image_id in self.ids.items():
            path = path.replace("{%s}" % name, image_id)
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path,
            "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in (headers or {}).items():
            if name.lower() == "content-type":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        seen = {}

        def start_response(status, response_headers, exc_info=None):
            seen["status"] = status
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        return int(seen["status"][:3]), data


def _identity(project="p1", roles="member"):
    headers = {"X-Identity-Status": "Confirmed", "X-Roles": roles}
    if project is not None:
        headers["X-Project-Id"] = project
    return headers


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    db_path = tmp_path / "images.sqlite"
    engine = db_engine.create_engine("sqlite:///%s" % db_path)
    try:
        migration.sync(engine)
    finally:
        engine.dispose()
    config = server_helpers.write_config(
        tmp_path / "fuzz.ini", tmp_path / "data", flavor="context", testing=False,
        settings={"sql_connection": "sqlite:///%s" % db_path})
    piped = Pipeline(wsgi.load_app(str(config)))
    owner = _identity()
    for name, data in (("cached", DATA), ("cold", DATA), ("empty", b"")):
        status, body = piped.call("POST", "/v2/images", headers=dict(
            owner, **{"Content-Type": "application/json"}), body=json.dumps(
            {"name": name, "disk_format": "raw", "container_format": "bare",
             "visibility": "shared"}).encode())
        assert status == 201, body
        image_id = json.loads(body)["id"]
        status, body = piped.call("PUT", "/v2/images/%s/file" % image_id, headers=dict(
            owner, **{"Content-Type": "application/octet-stream"}), body=data)
        assert status == 204, body
        piped.ids[name] = image_id
    assert piped.call("GET", "/v2/images/%s/file" % piped.ids["cached"], headers=owner) == (
        200, DATA)
    yield piped
    db_engine.dispose()


def _assert_no_5xx(status, body):
    assert status < 500, body[:500]
    assert b"Traceback" not in body


_LATIN1 = st.characters(max_codepoint=0xFF, exclude_characters="\r\n")
_IDENTITY = st.builds(_identity, project=st.sampled_from(["p1", "p2", None, " ", "p" * 300]),
                      roles=st.sampled_from(["member", "admin", "", "reader,admin"]))
_ACCEPT = st.sampled_from(["*/*", "application/json", "text/plain", "text/html;q=0.1",
                           "application/json;q=0", "\xff", None])


def _image_path(kind):
    return st.sampled_from(["/v2/images/{cached}", "/v2/images/{cold}", "/v2/images/{empty}",
                            "/v2/images/%s" % uuid.UUID(int=1)]).map(
        lambda template: template + kind)


_PATHS = st.one_of(
    _image_path(""), _image_path("/file"), _image_path("/members"),
    _image_path("/members/p2"), _image_path("/tags/t"), _image_path("/actions/deactivate"),
    st.sampled_from(["/v2/images", "/v2.9/images", "/v2/cache", "/v2/cache/prune", "/versions",
                     "/v2/schemas/image", "/"]),
    st.text(_LATIN1, max_size=60).map(lambda text: "/v2/images/" + text),
    st.text(_LATIN1, max_size=60).map(lambda text: "/v2/images/{cached}/" + text))


_QUERY_KEYS = st.sampled_from([
    "limit", "marker", "sort", "sort_key", "sort_dir", "member_status", "tag", "visibility",
    "name", "id", "status", "size_min", "size_max", "min_ram", "created_at", "updated_at",
    "protected", "os_hidden", "owner", "checksum", "container_format", "prop"])
_QUERY_VALUES = st.one_of(
    _number(), st.text(_LATIN1, max_size=20),
    st.builds("{}:{}".format, st.sampled_from(["in", "gt", "gte", "lt", "neq", "eq", "x"]),
              st.text(_LATIN1, max_size=20) | _number()),
    st.sampled_from(["name:asc,size:desc", "true", "all", "2020-01-01T00:00:00Z",
                     'in:"a\\"b",c,"d,e"', 'in:"a', "%ED%A0%80", "%F0%9F%98%80", "%00"]))
_QUERIES = st.one_of(
    st.text(_LATIN1, max_size=60),
    st.lists(st.builds("{}={}".format, _QUERY_KEYS, _QUERY_VALUES), max_size=4).map("&".join))


@FUZZ_SETTINGS
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
       path=_PATHS, query=_QUERIES, identity=_IDENTITY, accept=_ACCEPT,
       range_header=st.one_of(st.none(), _RANGE_TEXT.filter(lambda text: text.isascii())),
       content_type=st.sampled_from([None, "application/json", PATCH_TYPE,
                                     "application/octet-stream", "text/plain; charset=\xff"]),
       body=st.binary(max_size=64))
def test_any_request_line_and_headers_get_no_5xx(pipeline, method, path, query, identity,
                                                 accept, range_header, content_type, body):
    if method in ("DELETE", "POST") and "{" in path and "/members" not in path:
        return   # keep the three target images alive (deactivate/delete are ordinary)
    headers = dict(identity)
    for name, value in (("Accept", accept), ("Range", range_header),
                        ("Content-Type", content_type)):
        if value is not None:
            headers[name] = value
    _assert_no_5xx(*pipeline.call(method, path, query, headers, body))


@FUZZ_SETTINGS
@given(method=st.sampled_from(["GET", "HEAD"]), kind=st.sampled_from(["cached", "cold", "empty"]),
       range_header=_RANGE_TEXT.filter(lambda text: text.isascii()), identity=_IDENTITY,
       accept=_ACCEPT)
def test_any_range_of_any_image_gets_no_5xx(pipeline, method, kind, range_header, identity,
                                            accept):
    headers = dict(identity, Range=range_header)
    if accept is not None:
        headers["Accept"] = accept
    status, body = pipeline.call(method, "/v2/images/{%s}/file" % kind, headers=headers)
    _assert_no_5xx(status, body)
    if status == 206 and method == "GET":
        assert body and body in DATA


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=()), max_size=20),     # surrogates included
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=10), children,
                      max_size=4),
    max_leaves=12)
_ATTRIBUTES = st.sampled_from(["name", "visibility", "tags", "min_ram", "min_disk",
                               "protected", "os_hidden", "disk_format", "container_format",
                               "id", "owner", "member", "status", "prop", "os_glance_x"])
_IMAGE_BODY = st.dictionaries(_ATTRIBUTES | st.text(max_size=8), _JSON, max_size=5)
_PATCH_BODY = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "test", "move", "x"]),
     "path": st.sampled_from(["/name", "/tags", "/tags/0", "/prop", "/min_ram", "/visibility",
                              "/locations", "/"]) | st.text(max_size=10)},
    optional={"value": _JSON}), max_size=3)
_NESTED = st.tuples(st.sampled_from(["[", '{"a":', '{"name":[']), st.integers(1, 3000)).map(
    lambda pair: pair[0] * pair[1])


@FUZZ_SETTINGS
@given(target=st.sampled_from([
           ("POST", "/v2/images", "application/json"),
           ("PATCH", "/v2/images/{cold}", PATCH_TYPE),
           ("POST", "/v2/images/{cached}/members", "application/json"),
           ("PUT", "/v2/images/{cached}/members/p2", "application/json")]),
       document=st.one_of(_JSON, _IMAGE_BODY, _PATCH_BODY).map(json.dumps) | _NESTED,
       identity=_IDENTITY, accept=_ACCEPT)
def test_any_json_body_gets_no_5xx(pipeline, target, document, identity, accept):
    method, path, content_type = target
    headers = dict(identity, **{"Content-Type": content_type})
    if accept is not None:
        headers["Accept"] = accept
    status, body = pipeline.call(method, path, headers=headers,
                                 body=document.encode("utf-8"))
    _assert_no_5xx(status, body)
