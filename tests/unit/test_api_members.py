"""Image members through the images app (api/members.py)."""

import pytest

from tests.unit.api_helpers import (  # noqa: F401  (fixtures)
    ADMIN, OTHER, OWNER, api, assert_error, make_api, migrated_template, user)

THIRD = user("third")


def members_url(image_id, member=None):
    url = "/v2/images/%s/members" % image_id
    return url if member is None else url + "/" + member


def add_member(api, image_id, member="other", context=OWNER):
    return api.call("POST", members_url(image_id), context, json={"member": member})


def test_member_lifecycle(api):
    image = api.create(visibility="shared")
    resp = add_member(api, image["id"])
    assert resp.status_int == 200
    member = resp.json
    assert member["image_id"] == image["id"] and member["member_id"] == "other"
    assert member["status"] == "pending" and member["schema"] == "/v2/schemas/member"
    listing = api.call("GET", members_url(image["id"]), OWNER).json
    assert listing["members"] == [member] and listing["schema"] == "/v2/schemas/members"
    assert api.call("GET", members_url(image["id"], "other"), OTHER).json == member
    resp = api.call("PUT", members_url(image["id"], "other"), OTHER, json={"status": "accepted"})
    assert resp.status_int == 200 and resp.json["status"] == "accepted"
    assert api.call("GET", "/v2/images", OTHER).json["images"][0]["id"] == image["id"]
    assert api.call("DELETE", members_url(image["id"], "other"), OWNER).status_int == 204
    assert api.call("GET", members_url(image["id"]), OWNER).json["members"] == []
    assert_error(api.call("GET", "/v2/images/%s" % image["id"], OTHER), 404)


def test_members_see_only_their_own_membership(api):
    image = api.create(visibility="shared")
    add_member(api, image["id"], "other")
    add_member(api, image["id"], "third")
    assert [m["member_id"] for m in api.call("GET", members_url(image["id"]), OTHER)
            .json["members"]] == ["other"]
    assert_error(api.call("GET", members_url(image["id"], "third"), OTHER), 404)
    assert len(api.call("GET", members_url(image["id"]), ADMIN).json["members"]) == 2


@pytest.mark.parametrize("visibility", ["private", "public", "community"])
def test_only_shared_images_have_members(api, visibility):
    image = api.create(ADMIN, visibility=visibility, owner="owner")
    assert_error(add_member(api, image["id"]), 403, "only shared images")
    assert_error(api.call("GET", members_url(image["id"]), OWNER), 403, "only shared images")


def test_member_permissions(api):
    image = api.create(visibility="shared")
    add_member(api, image["id"])
    assert_error(add_member(api, image["id"], "third", OTHER), 403)
    assert_error(api.call("PUT", members_url(image["id"], "other"), OWNER,
                          json={"status": "accepted"}), 403, "only the member")
    assert_error(api.call("DELETE", members_url(image["id"], "other"), OTHER), 403)
    assert_error(add_member(api, image["id"], "x", THIRD), 404)
    resp = api.call("PUT", members_url(image["id"], "other"), ADMIN, json={"status": "rejected"})
    assert resp.json["status"] == "rejected"


def test_member_errors(api):
    image = api.create(visibility="shared")
    add_member(api, image["id"])
    assert_error(add_member(api, image["id"]), 409, "already")
    for body in ({}, {"member": ""}, {"member": 5}, {"member": "x", "can_share": True},
                 {"member": "x" * 256}):
        assert_error(api.call("POST", members_url(image["id"]), OWNER, json=body), 400)
    for body in ({}, {"status": "maybe"}, {"status": "accepted", "x": 1}):
        assert_error(api.call("PUT", members_url(image["id"], "other"), OTHER, json=body), 400)
    assert_error(api.call("PUT", members_url(image["id"], "nobody"), ADMIN,
                          json={"status": "accepted"}), 404)
    assert_error(api.call("DELETE", members_url(image["id"], "nobody"), OWNER), 404)
    assert_error(api.call("POST", members_url(image["id"]), OWNER, body=b"{",
                          content_type="application/json"), 400, "json")


def test_member_quota(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, image_member_quota="1")
    image = api.create(visibility="shared")
    add_member(api, image["id"], "a")
    assert_error(add_member(api, image["id"], "b"), 413)

