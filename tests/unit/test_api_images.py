"""Image records through the images app: create, show, list, update, delete, (de|re)activate."""

import uuid

import pytest

from glance_cache_mw.api import router
from tests.unit.api_helpers import (  # noqa: F401  (fixtures)
    ADMIN, OTHER, OWNER, PATCH_TYPE, api, assert_error, make_api, migrated_template, user)


# --- create ---------------------------------------------------------------------------------

def test_create_returns_glance_representation(api):
    resp = api.call("POST", "/v2/images", OWNER,
                    json={"name": "cirros", "disk_format": "qcow2", "container_format": "bare",
                          "min_ram": 64, "tags": ["a", "b", "a"], "os_distro": "cirros"})
    assert resp.status_int == 201
    image = resp.json
    assert resp.headers["Location"].endswith("/v2/images/%s" % image["id"])
    assert image["status"] == "queued" and image["visibility"] == "shared"
    assert image["owner"] == "owner" and image["protected"] is False
    assert image["os_hidden"] is False and image["min_disk"] == 0 and image["min_ram"] == 64
    assert image["size"] is None and image["checksum"] is None
    assert image["tags"] == ["a", "b"] and image["os_distro"] == "cirros"
    assert image["self"] == "/v2/images/%s" % image["id"]
    assert image["file"] == image["self"] + "/file"
    assert image["schema"] == "/v2/schemas/image"
    assert image["created_at"].endswith("Z")
    assert api.get(image["id"]) == image


def test_create_with_own_id_and_duplicate(api):
    image_id = str(uuid.uuid4())
    assert api.create(id=image_id)["id"] == image_id
    assert_error(api.call("POST", "/v2/images", OWNER, json={"id": image_id}), 409)


@pytest.mark.parametrize("body, status, fragment", [
    ({"id": "not-a-uuid"}, 400, "id"),
    ({"name": "x" * 256}, 400, "name"),
    ({"disk_format": "floppy"}, 400, "disk_format"),
    ({"container_format": 7}, 400, "container_format"),
    ({"min_ram": -1}, 400, "min_ram"),
    ({"min_disk": "1"}, 400, "min_disk"),
    ({"protected": "yes"}, 400, "protected"),
    ({"visibility": "everyone"}, 400, "visibility"),
    ({"tags": "a"}, 400, "tags"),
    ({"tags": ["x" * 256]}, 400, "tags"),
    ({"foo": 1}, 400, "foo"),
    ({"foo": None}, 400, "foo"),
    ({"status": "active"}, 403, "read-only"),
    ({"checksum": "abc"}, 403, "read-only"),
    ({"size": 1}, 403, "read-only"),
    ({"self": "/x"}, 403, "read-only"),
    ({"deleted": True}, 403, "reserved"),
    ({"location": "file:///etc/passwd"}, 403, "reserved"),
    ({"os_glance_importing": "x"}, 403, "reserved"),
    ({"owner": "someone-else"}, 403, "owned by"),
    ({"visibility": "public"}, 403, "publicize"),
])
def test_create_refuses_bad_values(api, body, status, fragment):
    assert_error(api.call("POST", "/v2/images", OWNER, json=body), status, fragment)


def test_admin_may_create_public_images_for_others(api):
    image = api.create(ADMIN, visibility="public", owner="someone")
    assert image["visibility"] == "public" and image["owner"] == "someone"


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400),
    (b"[]", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"{}", "text/plain", 415),
])
def test_create_refuses_bad_bodies(api, body, content_type, status):
    resp = api.call("POST", "/v2/images", OWNER, body=body, content_type=content_type)
    assert_error(resp, status)


def test_create_enforces_quotas(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, image_property_quota="1", image_tag_quota="1")
    assert_error(api.call("POST", "/v2/images", OWNER, json={"a": "1", "b": "2"}), 413)
    assert_error(api.call("POST", "/v2/images", OWNER, json={"tags": ["1", "2"]}), 413)
    assert api.create(a="1", tags=["1"])["a"] == "1"


def test_read_only_context_cannot_create(api):
    context = user("owner")
    context.read_only = True
    assert_error(api.call("POST", "/v2/images", context, json={}), 403, "read-only")


# --- show -----------------------------------------------------------------------------------

def test_show_hides_invisible_missing_and_deleted_images(api):
    private = api.create(visibility="private")
    assert_error(api.call("GET", "/v2/images/%s" % private["id"], OTHER), 404)
    assert api.call("GET", "/v2/images/%s" % private["id"], OWNER).status_int == 200
    assert_error(api.call("GET", "/v2/images/%s" % uuid.uuid4(), OWNER), 404)
    assert_error(api.call("GET", "/v2/images/%s" % ("x" * 80), OWNER), 404)
    api.call("DELETE", "/v2/images/%s" % private["id"], OWNER)
    assert_error(api.call("GET", "/v2/images/%s" % private["id"], ADMIN), 404)


def test_community_and_public_images_are_visible_to_all(api):
    community = api.create(visibility="community")
    public = api.create(ADMIN, visibility="public")
    for image in (community, public):
        assert api.call("GET", "/v2/images/%s" % image["id"], OTHER).status_int == 200


# --- list -----------------------------------------------------------------------------------

def _names(resp):
    assert resp.status_int == 200, resp.text
    return [image["name"] for image in resp.json["images"]]


def test_list_pages_with_next_links(api):
    for i in range(5):
        api.create(name="img-%d" % i)
    seen, url = [], "/v2/images?limit=2&sort_key=name&sort_dir=asc"
    while url:
        resp = api.call("GET", url, OWNER)
        seen += _names(resp)
        assert resp.json["schema"] == "/v2/schemas/images"
        assert "marker" not in resp.json["first"]
        url = resp.json.get("next")
    assert seen == ["img-%d" % i for i in range(5)]


def test_list_default_limit_and_max(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, limit_param_default="2", api_limit_max="3")
    for i in range(4):
        api.create(name="img-%d" % i)
    assert len(_names(api.call("GET", "/v2/images", OWNER))) == 2
    assert len(_names(api.call("GET", "/v2/images?limit=100", OWNER))) == 3


def test_list_sorts(api):
    for name in ("b", "c", "a"):
        api.create(name=name)
    assert _names(api.call("GET", "/v2/images?sort=name:asc", OWNER)) == ["a", "b", "c"]
    assert _names(api.call("GET", "/v2/images?sort=name:desc", OWNER)) == ["c", "b", "a"]
    assert _names(api.call("GET", "/v2/images", OWNER)) == ["a", "c", "b"]  # newest first
    assert _names(api.call("GET", "/v2/images?sort_key=name&sort_key=created_at"
                                  "&sort_dir=asc&sort_dir=desc", OWNER)) == ["a", "b", "c"]


def test_list_filters(api):
    first = api.create(name="one", disk_format="raw", tags=["red", "big"], colour="red")
    api.create(name="two", disk_format="qcow2", tags=["red"], colour="blue")
    api.create(name="hidden", os_hidden=True)
    api.create(name="protected", protected=True)
    get = lambda query: sorted(_names(api.call("GET", "/v2/images?" + query, OWNER)))  # noqa
    assert get("") == ["one", "protected", "two"]
    assert get("os_hidden=true") == ["hidden"]
    assert get("name=one") == ["one"]
    assert get("name=in:one,two") == ["one", "two"]
    assert get("disk_format=qcow2") == ["two"]
    assert get("tag=red") == ["one", "two"]
    assert get("tag=red&tag=big") == ["one"]
    assert get("colour=blue") == ["two"]
    assert get("protected=true") == ["protected"]
    assert get("id=%s" % first["id"]) == ["one"]
    assert get("status=queued&visibility=shared") == ["one", "protected", "two"]


def test_list_visibility_and_membership(api):
    api.create(name="mine", visibility="private")
    shared = api.create(name="shared", visibility="shared")
    api.create(ADMIN, name="public", visibility="public")
    api.call("POST", "/v2/images/%s/members" % shared["id"], OWNER, json={"member": "other"})
    assert sorted(_names(api.call("GET", "/v2/images", OTHER))) == ["public"]
    assert _names(api.call("GET", "/v2/images?member_status=pending", OTHER)) == [
        "public", "shared"]
    assert _names(api.call("GET", "/v2/images?visibility=public", OWNER)) == ["public"]
    assert sorted(_names(api.call("GET", "/v2/images", ADMIN))) == ["mine", "public", "shared"]


@pytest.mark.parametrize("query, fragment", [
    ("limit=abc", "limit"), ("limit=-1", "limit"), ("sort_key=colour", "sort key"),
    ("sort_dir=up", "sort direction"), ("sort=name:sideways", "sort direction"),
    ("sort=name&sort_key=name", "sort"), ("sort_key=name&sort_key=id&sort_dir=asc&sort_dir="
                                          "desc&sort_dir=asc", "sort direction"),
    ("visibility=everyone", "visibility"), ("member_status=maybe", "member_status"),
    ("protected=maybe", "protected"), ("size_min=big", "size"),
    ("created_at=gt:yesterday", "yesterday"), ("name=like:x", "operator"),
    ("marker=%s" % uuid.uuid4(), "marker"),
])
def test_list_refuses_bad_parameters(api, query, fragment):
    assert_error(api.call("GET", "/v2/images?" + query, OWNER), 400, fragment)


def test_list_marker_of_invisible_image_is_400(api):
    private = api.create(visibility="private")
    assert_error(api.call("GET", "/v2/images?marker=%s" % private["id"], OTHER), 400)


# --- update ---------------------------------------------------------------------------------

def test_update_attributes_properties_and_tags(api):
    image = api.create(name="before", foo="1", tags=["t1"])
    resp = api.patch(image["id"], [
        {"op": "replace", "path": "/name", "value": "after"},
        {"op": "add", "path": "/bar", "value": "2"},
        {"op": "replace", "path": "/foo", "value": "3"},
        {"op": "add", "path": "/min_disk", "value": 10},
        {"op": "replace", "path": "/tags", "value": ["t2", "t2", "t3"]},
        {"op": "add", "path": "/a~1b~0c", "value": "escaped"},
    ])
    assert resp.status_int == 200, resp.text
    updated = resp.json
    assert updated["name"] == "after" and updated["bar"] == "2" and updated["foo"] == "3"
    assert updated["min_disk"] == 10 and updated["tags"] == ["t2", "t3"]
    assert updated["a/b~c"] == "escaped"
    resp = api.patch(image["id"], [{"op": "remove", "path": "/foo"}])
    assert "foo" not in resp.json and resp.json["bar"] == "2"
    assert api.get(image["id"]) == resp.json


def test_update_add_overwrites_existing_property(api):
    image = api.create(foo="1")
    assert api.patch(image["id"], [{"op": "add", "path": "/foo", "value": "2"}]).json["foo"] == "2"


@pytest.mark.parametrize("changes, status, fragment", [
    ([{"op": "replace", "path": "/nope", "value": "x"}], 409, "does not exist"),
    ([{"op": "remove", "path": "/nope"}], 409, "does not exist"),
    ([{"op": "remove", "path": "/name"}], 403, "may not be removed"),
    ([{"op": "replace", "path": "/status", "value": "active"}], 403, "read-only"),
    ([{"op": "replace", "path": "/id", "value": str(uuid.uuid4())}], 403, "read-only"),
    ([{"op": "add", "path": "/deleted", "value": True}], 403, "reserved"),
    ([{"op": "add", "path": "/locations/-", "value": {}}], 403, "locations"),
    ([{"op": "replace", "path": "/owner", "value": "thief"}], 403, "owner"),
    ([{"op": "replace", "path": "/visibility", "value": "public"}], 403, "publicize"),
    ([{"op": "move", "path": "/name", "from": "/x"}], 400, "operation"),
    ([{"op": "add", "path": "/name"}], 400, "value"),
    ([{"op": "remove", "path": "/foo", "value": 1}], 400, "value"),
    ([{"op": "add", "path": "name", "value": "x"}], 400, "pointer"),
    ([{"op": "add", "path": "/a/b", "value": "x"}], 400, "nested"),
    ([{"op": "add", "path": "/a~2", "value": "x"}], 400, "pointer"),
    ([{"op": "add", "path": "/name", "value": "x", "extra": 1}], 400, "unknown"),
    ([{"op": "add", "path": "/name", "value": 5}], 400, "name"),
    ([{"op": "add", "path": "/foo", "value": 5}], 400, "foo"),
    ([{"op": "add", "path": "/disk_format", "value": "floppy"}], 400, "disk_format"),
    (["add"], 400, "object"),
    ({"op": "add"}, 400, "list"),
])
def test_update_refuses_bad_patches(api, changes, status, fragment):
    image = api.create(name="x")
    assert_error(api.patch(image["id"], changes), status, fragment)
    assert api.get(image["id"])["name"] == "x"


def test_update_needs_the_patch_media_type(api):
    image = api.create()
    resp = api.call("PATCH", "/v2/images/%s" % image["id"], OWNER,
                    json=[{"op": "replace", "path": "/name", "value": "x"}])
    assert_error(resp, 415, "json-patch")


def test_update_permissions(api):
    private = api.create(visibility="private")
    change = [{"op": "replace", "path": "/name", "value": "x"}]
    assert_error(api.patch(private["id"], change, OTHER), 404)
    community = api.create(visibility="community")
    assert_error(api.patch(community["id"], change, OTHER), 403)
    assert api.patch(community["id"], change, ADMIN).status_int == 200


def test_formats_are_fixed_once_data_is_uploaded(api):
    image = api.active(disk_format="raw")
    change = [{"op": "replace", "path": "/disk_format", "value": "qcow2"}]
    assert_error(api.patch(image["id"], change), 403, "queued")
    same = [{"op": "replace", "path": "/disk_format", "value": "raw"}]
    assert api.patch(image["id"], same).status_int == 200


def test_update_enforces_property_quota(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, image_property_quota="1")
    image = api.create(a="1")
    assert_error(api.patch(image["id"], [{"op": "add", "path": "/b", "value": "2"}]), 413)


# --- delete, deactivate, reactivate ---------------------------------------------------------

def test_delete_removes_record_and_data(api):
    image = api.active(b"bytes")
    assert (api.store_dir / image["id"]).exists()
    resp = api.call("DELETE", "/v2/images/%s" % image["id"], OWNER)
    assert resp.status_int == 204 and resp.body == b""
    assert not (api.store_dir / image["id"]).exists()
    assert_error(api.call("GET", "/v2/images/%s" % image["id"], OWNER), 404)
    assert_error(api.call("DELETE", "/v2/images/%s" % image["id"], OWNER), 404)


def test_delete_permissions_and_protection(api):
    image = api.create(visibility="community", protected=True)
    assert_error(api.call("DELETE", "/v2/images/%s" % image["id"], OTHER), 403)
    assert_error(api.call("DELETE", "/v2/images/%s" % image["id"], OWNER), 403, "protected")
    api.patch(image["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert api.call("DELETE", "/v2/images/%s" % image["id"], OWNER).status_int == 204


def test_deactivate_and_reactivate(api):
    image = api.active(visibility="community")
    url = "/v2/images/%s/actions/" % image["id"]
    assert api.call("POST", url + "deactivate", OWNER).status_int == 204
    assert api.get(image["id"])["status"] == "deactivated"
    assert api.call("POST", url + "deactivate", OWNER).status_int == 204  # no-op
    assert_error(api.call("POST", url + "reactivate", OTHER), 403)
    assert api.call("POST", url + "reactivate", OWNER).status_int == 204
    assert api.get(image["id"])["status"] == "active"
    assert api.call("POST", url + "reactivate", OWNER).status_int == 204  # no-op


def test_queued_images_cannot_be_deactivated(api):
    image = api.create()
    url = "/v2/images/%s/actions/" % image["id"]
    assert_error(api.call("POST", url + "deactivate", OWNER), 403, "queued")
    assert_error(api.call("POST", url + "reactivate", OWNER), 403, "queued")


# --- routing and contexts -------------------------------------------------------------------

def test_routing_errors(api):
    assert_error(api.call("GET", "/v2/nothing"), 404)
    resp = api.call("PUT", "/v2/images")
    assert_error(resp, 405)
    assert resp.headers["Allow"] == "GET, HEAD, POST"
    image = api.create()
    assert api.call("GET", "/v2.9/images/%s" % image["id"]).status_int == 200


def test_no_context_is_401_unless_configured(api, tmp_path, migrated_template):
    assert_error(api.call("GET", "/v2/images", None), 401)
    assert api.call("GET", "/versions", None).status_int == 200
    open_api = make_api(tmp_path, migrated_template, admin_without_context="true")
    assert open_api.call("GET", "/v2/images", None).status_int == 200


@pytest.mark.parametrize("key, raw, words", [
    ("image_tag_quota", "many", "is not an integer"),
    ("admin_without_context", "maybe", "is not a boolean"),
    ("api_limit_max", "0", "must be at least 1"),
    ("limit_param_default", "-1", "must be at least 1"),
])
def test_bad_settings_are_configuration_errors(tmp_path, key, raw, words):
    from glance_cache_mw import exception
    with pytest.raises(exception.InvalidConfiguration) as caught:
        router.app_factory({}, sql_connection="sqlite:///%s" % (tmp_path / "x.sqlite"),
                           **{key: raw})
    assert "%s=%r %s" % (key, raw, words) in str(caught.value)
    assert not (tmp_path / "x.sqlite").exists()


def test_unexpected_errors_are_500_without_traceback(api):
    class BrokenDB:
        def image_get(self, *args, **kwargs):
            raise RuntimeError("secret internals")

    app = router.ImagesApp(BrokenDB(), api.app.store)
    api.app = app
    resp = api.call("GET", "/v2/images/%s" % uuid.uuid4())
    assert_error(resp, 500)
    assert "secret" not in resp.text
