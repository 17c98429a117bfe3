"""Image data through the images app: upload (state machine, failures) and download (ranges)."""

import hashlib
import io
import os

import pytest
import webob

from glance_cache_mw import store as file_store
from glance_cache_mw.api import router
from glance_cache_mw.db import api as db_api
from tests.unit.api_helpers import (  # noqa: F401  (fixtures)
    ADMIN, OTHER, OWNER, api, assert_error, make_api, migrated_template)

DATA = b"hello world"


def file_url(image_id):
    return "/v2/images/%s/file" % image_id


def store_files(api):
    return sorted(os.listdir(api.store_dir)) if api.store_dir.exists() else []


def status_of(image_id):
    return db_api.image_get(ADMIN, image_id)["status"]


class Stream:
    """A wsgi.input that runs ``during`` after the first read, or fails with ``error``."""

    def __init__(self, data, during=None, error=None):
        self._data = io.BytesIO(data)
        self._during = during
        self._error = error

    def read(self, size=-1):
        chunk = self._data.read(min(size, 4) if size and size > 0 else 4)
        if self._during is not None:
            during, self._during = self._during, None
            during()
        if self._error is not None and self._data.tell() > 4:
            raise self._error
        return chunk

    def readline(self, *args):
        return b""

    def readlines(self, *args):
        return []

    def __iter__(self):
        return iter(())


def upload_stream(api, image_id, stream, context=OWNER, content_length=None, headers=None):
    """PUT a body from ``stream`` (chunked when content_length is None)."""
    req = webob.Request.blank(file_url(image_id), method="PUT",
                              headers=dict({"Accept": "application/json"}, **headers or {}))
    req.content_type = "application/octet-stream"
    req.environ["wsgi.input"] = stream
    if content_length is None:
        req.environ.pop("CONTENT_LENGTH", None)
        req.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        req.environ["CONTENT_LENGTH"] = str(content_length)
    req.environ["glance.context"] = context
    resp = req.get_response(api.app)
    resp.body  # noqa: B018
    return resp


# --- upload ---------------------------------------------------------------------------------

def test_upload_activates_the_image_with_hashes_and_location(api):
    image = api.create(name="x")
    resp = api.upload(image["id"], DATA)
    assert resp.body == b"" and "Content-Type" not in resp.headers
    shown = api.get(image["id"])
    assert shown["status"] == "active" and shown["size"] == len(DATA)
    assert shown["checksum"] == hashlib.md5(DATA).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    assert store_files(api) == [image["id"]]
    assert (api.store_dir / image["id"]).read_bytes() == DATA
    locations = db_api.image_get(ADMIN, image["id"])["locations"]
    assert [loc["url"] for loc in locations] == ["file://%s" % (api.store_dir / image["id"])]


def test_chunked_upload(api):
    image = api.create()
    assert upload_stream(api, image["id"], Stream(DATA * 10)).status_int == 204
    assert api.get(image["id"])["size"] == len(DATA) * 10


def test_empty_upload_makes_an_empty_active_image(api):
    image = api.active(b"")
    assert image["status"] == "active" and image["size"] == 0
    resp = api.call("GET", file_url(image["id"]), OWNER)
    assert resp.status_int == 200 and resp.body == b"" and resp.content_length == 0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_upload_needs_octet_stream(api, content_type):
    image = api.create()
    resp = api.call("PUT", file_url(image["id"]), OWNER, body=b"x", content_type=content_type)
    if content_type is None:
        assert resp.status_int == 204  # api.call defaults to application/octet-stream
    else:
        assert_error(resp, 415, "octet-stream")
        assert status_of(image["id"]) == "queued"


def test_upload_to_an_image_with_data_is_409(api):
    image = api.active()
    assert_error(api.call("PUT", file_url(image["id"]), OWNER, body=b"again"), 409, "active")
    saving = api.create()
    db_api.image_update(ADMIN, saving["id"], {"status": "saving"})
    assert_error(api.call("PUT", file_url(saving["id"]), OWNER, body=b"x"), 409, "saving")


def test_concurrent_uploads_only_one_wins(api):
    image = api.create()
    second = []
    stream = Stream(DATA, during=lambda: second.append(
        api.call("PUT", file_url(image["id"]), OWNER, body=b"other data")))
    assert upload_stream(api, image["id"], stream).status_int == 204
    assert_error(second[0], 409)
    assert (api.store_dir / image["id"]).read_bytes() == DATA


def test_upload_permissions(api):
    private = api.create(visibility="private")
    assert_error(api.call("PUT", file_url(private["id"]), OTHER, body=DATA), 404)
    community = api.create(visibility="community")
    assert_error(api.call("PUT", file_url(community["id"]), OTHER, body=DATA), 403)
    assert status_of(community["id"]) == "queued"


def test_short_body_kills_the_image_and_leaves_no_file(api):
    image = api.create()
    resp = upload_stream(api, image["id"], Stream(b"abc"), content_length=10)
    assert_error(resp, 400, "disconnected")
    assert status_of(image["id"]) == "killed"
    assert store_files(api) == []


def test_broken_body_kills_the_image_and_leaves_no_file(api):
    image = api.create()
    resp = upload_stream(api, image["id"], Stream(DATA * 4, error=OSError("connection reset")))
    assert_error(resp, 400, "connection reset")
    assert status_of(image["id"]) == "killed"
    assert store_files(api) == []


@pytest.mark.parametrize("header, fragment", [("abc", "x-openstack-image-size"),
                                              ("-1", "x-openstack-image-size"),
                                              ("5", "does not match")])
def test_bad_size_header_is_400_before_anything_changes(api, header, fragment):
    image = api.create()
    resp = api.call("PUT", file_url(image["id"]), OWNER, body=DATA,
                    headers={"x-openstack-image-size": header})
    assert_error(resp, 400, fragment)
    assert status_of(image["id"]) == "queued"


def test_size_cap(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, image_size_cap="8")
    announced = api.create()
    assert_error(api.call("PUT", file_url(announced["id"]), OWNER, body=DATA), 413)
    assert status_of(announced["id"]) == "queued"
    streamed = api.create()
    assert_error(upload_stream(api, streamed["id"], Stream(DATA)), 413)
    assert status_of(streamed["id"]) == "killed"
    assert store_files(api) == []
    api.upload(api.create()["id"], b"12345678")


def test_image_deleted_during_upload_is_410_and_keeps_no_data(api):
    image = api.create()
    stream = Stream(DATA, during=lambda: api.call("DELETE", "/v2/images/%s" % image["id"]))
    assert_error(upload_stream(api, image["id"], stream), 410, "deleted during the upload")
    assert store_files(api) == []


# --- download -------------------------------------------------------------------------------

def test_download_headers_and_body(api):
    image = api.active(DATA)
    resp = api.call("GET", file_url(image["id"]), OWNER)
    assert resp.status_int == 200 and resp.body == DATA
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(len(DATA))
    assert resp.headers["Content-MD5"] == hashlib.md5(DATA).hexdigest()
    assert resp.headers["ETag"] == '"%s"' % hashlib.sha512(DATA).hexdigest()
    assert resp.headers["Accept-Ranges"] == "bytes"


def test_download_headers_match_a_cache_hit(api):
    from glance_cache_mw.middleware import download
    image = api.active(DATA)
    resp = api.call("GET", file_url(image["id"]), OWNER)
    assert sorted(resp.headerlist) == sorted(download.download_headers(image))


def test_download_head(api):
    image = api.active(DATA)
    resp = api.call("HEAD", file_url(image["id"]), OWNER)
    assert resp.status_int == 200 and resp.body == b""
    assert resp.headers["Content-Length"] == str(len(DATA))


def test_download_app_iter_names_the_file(api):
    image = api.active(DATA)
    req = webob.Request.blank(file_url(image["id"]))
    req.environ["glance.context"] = OWNER
    resp = req.get_response(api.app, catch_exc_info=False)
    try:
        assert resp.app_iter.path == str(api.store_dir / image["id"])
    finally:
        resp.app_iter.close()


@pytest.mark.parametrize("status", ["queued", "saving", "killed"])
def test_download_without_data_is_204(api, status):
    image = api.create()
    if status != "queued":
        db_api.image_update(ADMIN, image["id"], {"status": status})
    resp = api.call("GET", file_url(image["id"]), OWNER)
    assert resp.status_int == 204 and resp.body == b""


def test_download_of_deactivated_image_is_for_admins_only(api):
    image = api.active(DATA)
    api.call("POST", "/v2/images/%s/actions/deactivate" % image["id"], OWNER)
    assert_error(api.call("GET", file_url(image["id"]), OWNER), 403, "deactivated")
    assert api.call("GET", file_url(image["id"]), ADMIN).body == DATA


def test_download_of_invisible_or_missing_image_is_404(api):
    image = api.active(DATA, visibility="private")
    assert_error(api.call("GET", file_url(image["id"]), OTHER), 404)
    assert_error(api.call("GET", file_url("../../etc/passwd"), OWNER), 404)
    os.unlink(api.store_dir / image["id"])
    assert_error(api.call("GET", file_url(image["id"]), OWNER), 404)


@pytest.mark.parametrize("header, body, content_range", [
    ("bytes=0-0", b"h", "bytes 0-0/11"),
    ("bytes=2-4", b"llo", "bytes 2-4/11"),
    ("bytes=6-", b"world", "bytes 6-10/11"),
    ("bytes=3-100", b"lo world", "bytes 3-10/11"),
    ("bytes=-3", b"rld", "bytes 8-10/11"),
    ("bytes=-100", DATA, "bytes 0-10/11"),
])
def test_single_range_is_206(api, header, body, content_range):
    image = api.active(DATA)
    resp = api.call("GET", file_url(image["id"]), OWNER, headers={"Range": header})
    assert resp.status_int == 206 and resp.body == body
    assert resp.headers["Content-Range"] == content_range
    assert resp.headers["Content-Length"] == str(len(body))
    # As Glance (and a cache hit): the whole image's MD5, whatever part is sent.
    assert resp.headers["Content-MD5"] == hashlib.md5(DATA).hexdigest()


@pytest.mark.parametrize("header", ["bytes=11-", "bytes=20-30", "bytes=5-2", "bytes=abc",
                                    "items=0-1", "bytes=-0", "bytes=-"])
def test_unsatisfiable_range_is_416(api, header):
    image = api.active(DATA)
    resp = api.call("GET", file_url(image["id"]), OWNER, headers={"Range": header})
    assert_error(resp, 416)
    assert resp.headers["Content-Range"] == "bytes */11"


def test_multiple_ranges_are_400(api):
    image = api.active(DATA)
    resp = api.call("GET", file_url(image["id"]), OWNER, headers={"Range": "bytes=0-1,3-4"})
    assert_error(resp, 400, "multiple ranges")


class BrokenDiskStore(file_store.FileStore):
    """Writes go to ``device`` (opened with ``flags``) instead of the temp file."""

    def __init__(self, datadir, device, flags):
        super().__init__(datadir)
        self._device, self._flags = device, flags

    def _open_temp(self, image_id):
        fd, path = super()._open_temp(image_id)
        os.close(fd)
        return os.open(self._device or path, self._flags), path


@pytest.mark.parametrize("device, flags, status", [
    pytest.param("/dev/full", os.O_WRONLY, 413, marks=pytest.mark.skipif(
        not os.path.exists("/dev/full"), reason="no /dev/full")),
    (None, os.O_RDONLY, 500),
])
def test_store_failures_kill_the_image(api, device, flags, status):
    api.app = router.ImagesApp(db_api, BrokenDiskStore(str(api.store_dir), device, flags),
                               api.app.settings)
    image = api.create()
    assert_error(api.call("PUT", file_url(image["id"]), OWNER, body=DATA), status)
    assert status_of(image["id"]) == "killed"
    assert store_files(api) == []
