"""The cache management API: admin only, Glance 2.18 routes, shapes and status codes."""

import json
import os

import pytest
import webob

from glance_cache_mw.api.cache_manage import CacheManageFilter
from glance_cache_mw.db import api as db_api
from tests.unit.filter_helpers import Setup, WithContext

DATA = os.urandom(20_000)


@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    s.manage = CacheManageFilter(s.filter, s.cache, db_api)
    yield s
    s.close()


def call(setup, method, path, admin=True, **headers):
    context = setup.admin if admin else setup.app_for("A").context
    req = webob.Request.blank(path, method=method, headers=headers)
    return req.get_response(WithContext(setup.manage, context))


def cache_image(setup, image):
    assert call(setup, "GET", "/v2/images/%s/file" % image["id"]).body == DATA


def test_list_shows_cached_and_queued_images(setup):
    cached, queued = setup.add_image(DATA), setup.add_image(DATA)
    cache_image(setup, cached)
    cache_image(setup, cached)
    assert call(setup, "PUT", "/v2/cache/%s" % queued["id"]).status_int == 202
    resp = call(setup, "GET", "/v2/cache")
    assert resp.status_int == 200 and resp.content_type == "application/json"
    body = json.loads(resp.body)
    assert body["queued_images"] == [queued["id"]]
    [entry] = body["cached_images"]
    assert entry["image_id"] == cached["id"] and entry["size"] == len(DATA)
    assert set(entry) >= {"image_id", "hits", "last_accessed", "last_modified", "size"}


@pytest.mark.parametrize("method, path", [
    ("GET", "/v2/cache"), ("PUT", "/v2/cache/%s"), ("DELETE", "/v2/cache/%s"),
    ("DELETE", "/v2/cache"), ("POST", "/v2/cache/prune"), ("POST", "/v2/cache/clean"),
    ("GET", "/v2/cache/nodes/%s"),
])
def test_non_admins_get_403(setup, method, path):
    image = setup.add_image(DATA)
    resp = call(setup, method, path.replace("%s", image["id"]), admin=False)
    assert resp.status_int == 403


def test_queue_refuses_unknown_and_inactive_images(setup):
    assert call(setup, "PUT", "/v2/cache/%s" % ("f" * 36)).status_int == 404
    queued = setup.add_image(DATA, status="queued")
    resp = call(setup, "PUT", "/v2/cache/%s" % queued["id"])
    assert resp.status_int == 400 and b"queued" in resp.body
    assert not setup.cache.is_queued(queued["id"])


def test_delete_entry_removes_cache_and_queue_or_404(setup):
    image = setup.add_image(DATA)
    cache_image(setup, image)
    assert call(setup, "DELETE", "/v2/cache/%s" % image["id"]).status_int == 204
    assert not setup.cache.is_cached(image["id"])
    assert call(setup, "DELETE", "/v2/cache/%s" % ("e" * 36)).status_int == 404


@pytest.mark.parametrize("target, cached_left, queued_left", [
    (None, False, False), ("cache", False, True), ("queue", True, False), ("CACHE", False, True),
])
def test_clear_targets(setup, target, cached_left, queued_left):
    cached, queued = setup.add_image(DATA), setup.add_image(DATA)
    cache_image(setup, cached)
    call(setup, "PUT", "/v2/cache/%s" % queued["id"])
    headers = {} if target is None else {"x-image-cache-clear-target": target}
    assert call(setup, "DELETE", "/v2/cache", **headers).status_int == 204
    assert setup.cache.is_cached(cached["id"]) == cached_left
    assert setup.cache.is_queued(queued["id"]) == queued_left


def test_clear_with_a_bad_target_is_400_and_clears_nothing(setup):
    image = setup.add_image(DATA)
    cache_image(setup, image)
    resp = call(setup, "DELETE", "/v2/cache", **{"x-image-cache-clear-target": "both"})
    assert resp.status_int == 400 and b"both" in resp.body
    assert setup.cache.is_cached(image["id"])


def test_prune_and_clean_report_what_they_did(setup):
    images = [setup.add_image(DATA) for _ in range(3)]
    for image in images:
        cache_image(setup, image)
    setup.cache.max_size = len(DATA)
    body = json.loads(call(setup, "POST", "/v2/cache/prune").body)
    assert body == {"total_files_pruned": 2, "total_bytes_pruned": 2 * len(DATA)}
    with open(setup.cache.driver.get_path("invalid", "junk"), "wb") as handle:
        handle.write(b"x")
    assert json.loads(call(setup, "POST", "/v2/cache/clean").body) == {"total_cleaned_files": 1}


def test_nodes_needs_the_centralized_driver(setup):
    image = setup.add_image(DATA)
    assert call(setup, "GET", "/v2/cache/nodes/%s" % image["id"]).status_int == 409


@pytest.mark.parametrize("method, path, allow", [
    ("POST", "/v2/cache", "DELETE, GET"), ("DELETE", "/v2/cache/prune", "POST"),
    ("GET", "/v2/cache/clean", "POST"), ("POST", "/v2/cache/%s" % ("a" * 36), "DELETE, PUT"),
])
def test_other_methods_are_405_with_allow(setup, method, path, allow):
    resp = call(setup, method, path)
    assert resp.status_int == 405 and resp.headers["Allow"] == allow


def test_malformed_id_is_404(setup):
    assert call(setup, "PUT", "/v2/cache/..").status_int == 404
    assert call(setup, "PUT", "/v2/cache/%s" % ("a" * 37)).status_int == 404


def test_a_request_body_on_list_is_400(setup):
    req = webob.Request.blank("/v2/cache", method="GET", body=b"{}")
    assert req.get_response(WithContext(setup.manage, setup.admin)).status_int == 400


def test_other_paths_pass_through(setup):
    image = setup.add_image(DATA)
    resp = call(setup, "GET", "/v2/images/%s/file" % image["id"])
    assert resp.headers["X-Image-Cache"] == "MISS"
