"""Locations, properties, members and tags of an image (spec §4.6-§4.9)."""

import datetime

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api, models
from tests.db.helpers import (
    FOUR_BYTE, MEMBER_KEYS, admin_context, all_properties, at, create_image, insert_rows,
    live_properties, new_id, user_context)

pytestmark = pytest.mark.usefixtures("db")


def _loc(url, status="active", **metadata):
    return {"url": url, "metadata": metadata, "status": status}


def _locations(image_id, force_show_deleted=False):
    image = api.image_get(admin_context(), image_id, force_show_deleted=force_show_deleted)
    return [(loc["url"], loc["metadata"], loc["status"]) for loc in image["locations"]]


# --- locations ------------------------------------------------------------------------------

def test_location_add_appends_in_order():
    image = create_image()
    api.image_location_add(admin_context(), image["id"], _loc("file:///a", k="v"))
    api.image_location_add(admin_context(), image["id"],
                           _loc("swift://b", nested={"deep": [1, 2]}))
    assert _locations(image["id"]) == [
        ("file:///a", {"k": "v"}, "active"), ("swift://b", {"nested": {"deep": [1, 2]}},
                                              "active")]
    first, second = api.image_get(admin_context(), image["id"])["locations"]
    assert isinstance(first["id"], int) and first["id"] != second["id"]


@pytest.mark.parametrize("status", ["deleted", "pending_delete"])
def test_location_add_with_deleting_status_is_created_deleted(status):
    image = create_image()
    api.image_location_add(admin_context(), image["id"], _loc("file:///gone", status))
    assert _locations(image["id"]) == []
    assert _locations(image["id"], force_show_deleted=True) == [("file:///gone", {}, status)]


def test_location_add_any_other_status_is_live():
    image = create_image()
    api.image_location_add(admin_context(), image["id"], _loc("file:///a", "whatever"))
    assert _locations(image["id"]) == [("file:///a", {}, "whatever")]


def test_location_add_without_status_is_invalid():
    image = create_image()
    with pytest.raises(exception.Invalid):
        api.image_location_add(admin_context(), image["id"], {"url": "file:///a",
                                                              "metadata": {}})
    assert _locations(image["id"]) == []


def test_location_add_for_missing_image_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_location_add(admin_context(), new_id(), _loc("file:///a"))


@pytest.mark.parametrize("location", [
    _loc("file:///" + FOUR_BYTE), _loc("file:///a", key=FOUR_BYTE),
    _loc("file:///a", nested={"deeper": FOUR_BYTE})], ids=["url", "metadata", "nested"])
def test_location_add_with_4_byte_unicode_is_invalid(location):
    image = create_image()
    with pytest.raises(exception.Invalid):
        api.image_location_add(admin_context(), image["id"], location)
    assert _locations(image["id"], force_show_deleted=True) == []


def test_location_add_needs_no_authorization():
    image = create_image(owner="tenant1", visibility="private")
    api.image_location_add(user_context("tenant2"), image["id"], _loc("file:///a"))
    assert _locations(image["id"]) == [("file:///a", {}, "active")]


def _image_with_location(url="file:///a"):
    image = create_image(locations=[_loc(url)])
    return image["id"], image["locations"][0]["id"]


def test_location_update_sets_url_metadata_status():
    image_id, loc_id = _image_with_location()
    api.image_location_update(admin_context(), image_id, {
        "id": loc_id, "url": "file:///b", "metadata": {"m": "1"}, "status": "active"})
    (loc,) = api.image_get(admin_context(), image_id)["locations"]
    assert loc == {"id": loc_id, "url": "file:///b", "metadata": {"m": "1"},
                   "status": "active"}


def test_location_update_to_deleted_and_back_undeletes():
    image_id, loc_id = _image_with_location()
    api.image_location_update(admin_context(), image_id, {
        "id": loc_id, "url": "file:///a", "metadata": {}, "status": "pending_delete"})
    assert _locations(image_id) == []
    assert _locations(image_id, force_show_deleted=True) == [("file:///a", {}, "pending_delete")]
    api.image_location_update(admin_context(), image_id, {
        "id": loc_id, "url": "file:///a", "metadata": {}, "status": "active"})
    assert _locations(image_id) == [("file:///a", {}, "active")]


def test_location_update_without_id_is_invalid():
    image_id, _ = _image_with_location()
    with pytest.raises(exception.Invalid):
        api.image_location_update(admin_context(), image_id, {
            "id": None, "url": "file:///b", "metadata": {}, "status": "active"})
    assert _locations(image_id) == [("file:///a", {}, "active")]


def test_location_update_unknown_or_foreign_id_is_not_found():
    image_id, loc_id = _image_with_location()
    other_id, _ = _image_with_location("file:///other")
    with pytest.raises(exception.NotFound):
        api.image_location_update(admin_context(), image_id, {
            "id": loc_id + 1000, "url": "file:///b", "metadata": {}, "status": "active"})
    with pytest.raises(exception.NotFound):
        api.image_location_update(admin_context(), other_id, {
            "id": loc_id, "url": "file:///b", "metadata": {}, "status": "active"})
    assert _locations(image_id) == [("file:///a", {}, "active")]
    assert _locations(other_id) == [("file:///other", {}, "active")]


def test_location_update_with_4_byte_unicode_is_invalid():
    image_id, loc_id = _image_with_location()
    with pytest.raises(exception.Invalid):
        api.image_location_update(admin_context(), image_id, {
            "id": loc_id, "url": "file:///" + FOUR_BYTE, "metadata": {}, "status": "active"})
    assert _locations(image_id) == [("file:///a", {}, "active")]


@pytest.mark.parametrize("status", ["deleted", "pending_delete"])
def test_location_delete(status):
    image = create_image(locations=[_loc("file:///a"), _loc("file:///b")])
    first = image["locations"][0]["id"]
    api.image_location_delete(admin_context(), image["id"], first, status)
    assert _locations(image["id"]) == [("file:///b", {}, "active")]
    assert _locations(image["id"], force_show_deleted=True) == [
        ("file:///a", {}, status), ("file:///b", {}, "active")]


def test_location_delete_with_bad_status_is_invalid():
    image_id, loc_id = _image_with_location()
    with pytest.raises(exception.Invalid):
        api.image_location_delete(admin_context(), image_id, loc_id, "active")
    assert _locations(image_id) == [("file:///a", {}, "active")]


def test_location_delete_unknown_or_foreign_id_is_not_found():
    image_id, loc_id = _image_with_location()
    other_id, _ = _image_with_location()
    with pytest.raises(exception.NotFound):
        api.image_location_delete(admin_context(), image_id, loc_id + 1000, "deleted")
    with pytest.raises(exception.NotFound):
        api.image_location_delete(admin_context(), other_id, loc_id, "deleted")
    assert _locations(image_id) == [("file:///a", {}, "active")]


# --- properties -----------------------------------------------------------------------------

def test_property_create_returns_record():
    image = create_image()
    prop = api.image_property_create(admin_context(), {
        "image_id": image["id"], "name": "os_distro", "value": "ubuntu"})
    assert {"id", "image_id", "name", "value", "created_at", "updated_at", "deleted"} <= \
        set(prop)
    assert (prop["image_id"], prop["name"], prop["value"]) == (image["id"], "os_distro",
                                                               "ubuntu")
    assert prop["deleted"] is False and isinstance(prop["created_at"], datetime.datetime)
    assert live_properties(api.image_get(admin_context(), image["id"])) == {
        "os_distro": "ubuntu"}


def test_property_create_drops_protected_attributes():
    image = create_image()
    prop = api.image_property_create(admin_context(), {
        "image_id": image["id"], "name": "a", "value": "1", "deleted": True,
        "deleted_at": at(0), "created_at": at(0)})
    assert prop["deleted"] is False and prop["created_at"] != at(0)
    assert live_properties(api.image_get(admin_context(), image["id"])) == {"a": "1"}


def test_property_create_on_existing_name_is_duplicate():
    image = create_image(properties={"a": "1"})
    with pytest.raises(exception.Duplicate):
        api.image_property_create(admin_context(), {"image_id": image["id"], "name": "a",
                                                    "value": "2"})
    assert all_properties(api.image_get(admin_context(), image["id"])) == {"a": ("1", False)}


def test_property_create_on_deleted_name_is_duplicate():
    image = create_image(properties={"a": "1"})
    api.image_property_delete(admin_context(), "a", image["id"])
    with pytest.raises(exception.Duplicate):
        api.image_property_create(admin_context(), {"image_id": image["id"], "name": "a",
                                                    "value": "2"})


def test_property_create_same_name_on_other_image():
    one, two = create_image(properties={"a": "1"}), create_image()
    api.image_property_create(admin_context(), {"image_id": two["id"], "name": "a",
                                                "value": "2"})
    assert live_properties(api.image_get(admin_context(), one["id"])) == {"a": "1"}
    assert live_properties(api.image_get(admin_context(), two["id"])) == {"a": "2"}


def test_property_create_for_missing_image_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_property_create(admin_context(), {"image_id": new_id(), "name": "a",
                                                    "value": "1"})


@pytest.mark.parametrize("name, value", [("a", FOUR_BYTE), (FOUR_BYTE, "v")])
def test_property_create_with_4_byte_unicode_is_invalid(name, value):
    image = create_image()
    with pytest.raises(exception.Invalid):
        api.image_property_create(admin_context(), {"image_id": image["id"], "name": name,
                                                    "value": value})
    assert api.image_get(admin_context(), image["id"])["properties"] == []


def test_property_create_needs_no_authorization():
    image = create_image(owner="tenant1", visibility="private")
    api.image_property_create(user_context("tenant2"), {"image_id": image["id"], "name": "a",
                                                        "value": "1"})
    assert live_properties(api.image_get(admin_context(), image["id"])) == {"a": "1"}


def test_property_delete_soft_deletes_and_returns_record():
    image = create_image(properties={"a": "1", "b": "2"})
    deleted = api.image_property_delete(admin_context(), "a", image["id"])
    assert deleted["name"] == "a" and deleted["image_id"] == image["id"]
    assert deleted["deleted"] is True and deleted["deleted_at"] is not None
    fetched = api.image_get(admin_context(), image["id"])
    assert all_properties(fetched) == {"a": ("1", True), "b": ("2", False)}


def test_property_delete_of_deleted_property_deletes_again():
    image = create_image(properties={"a": "1"})
    api.image_property_delete(admin_context(), "a", image["id"])
    again = api.image_property_delete(admin_context(), "a", image["id"])
    assert again["deleted"] is True


def test_property_delete_unknown_name_is_not_found():
    image = create_image(properties={"a": "1"})
    with pytest.raises(exception.NotFound):
        api.image_property_delete(admin_context(), "b", image["id"])
    with pytest.raises(exception.NotFound):
        api.image_property_delete(admin_context(), "a", new_id())


def test_deleted_property_is_revived_by_image_update():
    image = create_image(properties={"a": "1"})
    api.image_property_delete(admin_context(), "a", image["id"])
    updated = api.image_update(admin_context(), image["id"], {"properties": {"a": "3"}})
    assert all_properties(updated) == {"a": ("3", False)}


# --- members --------------------------------------------------------------------------------

def _member(image_id, member="tenant2", **values):
    return api.image_member_create(admin_context(), dict(image_id=image_id, member=member,
                                                         **values))


def test_member_create_returns_member_dict_with_defaults():
    image = create_image(owner="tenant1")
    member = _member(image["id"])
    assert set(member) == MEMBER_KEYS
    assert member["image_id"] == image["id"] and member["member"] == "tenant2"
    assert member["can_share"] is False and member["status"] == "pending"
    assert member["deleted"] is False
    assert isinstance(member["id"], int)
    assert isinstance(member["created_at"], datetime.datetime)
    assert member["created_at"].tzinfo is None


def test_member_create_with_status_and_can_share():
    image = create_image(owner="tenant1")
    member = _member(image["id"], status="accepted", can_share=True)
    assert member["status"] == "accepted" and member["can_share"] is True


def test_member_create_drops_protected_attributes():
    image = create_image(owner="tenant1")
    member = _member(image["id"], deleted=True, created_at=at(0))
    assert member["deleted"] is False and member["created_at"] != at(0)
    assert api.image_member_count(admin_context(), image["id"]) == 1


def test_member_create_needs_no_authorization_nor_shared_image():
    image = create_image(owner="tenant1", visibility="private")
    member = api.image_member_create(user_context("tenant3"), {"image_id": image["id"],
                                                               "member": "tenant2"})
    assert member["member"] == "tenant2"


def test_member_create_refuses_a_second_live_row_for_the_same_member():
    # Deliberate deviation (docs/glance-differences.md): Glance allows live duplicates (spec §4.8); we
    # refuse them, so a membership has one status. A deleted one may be created again.
    image = create_image(owner="tenant1")
    first = _member(image["id"])
    with pytest.raises(exception.Duplicate):
        _member(image["id"])
    assert api.image_member_count(admin_context(), image["id"]) == 1
    api.image_member_delete(admin_context(), first["id"])
    assert _member(image["id"])["id"] != first["id"]


@pytest.mark.parametrize("status", ["maybe", "ACCEPTED", ""])
def test_member_status_is_validated(status):
    # Deliberate deviation: Glance stores any status string.
    image = create_image(owner="tenant1")
    values = {"image_id": image["id"], "member": "tenant2", "status": status}
    if status:
        with pytest.raises(exception.Invalid):
            api.image_member_create(admin_context(), values)
    else:   # empty means the default, pending
        assert api.image_member_create(admin_context(), values)["status"] == "pending"


def test_duplicate_live_member_rows_from_a_glance_database(db):
    image = create_image(owner="tenant1", visibility="shared")
    insert_rows(db, models.image_members, *[
        {"image_id": image["id"], "member": "tenant2", "status": "accepted",
         "can_share": False} for _ in range(2)])
    assert api.image_member_count(admin_context(), image["id"]) == 2
    assert len(api.image_member_find(user_context("tenant2"), image_id=image["id"])) == 2
    assert api.is_image_visible(user_context("tenant2"), image, status="accepted") is True
    # listed once although two member rows match (spec §5.3: a UNION)
    assert [i["id"] for i in api.image_get_all(user_context("tenant2"))] == [image["id"]]
    assert [i["id"] for i in api.image_get_all(user_context(None))] == [image["id"]]


def test_member_create_for_missing_image_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        _member(new_id())


def test_member_create_with_4_byte_unicode_is_invalid():
    image = create_image()
    with pytest.raises(exception.Invalid):
        _member(image["id"], member="tenant" + FOUR_BYTE)
    assert api.image_member_count(admin_context(), image["id"]) == 0


def test_member_update():
    image = create_image(owner="tenant1")
    member = _member(image["id"], can_share=True, created_at=at(0))
    updated = api.image_member_update(admin_context(), member["id"], {"status": "accepted"})
    assert set(updated) == MEMBER_KEYS
    assert updated["id"] == member["id"] and updated["status"] == "accepted"
    assert updated["can_share"] is False  # re-defaulted when absent from values
    assert updated["created_at"] == member["created_at"]
    assert updated["updated_at"] >= member["updated_at"]
    (found,) = api.image_member_find(admin_context(), image_id=image["id"])
    assert found["status"] == "accepted" and found["can_share"] is False


def test_member_update_keeps_can_share_when_given():
    image = create_image(owner="tenant1")
    member = _member(image["id"])
    updated = api.image_member_update(admin_context(), member["id"],
                                      {"status": "rejected", "can_share": True})
    assert (updated["status"], updated["can_share"]) == ("rejected", True)


def test_member_update_resurrects_a_deleted_membership():
    image = create_image(owner="tenant1")
    member = _member(image["id"])
    api.image_member_delete(admin_context(), member["id"])
    assert api.image_member_count(admin_context(), image["id"]) == 0
    updated = api.image_member_update(admin_context(), member["id"], {"status": "pending"})
    assert updated["deleted"] is False
    assert api.image_member_count(admin_context(), image["id"]) == 1


def test_member_update_unknown_id_is_not_found():
    with pytest.raises(exception.NotFound):
        api.image_member_update(admin_context(), 987654, {"status": "accepted"})


def test_member_delete_soft_deletes():
    image = create_image(owner="tenant1")
    member = _member(image["id"])
    other = _member(image["id"], member="tenant3")
    api.image_member_delete(admin_context(), member["id"])
    assert [m["id"] for m in api.image_member_find(admin_context(), image_id=image["id"])] == \
        [other["id"]]
    everything = api.image_member_find(admin_context(), image_id=image["id"],
                                       include_deleted=True)
    assert {(m["id"], m["deleted"]) for m in everything} == {
        (member["id"], True), (other["id"], False)}
    assert api.image_member_count(admin_context(), image["id"]) == 1


def test_member_delete_unknown_id_is_not_found():
    with pytest.raises(exception.NotFound):
        api.image_member_delete(admin_context(), 987654)


@pytest.fixture
def memberships():
    """tenant1 owns one image shared with tenant2 (accepted) and tenant3 (pending);
    tenant2 owns one shared with tenant3 (rejected); an unowned image is shared with tenant4.
    """
    mine = create_image(owner="tenant1", visibility="shared")["id"]
    theirs = create_image(owner="tenant2", visibility="shared")["id"]
    unowned = create_image(visibility="shared")["id"]
    rows = {
        ("mine", "tenant2"): _member(mine, "tenant2", status="accepted")["id"],
        ("mine", "tenant3"): _member(mine, "tenant3", status="pending")["id"],
        ("theirs", "tenant3"): _member(theirs, "tenant3", status="rejected")["id"],
        ("unowned", "tenant4"): _member(unowned, "tenant4")["id"],
    }
    return {"mine": mine, "theirs": theirs, "unowned": unowned}, rows


def _found(context, **kwargs):
    return {m["id"] for m in api.image_member_find(context, **kwargs)}


@pytest.mark.parametrize("context, visible", [
    (admin_context(), ["mine/tenant2", "mine/tenant3", "theirs/tenant3", "unowned/tenant4"]),
    (user_context("tenant1"), ["mine/tenant2", "mine/tenant3"]),          # image owner
    (user_context("tenant2"), ["mine/tenant2", "theirs/tenant3"]),        # member and owner
    (user_context("tenant3"), ["mine/tenant3", "theirs/tenant3"]),        # member only
    (user_context("tenant9"), []),
    (user_context(None), ["unowned/tenant4"]),   # owner IS NULL matches unowned images
], ids=["admin", "owner", "member-and-owner", "member", "stranger", "no-project"])
def test_member_find_scope(memberships, context, visible):
    _, rows = memberships
    expected = {rows[tuple(name.split("/"))] for name in visible}
    assert _found(context) == expected


def test_member_find_filters(memberships):
    images, rows = memberships
    ctx = admin_context()
    assert _found(ctx, image_id=images["mine"]) == {rows[("mine", "tenant2")],
                                                    rows[("mine", "tenant3")]}
    assert _found(ctx, member="tenant3") == {rows[("mine", "tenant3")],
                                             rows[("theirs", "tenant3")]}
    assert _found(ctx, status="rejected") == {rows[("theirs", "tenant3")]}
    assert _found(ctx, image_id=images["mine"], member="tenant3", status="pending") == {
        rows[("mine", "tenant3")]}
    assert _found(ctx, image_id=images["mine"], status="rejected") == set()
    assert _found(ctx, image_id=new_id()) == set()


def test_member_find_returns_member_dicts(memberships):
    images, rows = memberships
    (member,) = api.image_member_find(admin_context(), image_id=images["theirs"])
    assert set(member) == MEMBER_KEYS
    assert (member["id"], member["image_id"], member["member"], member["status"]) == (
        rows[("theirs", "tenant3")], images["theirs"], "tenant3", "rejected")


def test_member_find_include_deleted(memberships):
    images, rows = memberships
    api.image_member_delete(admin_context(), rows[("mine", "tenant2")])
    ctx = user_context("tenant1")
    assert _found(ctx) == {rows[("mine", "tenant3")]}
    assert _found(ctx, include_deleted=True) == {rows[("mine", "tenant2")],
                                                 rows[("mine", "tenant3")]}
    # a deleted membership still scopes the find to its member
    assert _found(user_context("tenant2"), include_deleted=True) == {
        rows[("mine", "tenant2")], rows[("theirs", "tenant3")]}


def test_member_count(memberships):
    images, rows = memberships
    ctx = user_context("tenant9")  # no visibility check
    assert api.image_member_count(ctx, images["mine"]) == 2
    assert api.image_member_count(ctx, images["theirs"]) == 1
    assert api.image_member_count(ctx, new_id()) == 0
    api.image_member_delete(admin_context(), rows[("mine", "tenant3")])
    assert api.image_member_count(ctx, images["mine"]) == 1


@pytest.mark.parametrize("image_id", [None, ""])
def test_member_count_without_image_id_is_invalid(image_id):
    with pytest.raises(exception.Invalid):
        api.image_member_count(admin_context(), image_id)


# --- tags -----------------------------------------------------------------------------------

def _tags(image_id):
    return api.image_tag_get_all(admin_context(), image_id)


def test_tag_create_and_get_all_in_insertion_order():
    image = create_image()
    for tag in ("zeta", "alpha", "mid"):
        assert api.image_tag_create(admin_context(), image["id"], tag) == tag
    assert _tags(image["id"]) == ["zeta", "alpha", "mid"]


def test_tag_create_keeps_a_tag_once():
    # Deliberate deviation (docs/glance-differences.md): Glance inserts a second row (spec §4.9).
    image = create_image()
    assert api.image_tag_create(admin_context(), image["id"], "t1") == "t1"
    assert api.image_tag_create(admin_context(), image["id"], "t1") == "t1"
    assert _tags(image["id"]) == ["t1"]


def test_tag_create_for_missing_image_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_tag_create(admin_context(), new_id(), "t")


def test_tag_create_with_4_byte_unicode_is_invalid():
    image = create_image()
    with pytest.raises(exception.Invalid):
        api.image_tag_create(admin_context(), image["id"], "t" + FOUR_BYTE)
    assert _tags(image["id"]) == []


def test_tag_create_needs_no_authorization():
    image = create_image(owner="tenant1", visibility="private")
    api.image_tag_create(user_context("tenant2"), image["id"], "t")
    assert _tags(image["id"]) == ["t"]


def test_tag_get_all_unknown_and_overlong_ids():
    assert _tags(new_id()) == []
    with pytest.raises(exception.ImageNotFound):
        _tags("z" * 37)


def test_tag_get_all_has_no_visibility_check():
    image = create_image(owner="tenant1", visibility="private")
    api.image_tag_create(admin_context(), image["id"], "t")
    assert api.image_tag_get_all(user_context("tenant2"), image["id"]) == ["t"]


def test_tag_delete():
    image = create_image()
    for tag in ("a", "b", "c"):
        api.image_tag_create(admin_context(), image["id"], tag)
    api.image_tag_delete(admin_context(), image["id"], "b")
    assert _tags(image["id"]) == ["a", "c"]
    with pytest.raises(exception.NotFound):
        api.image_tag_delete(admin_context(), image["id"], "b")  # already deleted


def test_tag_delete_unknown_tag_or_image():
    image = create_image()
    with pytest.raises(exception.NotFound):
        api.image_tag_delete(admin_context(), image["id"], "nope")
    with pytest.raises(exception.NotFound):
        api.image_tag_delete(admin_context(), new_id(), "nope")
    with pytest.raises(exception.ImageNotFound):
        api.image_tag_delete(admin_context(), "z" * 37, "nope")


def _duplicated_tags(db):
    """An image whose tag rows are t1, t1, t2 (duplicates, as a Glance database may hold)."""
    image = create_image()
    insert_rows(db, models.image_tags, *[{"image_id": image["id"], "value": value}
                                         for value in ("t1", "t1", "t2")])
    return image["id"]


def test_tag_get_all_lists_duplicate_rows(db):
    assert _tags(_duplicated_tags(db)) == ["t1", "t1", "t2"]


def test_tag_delete_with_duplicate_rows_removes_the_tag(db):
    image_id = _duplicated_tags(db)
    api.image_tag_delete(admin_context(), image_id, "t1")  # Glance: MultipleResultsFound
    assert _tags(image_id) == ["t2"]


def test_tag_set_all_removes_a_duplicated_tag(db):
    image_id = _duplicated_tags(db)
    api.image_tag_set_all(admin_context(), image_id, ["t2", "t3"])
    assert _tags(image_id) == ["t2", "t3"]


def test_tag_set_all_keeps_old_then_adds_new_in_input_order():
    image = create_image()
    for tag in ("old1", "drop", "old2"):
        api.image_tag_create(admin_context(), image["id"], tag)
    api.image_tag_set_all(admin_context(), image["id"], ["new2", "old2", "new1", "old1"])
    assert _tags(image["id"]) == ["old1", "old2", "new2", "new1"]


def test_tag_set_all_collapses_input_duplicates():
    image = create_image()
    api.image_tag_create(admin_context(), image["id"], "keep")
    api.image_tag_set_all(admin_context(), image["id"], ["x", "keep", "x", "y", "keep"])
    assert _tags(image["id"]) == ["keep", "x", "y"]


def test_tag_set_all_empty_removes_everything():
    image = create_image()
    for tag in ("a", "b"):
        api.image_tag_create(admin_context(), image["id"], tag)
    api.image_tag_set_all(admin_context(), image["id"], [])
    assert _tags(image["id"]) == []


def test_tag_set_all_same_tags_is_a_no_op():
    image = create_image()
    api.image_tag_set_all(admin_context(), image["id"], ["b", "a"])
    api.image_tag_set_all(admin_context(), image["id"], ["a", "b"])
    assert _tags(image["id"]) == ["b", "a"]


def test_tag_set_all_revives_a_deleted_tag_as_new():
    image = create_image()
    api.image_tag_create(admin_context(), image["id"], "a")
    api.image_tag_create(admin_context(), image["id"], "b")
    api.image_tag_delete(admin_context(), image["id"], "a")
    api.image_tag_set_all(admin_context(), image["id"], ["a", "b"])
    assert _tags(image["id"]) == ["b", "a"]


def test_tag_set_all_for_missing_image_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_tag_set_all(admin_context(), new_id(), ["a"])


def test_tag_set_all_with_4_byte_unicode_is_invalid_and_changes_nothing():
    image = create_image()
    api.image_tag_create(admin_context(), image["id"], "old")
    with pytest.raises(exception.Invalid):
        api.image_tag_set_all(admin_context(), image["id"], ["new", "bad" + FOUR_BYTE])
    assert _tags(image["id"]) == ["old"]


def test_tags_are_per_image():
    one, two = create_image(), create_image()
    api.image_tag_set_all(admin_context(), one["id"], ["a"])
    api.image_tag_set_all(admin_context(), two["id"], ["b"])
    api.image_tag_delete(admin_context(), one["id"], "a")
    assert _tags(one["id"]) == [] and _tags(two["id"]) == ["b"]
