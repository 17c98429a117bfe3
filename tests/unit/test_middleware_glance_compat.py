"""The drop-in's glue, without Glance: a foreign ``req.context``, the authorize hook, settings.

The real thing (Glance 33 under uWSGI) is tests/functional/test_glance_dropin.py; these
cover the parts that do not need Glance: a context stored the way Glance's context middleware
stores it (WebOb's ``req.context``), the policy hook's place on the hit and follower paths,
and that standalone settings are untouched.
"""

import os
import threading

import pytest
import webob
import webob.dec
import webob.exc

from glance_cache_mw import config
from glance_cache_mw.api.cache_manage import CacheManageFilter
from glance_cache_mw.db import api as db_api
from glance_cache_mw.image_cache import drivers
from glance_cache_mw.middleware import glance_compat
from tests.unit import cache_helpers
from tests.unit.filter_helpers import Setup

DATA = os.urandom(30_000)


class ForeignContext:
    """Shaped like Glance's RequestContext: no relation to ours."""

    def __init__(self, project_id, roles=("member",), is_admin=False):
        self.project_id, self.roles, self.is_admin = project_id, list(roles), is_admin
        self.user_id = "user-of-" + str(project_id)

    @property
    def owner(self):
        return self.project_id


def with_req_context(app, context):
    """What Glance's context middleware does: ``req.context = ...`` on a WebOb request."""
    @webob.dec.wsgify
    def middleware(req):
        req.context = context
        return req.get_response(app)
    return middleware


@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    s.close()


def get(app, path):
    resp = webob.Request.blank(path).get_response(app)
    resp.body  # noqa: B018  (read it all, as a client would)
    return resp


def test_req_context_is_found_in_webob_adhoc_attrs(setup):
    image = setup.add_image(DATA, owner="A")
    app = with_req_context(setup.filter, ForeignContext("A"))
    url = "/v2/images/%s/file" % image["id"]
    miss, hit = get(app, url), get(app, url)
    assert (miss.status_int, miss.headers["X-Image-Cache"]) == (200, "MISS")
    assert (hit.status_int, hit.headers["X-Image-Cache"]) == (200, "HIT")
    assert hit.body == DATA and setup.origin.reads[image["id"]] == 1


def test_foreign_context_of_another_project_gets_404_for_a_cached_private_image(setup):
    image = setup.add_image(DATA, owner="A")
    url = "/v2/images/%s/file" % image["id"]
    assert get(with_req_context(setup.filter, ForeignContext("A")), url).status_int == 200
    other = get(with_req_context(setup.filter, ForeignContext("B")), url)
    assert other.status_int == 404 and DATA not in other.body
    admin = get(with_req_context(setup.filter, ForeignContext("B", ("admin",), True)), url)
    assert (admin.status_int, admin.headers["X-Image-Cache"]) == (200, "HIT")


def test_a_context_without_is_admin_is_no_context(setup):
    image = setup.add_image(DATA, owner="A")
    resp = get(with_req_context(setup.filter, object()), "/v2/images/%s/file" % image["id"])
    assert (resp.status_int, resp.headers["X-Image-Cache"]) == (200, "BYPASS")
    assert not setup.cache.is_cached(image["id"])


def test_authorize_hook_guards_hits_and_followers_not_other_images(setup):
    allowed, denied = setup.add_image(DATA), setup.add_image(DATA)
    for image in (allowed, denied):   # cached while the hook allowed everything
        assert get(setup.app_for("A"), "/v2/images/%s/file" % image["id"]).status_int == 200
    asked = []

    def authorize(environ, image):
        asked.append(image["id"])
        if image["id"] == denied["id"]:
            return webob.exc.HTTPForbidden(explanation="policy says no")
        return None

    setup.filter.authorize = authorize
    app = setup.app_for("A")
    no = get(app, "/v2/images/%s/file" % denied["id"])
    assert no.status_int == 403 and DATA not in no.body
    ranged = webob.Request.blank("/v2/images/%s/file" % denied["id"],
                                 headers={"Range": "bytes=0-9"}).get_response(app)
    assert ranged.status_int == 403
    assert get(app, "/v2/images/%s/file" % allowed["id"]).headers["X-Image-Cache"] == "HIT"
    assert asked == [denied["id"], denied["id"], allowed["id"]]

    # A follower of a fill in progress is asked too, before it gets a byte.
    cold = setup.add_image(DATA)
    setup.filter.authorize = None
    setup.origin.gate = threading.Event()
    first = {}
    thread = threading.Thread(target=lambda: first.update(
        resp=get(setup.app_for("A"), "/v2/images/%s/file" % cold["id"])))
    thread.start()
    try:
        for _ in range(500):
            if setup.cache.is_being_cached(cold["id"]):
                break
            threading.Event().wait(0.01)
        setup.filter.authorize = lambda environ, image: webob.exc.HTTPForbidden()
        follower = get(setup.app_for("A"), "/v2/images/%s/file" % cold["id"])
        assert follower.status_int == 403
    finally:
        setup.origin.gate.set()
        thread.join(10)
    assert first["resp"].status_int == 200 and first["resp"].body == DATA


def test_cache_management_accepts_a_foreign_admin_context(setup):
    manage = CacheManageFilter(setup.filter, setup.cache, db_api)
    admin = webob.Request.blank("/v2/cache").get_response(
        with_req_context(manage, ForeignContext("P", ("admin",), True)))
    user = webob.Request.blank("/v2/cache").get_response(
        with_req_context(manage, ForeignContext("P")))
    assert admin.status_int == 200 and admin.json["cached_images"] == []
    assert user.status_int == 403


def test_outside_glance_settings_are_the_paste_sections_and_no_policy():
    assert not glance_compat.running_in_glance()
    assert glance_compat.settings_from_glance() == {}
    paste = {"image_cache_dir": "/x", "sql_connection": "sqlite://", "here": "/etc"}
    assert glance_compat.merged_settings(paste) == paste
    assert glance_compat.DownloadPolicy.if_in_glance() is None


def test_our_own_context_wins_over_a_foreign_one():
    ours = object()
    environ = {"glance.context": ours,
               "webob.adhoc_attrs": {"context": ForeignContext("B")}}
    assert glance_compat.request_context(environ) is ours
    view = glance_compat.request_context({"webob.adhoc_attrs": {
        "context": ForeignContext("B", ("admin", "member"), True)}})
    assert (view.owner, view.is_admin, view.roles) == ("B", True, ["admin", "member"])


def test_xattr_driver_shares_glances_hit_attribute(tmp_path):
    """Glance's xattr driver counts hits in ``user.hits`` and lists atime as last access; a
    file it cached (no attribute of ours) is listed that way, and our hits add to it."""
    if not cache_helpers.xattr_supported(tmp_path):
        pytest.skip("the filesystem of %s has no user xattrs" % tmp_path)
    driver = drivers.load_driver("xattr", {"image_cache_dir": str(tmp_path / "cache")})
    try:
        image_id = "0b1f4ac0-8f0f-4d1f-9d6b-2f3c6f7a5e01"
        path = tmp_path / "cache" / image_id
        path.write_bytes(DATA)                        # as Glance's driver commits it
        os.setxattr(path, "user.hits", b"4")
        os.utime(path, (1_000_000, 2_000_000))        # atime, mtime
        [entry] = driver.get_cached_images()
        assert (entry["image_id"], entry["hits"]) == (image_id, 4)
        assert (entry["last_accessed"], entry["last_modified"]) == (1_000_000, 2_000_000)
        driver.apply_hits({image_id: (2, 3_000_000.0)})
        assert os.getxattr(path, "user.hits") == b"6"  # what Glance's driver reads
        assert driver.get_cached_images()[0]["last_accessed"] == 3_000_000.0
    finally:
        driver.close()


def test_a_glance_api_conf_is_a_config_file_for_our_commands(tmp_path):
    conf = tmp_path / "glance-api.conf"
    conf.write_text("[DEFAULT]\nimage_cache_dir = /var/lib/glance/image-cache\n"
                    "image_cache_max_size = 2048\n"
                    "logging_context_format_string = %(asctime)s %(message)s\n"
                    "[database]\nconnection = postgresql://glance@db/glance\n")
    settings = config.Config.from_file(str(conf))
    assert settings.sql_connection == "postgresql://glance@db/glance"
    assert (settings.image_cache_dir, settings.image_cache_max_size) == (
        "/var/lib/glance/image-cache", 2048)
