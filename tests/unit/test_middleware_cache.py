"""CacheFilter: hits, misses, ranges, visibility on every hit, coalescing and invalidation."""

import os
import threading
import time
import urllib.parse
from wsgiref.validate import validator

import pytest
import webob

from glance_cache_mw.db import api as db_api
from glance_cache_mw.image_cache import ImageCache, fill, pump
from glance_cache_mw.middleware.cache import CacheFilter
from tests.unit.filter_helpers import Setup, WithContext

DATA = os.urandom(50_000)


@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    s.close()


def get(app, path, **headers):
    """The response with its body read (and the iterator closed), as a client would."""
    resp = webob.Request.blank(path, headers=headers).get_response(validator(app))
    resp.body  # noqa: B018  (consume now: a lazy body would still be filling the cache)
    return resp


def test_miss_then_hit_same_bytes_and_headers_one_origin_read(setup):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    miss = get(app, url)
    hit = get(app, url)
    assert (miss.status_int, miss.headers["X-Image-Cache"]) == (200, "MISS")
    assert (hit.status_int, hit.headers["X-Image-Cache"]) == (200, "HIT")
    assert miss.body == hit.body == DATA
    strip = lambda r: {k: v for k, v in r.headers.items() if k != "X-Image-Cache"}
    assert strip(miss) == strip(hit)
    assert hit.headers["Content-MD5"] == image["checksum"]
    assert hit.headers["ETag"] == '"%s"' % image["os_hash_value"]
    assert hit.headers["Accept-Ranges"] == "bytes"
    assert setup.origin.reads[image["id"]] == 1


def test_an_image_id_of_non_ascii_characters_is_found_and_cached(setup):
    # PEP 3333: PATH_INFO is the URL's UTF-8 bytes as latin-1 text; the id must be decoded.
    image = setup.add_image(DATA, id="caf\u00e9-\u4e2d-image")
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % urllib.parse.quote(image["id"])
    assert [get(app, url).headers["X-Image-Cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert get(app, url).body == DATA


def test_version_prefix_is_matched(setup):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    get(app, "/v2/images/%s/file" % image["id"])
    assert get(app, "/v2.16/images/%s/file" % image["id"]).headers["X-Image-Cache"] == "HIT"


@pytest.mark.parametrize("header, status, start, end", [
    ("bytes=0-99", 206, 0, 100),
    ("bytes=49000-", 206, 49000, 50000),
    ("bytes=-10", 206, 49990, 50000),
    ("bytes=100-999999", 206, 100, 50000),
])
def test_single_range_on_a_hit_is_206_from_the_cache(setup, header, status, start, end):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    get(app, url)
    resp = get(app, url, Range=header)
    assert resp.status_int == status
    assert resp.headers["X-Image-Cache"] == "HIT"
    assert resp.body == DATA[start:end]
    assert resp.headers["Content-Range"] == "bytes %d-%d/%d" % (start, end - 1, len(DATA))
    assert setup.origin.reads[image["id"]] == 1


@pytest.mark.parametrize("header", ["bytes=50000-", "bytes=-0", "bytes=9-3", "pages=1-2"])
def test_unsatisfiable_range_on_a_hit_is_416(setup, header):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    get(app, url)
    resp = get(app, url, Range=header)
    assert resp.status_int == 416
    assert resp.headers["Content-Range"] == "bytes */%d" % len(DATA)


def test_multi_range_and_range_on_a_miss_go_to_the_origin(setup):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    ranged_miss = get(app, url, Range="bytes=0-9")
    assert ranged_miss.headers["X-Image-Cache"] == "BYPASS"
    assert ranged_miss.body == DATA[:10]
    assert not setup.cache.is_cached(image["id"])
    get(app, url)
    multi = get(app, url, Range="bytes=0-1,5-6")
    assert (multi.status_int, multi.headers["X-Image-Cache"]) == (400, "BYPASS")


def test_head_on_a_hit_has_the_headers_and_no_body(setup):
    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    get(app, url)
    resp = webob.Request.blank(url, method="HEAD").get_response(app)
    assert resp.status_int == 200 and resp.body == b""
    assert resp.headers["Content-Length"] == str(len(DATA))
    assert resp.headers["X-Image-Cache"] == "HIT"


@pytest.mark.parametrize("visibility, project, expected", [
    ("private", "B", 404),
    ("shared", "B", 404),
    ("private", None, 404),
    ("public", "B", 200),
    ("community", "B", 200),
    ("private", "A", 200),
])
def test_visibility_is_checked_on_every_hit(setup, visibility, project, expected):
    image = setup.add_image(DATA, owner="A", visibility=visibility)
    url = "/v2/images/%s/file" % image["id"]
    assert get(setup.app_for("A"), url).status_int == 200          # now cached
    resp = get(setup.app_for(project), url)
    assert resp.status_int == expected
    if expected == 404:
        assert DATA[:100] not in resp.body


def test_shared_image_member_gets_a_hit(setup):
    image = setup.add_image(DATA, owner="A", visibility="shared")
    db_api.image_member_create(setup.admin, {"image_id": image["id"], "member": "B",
                                             "status": "accepted"})
    url = "/v2/images/%s/file" % image["id"]
    get(setup.app_for("A"), url)
    resp = get(setup.app_for("B"), url)
    assert (resp.status_int, resp.headers["X-Image-Cache"]) == (200, "HIT")


def test_deleted_image_is_not_served_from_the_cache(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    get(setup.app_for("A"), url)
    db_api.image_destroy(setup.admin, image["id"])
    assert setup.cache.is_cached(image["id"])
    assert get(setup.app_for("A"), url).status_int == 404
    assert get(setup.app_for("admin", is_admin=True), url).status_int == 404


def test_deactivated_image_is_403_for_users_and_not_from_cache_for_admins(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    get(setup.app_for("A"), url)
    db_api.image_update(setup.admin, image["id"], {"status": "deactivated"})
    assert get(setup.app_for("A"), url).status_int == 403
    admin = get(setup.app_for("admin", is_admin=True), url)
    assert admin.headers["X-Image-Cache"] == "BYPASS"


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "..", "a" * 37, ".hidden",
                                    "x/../../y", "cache.db"])
def test_malformed_ids_are_404_before_disk_or_db(setup, bad_id):
    before = sorted(os.listdir(setup.cache.driver.base_dir))
    resp = get(setup.app_for("A"), "/v2/images/%s/file" % bad_id)
    assert resp.status_int == 404
    assert sorted(os.listdir(setup.cache.driver.base_dir)) == before
    assert setup.origin.reads == {}


def test_corrupt_origin_is_never_cached(setup):
    image = setup.add_image(DATA)
    setup.origin.corrupt.add(image["id"])
    url = "/v2/images/%s/file" % image["id"]
    resp = get(setup.app_for("A"), url)
    # The client gets the origin's bytes as the origin sent them (it checks Content-MD5 or
    # the multihash itself), the cache does not keep them.
    assert resp.headers["X-Image-Cache"] == "MISS" and resp.body != DATA
    assert len(resp.body) == len(DATA)
    assert not setup.cache.is_cached(image["id"])
    setup.origin.corrupt.clear()
    assert get(setup.app_for("A"), url).headers["X-Image-Cache"] == "MISS"
    assert get(setup.app_for("A"), url).headers["X-Image-Cache"] == "HIT"


def test_corrupt_origin_in_one_chunk_is_a_502_when_verified_before_the_last_byte(tmp_path):
    # The first chunk is the last: the verdict comes before any byte could go out. The origin
    # would send the same bytes again, unverified, so the client gets an error, not them.
    # Within one page, so that the follower sees the fill's one write whole or not at all.
    small = DATA[:1000]
    setup = Setup(tmp_path, image_cache_verify_before_last_byte="true")
    image = setup.add_image(small)
    setup.origin.corrupt.add(image["id"])
    setup.origin.chunk_size = len(small)
    try:
        resp = get(setup.app_for("A"), "/v2/images/%s/file" % image["id"])
        assert resp.status_int == 502
        assert resp.headers["X-Image-Cache"] == "MISS"
        assert "does not match its checksum" in resp.text
        assert not setup.cache.is_cached(image["id"])
    finally:
        setup.close()


def test_corrupt_origin_ends_short_when_verified_before_the_last_byte(tmp_path):
    setup = Setup(tmp_path, image_cache_verify_before_last_byte="true")
    image = setup.add_image(DATA)
    setup.origin.corrupt.add(image["id"])
    url = "/v2/images/%s/file" % image["id"]
    try:
        # Found out after the first byte: the body ends short (the server cuts the
        # connection); before it (the fill may finish first on a busy machine): a 502.
        try:
            resp = get(setup.app_for("A"), url)
        except fill.ImageDataMismatch:
            pass
        else:
            assert resp.status_int == 502, resp.status
            assert "does not match its checksum" in resp.text
            assert DATA[:100] not in resp.body
        assert not setup.cache.is_cached(image["id"])
    finally:
        setup.close()


def test_a_cached_file_of_the_wrong_size_is_evicted_not_served(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    get(setup.app_for("A"), url)
    with open(setup.cache.driver.get_image_filepath(image["id"]), "ab") as handle:
        handle.write(b"junk")
    resp = get(setup.app_for("A"), url)
    assert resp.headers["X-Image-Cache"] == "MISS" and resp.body == DATA


def _leave_after_the_first_chunk(setup, image):
    """A client that reads the first chunk of a miss and goes, while the origin (gated
    after its first chunk) holds the fill there; then the origin goes on."""
    setup.origin.gate = threading.Event()
    environ = webob.Request.blank("/v2/images/%s/file" % image["id"]).environ
    body = setup.app_for("A")(environ, lambda status, headers, exc_info=None: None)
    next(iter(body))
    body.close()
    time.sleep(2 * pump.CHECK_INTERVAL_S)   # the fill looks again at its next chunk
    setup.origin.gate.set()
    deadline = time.monotonic() + 10
    while setup.cache.is_being_cached(image["id"]) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_fill_nobody_follows_before_half_is_abandoned(setup):
    image = setup.add_image(DATA)
    _leave_after_the_first_chunk(setup, image)     # 4 KiB of 50 KB written
    assert not setup.cache.is_cached(image["id"])
    assert not setup.cache.is_being_cached(image["id"])
    assert os.listdir(setup.cache.driver.get_path("incomplete")) == []


def test_a_fill_nobody_follows_past_half_is_finished(setup):
    image = setup.add_image(DATA)
    setup.origin.chunk_size = 30_000                 # the first chunk is past half
    _leave_after_the_first_chunk(setup, image)
    assert setup.cache.is_cached(image["id"])
    assert os.listdir(setup.cache.driver.get_path("incomplete")) == []


def test_delete_and_deactivate_evict_the_local_copy(setup):
    first, second = setup.add_image(DATA), setup.add_image(DATA[:1000])
    app = setup.app_for("A")
    for image in (first, second):
        get(app, "/v2/images/%s/file" % image["id"])
        assert setup.cache.is_cached(image["id"])
    assert webob.Request.blank("/v2/images/%s" % first["id"], method="DELETE") \
        .get_response(app).status_int == 204
    assert webob.Request.blank("/v2/images/%s/actions/deactivate" % second["id"],
                               method="POST").get_response(app).status_int == 204
    assert not setup.cache.is_cached(first["id"])
    assert not setup.cache.is_cached(second["id"])


def test_hits_use_the_servers_file_wrapper(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    get(setup.app_for("A"), url)
    wrapped = []

    def file_wrapper(handle, block_size):
        wrapped.append(handle)
        return iter(lambda: handle.read(block_size), b"")

    req = webob.Request.blank(url, environ={"wsgi.file_wrapper": file_wrapper})
    resp = req.get_response(setup.app_for("A"))
    assert resp.body == DATA and len(wrapped) == 1
    wrapped[0].close()


def test_concurrent_cold_downloads_read_the_origin_once(setup):
    image = setup.add_image(DATA)
    url = "/v2/images/%s/file" % image["id"]
    setup.origin.gate = threading.Event()
    results = {}

    def download(name):
        resp = webob.Request.blank(url).get_response(setup.app_for("A"))
        results[name] = (resp.headers["X-Image-Cache"], resp.body)

    attached = threading.Semaphore(0)
    real_follow = setup.cache.follow

    def follow(*args, **kwargs):   # counts followers so the filler is released after them
        follower = real_follow(*args, **kwargs)
        attached.release()
        return follower

    setup.cache.follow = follow
    first = threading.Thread(target=download, args=("first",))
    first.start()
    while not setup.cache.is_being_cached(image["id"]):
        pass   # the first request is now the filler, held after its first chunk
    others = [threading.Thread(target=download, args=(i,)) for i in range(4)]
    for thread in others:
        thread.start()
    for _ in others:
        assert attached.acquire(timeout=10)
    setup.origin.gate.set()
    for thread in [first] + others:
        thread.join(30)
    assert results["first"] == ("MISS", DATA)
    assert all(results[i] == ("COALESCED", DATA) for i in range(4))
    assert setup.origin.reads[image["id"]] == 1


def test_a_fill_failing_before_the_first_byte_is_answered_by_the_origin_not_200(setup):
    image = setup.add_image(DATA)
    writer = setup.cache.admit(image["id"], len(DATA))   # a fill that has written nothing yet
    del setup.origin.data[image["id"]]                   # and the origin lost the data
    threading.Timer(0.1, writer.discard).start()         # then that fill dies
    environ = webob.Request.blank("/v2/images/%s/file" % image["id"]).environ
    statuses = []
    body = setup.app_for("A")(environ, lambda status, headers, exc_info=None:
                              statuses.append((status, dict(headers))))
    data = b"".join(body)
    getattr(body, "close", lambda: None)()
    # Never "200 COALESCED" followed by an error: the origin answers for itself.
    assert [status for status, _ in statuses] == ["404 Not Found"]
    assert statuses[0][1]["X-Image-Cache"] == "BYPASS" and data


def test_a_fill_committed_during_the_miss_makes_it_a_hit(setup, tmp_path):
    """Between this request's hit lookup and its admission another worker's fill commits:
    the image is served from the cache (HIT), not read from the origin again."""
    image = setup.add_image(DATA)
    settings = {"image_cache_dir": str(tmp_path / "cache"), "image_cache_max_size": "10485760"}
    other_worker = ImageCache.from_config(settings)

    class CommittedMeanwhile(ImageCache):
        def admit(self, image_id, size):
            assert other_worker.cache_image_iter(
                image_id, iter([DATA]), size, checksum=image["checksum"],
                os_hash_algo="sha512", os_hash_value=image["os_hash_value"])
            return super().admit(image_id, size)

    cache = CommittedMeanwhile.from_config(settings)
    try:
        app = WithContext(CacheFilter(setup.origin, cache, db_api, chunk_size=4096),
                          setup.admin)
        resp = get(app, "/v2/images/%s/file" % image["id"])
        assert (resp.status_int, resp.headers["X-Image-Cache"], resp.body) == (200, "HIT", DATA)
        assert setup.origin.reads.get(image["id"], 0) == 0
    finally:
        cache.close()
        other_worker.close()
