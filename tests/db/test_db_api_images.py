"""image_create, image_get, image_update and image_destroy (spec §4.1-§4.4)."""

import datetime

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api, engine as db_engine, models
from tests.db.helpers import (
    FOUR_BYTE, IMAGE_KEYS, LOCATION_KEYS, PROPERTY_KEYS, admin_context, all_properties, at,
    create_image, insert_rows, live_properties, new_id, user_context)

pytestmark = pytest.mark.usefixtures("db")

STATUSES = ("active", "saving", "queued", "killed", "pending_delete", "deleted",
            "deactivated", "importing", "uploading")


def _location(url, status="active", **metadata):
    return {"url": url, "metadata": metadata, "status": status}


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# --- image_create ---------------------------------------------------------------------------

def test_create_returns_image_dict_with_defaults():
    before = _utcnow()
    image = create_image(name="cirros", status="queued")
    after = _utcnow()
    assert set(image) == IMAGE_KEYS  # no 'tags' key outside image_get_all(return_tag=True)
    assert len(image["id"]) == 36
    assert image["name"] == "cirros"
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["min_disk"] == 0 and image["min_ram"] == 0
    assert image["protected"] is False and image["os_hidden"] is False
    assert image["deleted"] is False and image["deleted_at"] is None
    assert image["owner"] is None
    assert image["size"] is None and image["checksum"] is None
    assert image["properties"] == [] and image["locations"] == []
    created = image["created_at"]
    assert isinstance(created, datetime.datetime) and created.tzinfo is None
    # naive UTC; MySQL/MariaDB drop (or round) the fraction, hence the one-second slack
    second = datetime.timedelta(seconds=1)
    assert before - second <= created <= after + second
    assert isinstance(image["updated_at"], datetime.datetime)
    assert image["updated_at"].tzinfo is None


def test_create_generates_distinct_ids():
    assert create_image()["id"] != create_image()["id"]


def test_create_honours_caller_supplied_bookkeeping():
    image_id = new_id()
    image = create_image(id=image_id, created_at=at(0), updated_at=at(5))
    assert image["id"] == image_id
    assert image["created_at"] == at(0)
    assert image["updated_at"] == at(5)
    assert api.image_get(admin_context(), image_id)["created_at"] == at(0)


def test_create_with_deleted_true_makes_a_soft_deleted_image():
    image = create_image(deleted=True, deleted_at=at(3), visibility="public")
    assert image["deleted"] is True and image["deleted_at"] == at(3)
    assert api.image_get(admin_context(), image["id"])["deleted"] is True
    with pytest.raises(exception.ImageNotFound):
        api.image_get(user_context("tenant1"), image["id"])


def test_create_stores_every_column():
    values = dict(
        name="full", disk_format="qcow2", container_format="bare", size=1024,
        virtual_size=4096, status="active", visibility="private", checksum="a" * 32,
        os_hash_algo="sha512", os_hash_value="b" * 128, min_disk=5, min_ram=256,
        owner="tenant1", protected=True, os_hidden=True)
    image = create_image(**values)
    fetched = api.image_get(admin_context(), image["id"])
    for key, value in values.items():
        assert image[key] == value
        assert fetched[key] == value


def test_create_coerces_size_min_values_and_protected():
    image = create_image(size="2048", min_disk="3", min_ram=None, protected=1)
    assert image["size"] == 2048
    assert image["min_disk"] == 3
    assert image["min_ram"] == 0
    assert image["protected"] is True
    assert create_image(min_disk=None)["min_disk"] == 0


@pytest.mark.parametrize("is_public, visibility", [(True, "public"), (False, "shared")])
def test_create_converts_legacy_is_public(is_public, visibility):
    image = create_image(is_public=is_public)
    assert image["visibility"] == visibility
    assert "is_public" not in image


def test_create_with_is_public_and_visibility_is_invalid():
    with pytest.raises(exception.Invalid):
        create_image(is_public=True, visibility="public")


@pytest.mark.parametrize("visibility", ["public", "private", "shared", "community"])
def test_create_accepts_every_visibility(visibility):
    assert create_image(visibility=visibility)["visibility"] == visibility


def test_create_with_unknown_visibility_is_invalid():
    image_id = new_id()
    with pytest.raises(exception.Invalid):
        create_image(id=image_id, visibility="everyone")
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), image_id)


@pytest.mark.parametrize("owner", ["", None])
def test_create_stores_falsy_owner_as_null(owner):
    image = create_image(owner=owner)
    assert image["owner"] is None
    assert api.image_get(admin_context(), image["id"])["owner"] is None


def test_create_v1_mode_replaces_visibility_with_is_public():
    public = api.image_create(admin_context(), {"status": "active", "visibility": "public"},
                              v1_mode=True)
    private = api.image_create(admin_context(), {"status": "active", "visibility": "private"},
                               v1_mode=True)
    assert "visibility" not in public and public["is_public"] is True
    assert "visibility" not in private and private["is_public"] is False


def test_create_without_status_is_invalid():
    with pytest.raises(exception.Invalid):
        api.image_create(admin_context(), {"name": "no status"})
    with pytest.raises(exception.Invalid):
        api.image_create(admin_context(), {"name": "no status", "status": None})


def test_create_with_unknown_status_is_invalid():
    with pytest.raises(exception.Invalid):
        create_image(status="bogus")


@pytest.mark.parametrize("status", STATUSES)
def test_create_accepts_every_status(status):
    assert create_image(status=status)["status"] == status


@pytest.mark.parametrize("key", ["min_disk", "min_ram"])
def test_create_min_values_limited_to_int32(key):
    assert create_image(**{key: 2 ** 31 - 1})[key] == 2 ** 31 - 1
    with pytest.raises(exception.Invalid):
        create_image(**{key: 2 ** 31})


def test_create_ignores_unknown_keys():
    image = create_image(status="queued", ping="pong")
    assert "ping" not in image
    assert "ping" not in live_properties(image)
    assert api.image_get(admin_context(), image["id"])["status"] == "queued"


def test_create_checksum_longer_than_32_is_invalid():
    assert create_image(checksum="c" * 32)["checksum"] == "c" * 32
    image_id = new_id()
    with pytest.raises(exception.Invalid):
        create_image(id=image_id, checksum="c" * 33)
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), image_id)


def test_create_with_existing_id_is_duplicate():
    image = create_image(name="first")
    with pytest.raises(exception.Duplicate):
        create_image(id=image["id"], name="second")
    assert api.image_get(admin_context(), image["id"])["name"] == "first"


@pytest.mark.parametrize("values", [
    {"name": "bad" + FOUR_BYTE},
    {"properties": {"key" + FOUR_BYTE: "value"}},
    {"properties": {"key": "value" + FOUR_BYTE}},
    {"locations": [_location("file:///" + FOUR_BYTE)]},
    {"locations": [{"url": "file:///a", "status": "active",
                    "metadata": {"nested": {"deep": FOUR_BYTE}}}]},
], ids=["name", "property-name", "property-value", "location-url", "location-metadata"])
def test_create_with_4_byte_unicode_is_invalid_and_creates_nothing(values):
    image_id = new_id()
    with pytest.raises(exception.Invalid):
        create_image(id=image_id, **values)
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), image_id)


def test_create_accepts_3_byte_unicode():
    name = "caf\u00e9 \u20ac \u4e2d"
    image = create_image(name=name, properties={"d\u00e9": "\u20ac"})
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["name"] == name
    assert live_properties(fetched) == {"d\u00e9": "\u20ac"}


def test_create_with_properties_and_locations():
    image = create_image(
        properties={"os_distro": "ubuntu", "arch": "x86_64"},
        locations=[_location("file:///one", size="1"), _location("file:///two")])
    assert live_properties(image) == {"os_distro": "ubuntu", "arch": "x86_64"}
    for prop in image["properties"]:
        assert set(prop) == PROPERTY_KEYS
        assert prop["image_id"] == image["id"] and prop["deleted"] is False
        assert prop["deleted_at"] is None
    assert [loc["url"] for loc in image["locations"]] == ["file:///one", "file:///two"]
    assert image["locations"][0]["metadata"] == {"size": "1"}
    for loc in image["locations"]:
        assert set(loc) == LOCATION_KEYS
        assert loc["status"] == "active" and isinstance(loc["id"], int)
    assert api.image_get(admin_context(), image["id"])["locations"] == image["locations"]


def test_create_does_no_authorization_check():
    image = api.image_create(user_context("tenant1"),
                             {"status": "active", "owner": "tenant2", "visibility": "public"})
    assert image["owner"] == "tenant2"
    # nor does it take the owner from the context (ImageRepo's job)
    assert api.image_create(user_context("tenant1"), {"status": "active"})["owner"] is None


# --- image_get ------------------------------------------------------------------------------

def test_get_returns_same_shape_as_create():
    image = create_image(name="x", properties={"a": "1"}, locations=[_location("file:///x")])
    fetched = api.image_get(admin_context(), image["id"])
    assert set(fetched) == IMAGE_KEYS
    for key in IMAGE_KEYS - {"properties"}:
        assert fetched[key] == image[key]
    assert all_properties(fetched) == all_properties(image)


def test_get_unknown_id_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), new_id())


def test_get_id_longer_than_36_is_image_not_found():
    image = create_image()
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), image["id"] + "x")
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), "x" * 200)


def test_get_deleted_image_depends_on_context_and_force_show_deleted():
    image = create_image(owner="tenant1", visibility="public")
    api.image_destroy(admin_context(), image["id"])
    with pytest.raises(exception.ImageNotFound):
        api.image_get(user_context("tenant1"), image["id"])
    assert api.image_get(admin_context(), image["id"])["deleted"] is True
    assert api.image_get(user_context("tenant1", show_deleted=True), image["id"])["deleted"]
    assert api.image_get(user_context("tenant1"), image["id"],
                         force_show_deleted=True)["deleted"] is True


def test_get_force_show_deleted_does_not_bypass_visibility():
    image = create_image(owner="tenant1", visibility="private")
    api.image_destroy(admin_context(), image["id"])
    with pytest.raises(exception.Forbidden):
        api.image_get(user_context("tenant2"), image["id"], force_show_deleted=True)


def test_get_invisible_image_is_forbidden():
    image = create_image(owner="tenant1", visibility="private")
    with pytest.raises(exception.Forbidden):
        api.image_get(user_context("tenant2"), image["id"])


def test_get_hides_deleted_locations_unless_force_show_deleted():
    image = create_image(locations=[_location("file:///a"), _location("file:///b")])
    first = image["locations"][0]
    api.image_location_delete(admin_context(), image["id"], first["id"], "deleted")
    shown = api.image_get(admin_context(), image["id"])["locations"]
    assert [loc["url"] for loc in shown] == ["file:///b"]
    forced = api.image_get(admin_context(), image["id"], force_show_deleted=True)["locations"]
    assert [(loc["url"], loc["status"]) for loc in forced] == [
        ("file:///a", "deleted"), ("file:///b", "active")]


def test_get_deactivated_image_hides_locations_from_non_admins():
    image = create_image(owner="tenant1", status="deactivated", visibility="public",
                         locations=[_location("file:///a")])
    assert api.image_get(user_context("tenant1"), image["id"])["locations"] == []
    assert api.image_get(user_context("tenant2"), image["id"])["locations"] == []
    admin_view = api.image_get(admin_context(), image["id"])["locations"]
    assert [loc["url"] for loc in admin_view] == ["file:///a"]


def test_get_v1_mode():
    image = create_image(visibility="community")
    fetched = api.image_get(admin_context(), image["id"], v1_mode=True)
    assert "visibility" not in fetched and fetched["is_public"] is False
    public = create_image(visibility="public")
    assert api.image_get(admin_context(), public["id"], v1_mode=True)["is_public"] is True


# --- image_update ---------------------------------------------------------------------------

def test_update_changes_values_and_keeps_created_at():
    image = create_image(name="old", created_at=at(0), updated_at=at(0), owner="tenant1")
    updated = api.image_update(user_context("tenant1"), image["id"],
                               {"name": "new", "size": 10, "min_ram": 64})
    assert set(updated) == IMAGE_KEYS
    assert (updated["name"], updated["size"], updated["min_ram"]) == ("new", 10, 64)
    assert updated["created_at"] == at(0)
    assert updated["updated_at"] > at(0)
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["name"] == "new" and fetched["updated_at"] == updated["updated_at"]


def test_update_drops_protected_attributes():
    image = create_image(created_at=at(0), updated_at=at(0))
    updated = api.image_update(admin_context(), image["id"], {
        "created_at": at(100), "updated_at": at(100), "deleted": True,
        "deleted_at": at(100), "name": "renamed"})
    assert updated["name"] == "renamed"
    assert updated["created_at"] == at(0)
    assert updated["updated_at"] not in (at(0), at(100))
    assert updated["deleted"] is False and updated["deleted_at"] is None
    assert api.image_get(user_context("x"), image["id"])["deleted"] is False


def test_update_of_properties_only_still_bumps_updated_at():
    image = create_image(updated_at=at(0))
    updated = api.image_update(admin_context(), image["id"], {"properties": {"a": "1"}})
    assert updated["updated_at"] > at(0)
    assert live_properties(updated) == {"a": "1"}


def test_update_ignores_unknown_keys():
    image = create_image(name="n")
    updated = api.image_update(admin_context(), image["id"], {"ping": "pong", "name": "m"})
    assert "ping" not in updated and updated["name"] == "m"
    assert "ping" not in live_properties(updated)


def test_update_unknown_or_overlong_id_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_update(admin_context(), new_id(), {"name": "x"})
    image = create_image()
    with pytest.raises(exception.ImageNotFound):
        api.image_update(admin_context(), image["id"] + "0", {"name": "x"})


def test_update_deleted_image():
    image = create_image(owner="tenant1")
    api.image_destroy(admin_context(), image["id"])
    with pytest.raises(exception.ImageNotFound):
        api.image_update(user_context("tenant1"), image["id"], {"name": "x"})
    updated = api.image_update(admin_context(), image["id"], {"name": "x"})
    assert updated["name"] == "x" and updated["deleted"] is True


def test_owner_with_show_deleted_can_update_a_deleted_image():
    image = create_image(owner="tenant1")
    api.image_destroy(admin_context(), image["id"])
    updated = api.image_update(user_context("tenant1", show_deleted=True), image["id"],
                               {"name": "x"})
    assert updated["name"] == "x" and updated["deleted"] is True


@pytest.mark.parametrize("visibility, context, error", [
    ("private", user_context("tenant2"), exception.Forbidden),      # not visible
    ("shared", user_context("tenant2"), exception.Forbidden),       # not visible
    ("shared", user_context("member1"), exception.Forbidden),       # visible, not mutable
    ("public", user_context("tenant2"), exception.ForbiddenPublicImage),
    ("community", user_context("tenant2"), exception.ForbiddenPublicImage),
    ("public", user_context(None), exception.ForbiddenPublicImage),  # no project: never mutable
], ids=["private-other", "shared-other", "shared-member", "public-other", "community-other",
        "public-no-project"])
def test_update_and_destroy_refuse_non_owners(visibility, context, error):
    image = create_image(owner="tenant1", visibility=visibility, name="orig")
    api.image_member_create(admin_context(), {"image_id": image["id"], "member": "member1",
                                              "status": "accepted"})
    with pytest.raises(error) as caught:
        api.image_update(context, image["id"], {"name": "changed"})
    if error is exception.Forbidden:
        assert not isinstance(caught.value, exception.ForbiddenPublicImage)
    with pytest.raises(error):
        api.image_destroy(context, image["id"])
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["name"] == "orig" and fetched["deleted"] is False


@pytest.mark.parametrize("visibility, error", [
    ("shared", exception.Forbidden), ("private", exception.Forbidden),
    ("public", exception.ForbiddenPublicImage), ("community", exception.ForbiddenPublicImage)])
def test_unowned_image_is_mutable_by_admins_only(visibility, error):
    image = create_image(visibility=visibility, name="orig")
    with pytest.raises(error) as caught:
        api.image_update(user_context("tenant1"), image["id"], {"name": "x"})
    if error is exception.Forbidden:
        assert not isinstance(caught.value, exception.ForbiddenPublicImage)
    assert api.image_update(admin_context(), image["id"], {"name": "x"})["name"] == "x"


def test_owner_and_admin_can_update_and_destroy():
    image = create_image(owner="tenant1", visibility="private")
    assert api.image_update(user_context("tenant1"), image["id"], {"name": "a"})["name"] == "a"
    assert api.image_update(admin_context("other"), image["id"], {"name": "b"})["name"] == "b"
    assert api.image_destroy(user_context("tenant1"), image["id"])["deleted"] is True


@pytest.mark.parametrize("is_public, visibility", [(True, "public"), (False, "shared")])
def test_update_converts_legacy_is_public(is_public, visibility):
    image = create_image(visibility="private")
    updated = api.image_update(admin_context(), image["id"], {"is_public": is_public})
    assert updated["visibility"] == visibility


def test_update_with_is_public_and_visibility_is_invalid():
    image = create_image()
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], {"is_public": True, "visibility": "public"})


def test_update_with_unknown_visibility_is_invalid():
    image = create_image(visibility="private")
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], {"visibility": "world"})
    assert api.image_get(admin_context(), image["id"])["visibility"] == "private"


def test_update_falsy_owner_becomes_null():
    image = create_image(owner="tenant1")
    assert api.image_update(admin_context(), image["id"], {"owner": ""})["owner"] is None


def test_update_validates_status_and_min_values():
    image = create_image(status="queued")
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], {"status": "bogus"})
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], {"min_ram": 2 ** 31})
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], {"checksum": "f" * 33})
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["status"] == "queued" and fetched["min_ram"] == 0
    assert api.image_update(admin_context(), image["id"], {"status": "saving"})["status"] == \
        "saving"


@pytest.mark.parametrize("values", [
    {"name": FOUR_BYTE},
    {"properties": {"p": FOUR_BYTE}},
    {"properties": {FOUR_BYTE: "v"}},
    {"locations": [_location("file:///" + FOUR_BYTE)]},
], ids=["name", "property-value", "property-name", "location-url"])
def test_update_with_4_byte_unicode_is_invalid(values):
    image = create_image(name="orig")
    with pytest.raises(exception.Invalid):
        api.image_update(admin_context(), image["id"], values)
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["name"] == "orig"
    assert live_properties(fetched) == {} and fetched["locations"] == []


def test_update_v1_mode():
    image = create_image(visibility="public")
    updated = api.image_update(admin_context(), image["id"], {"name": "v"}, v1_mode=True)
    assert "visibility" not in updated and updated["is_public"] is True


# --- from_state -----------------------------------------------------------------------------

def test_update_from_state_matching_transitions():
    image = create_image(status="saving")
    updated = api.image_update(admin_context(), image["id"], {"status": "active"},
                               from_state="saving")
    assert updated["status"] == "active"


def test_update_from_state_not_matching_is_conflict_and_changes_nothing():
    image = create_image(status="queued", name="orig")
    with pytest.raises(exception.Conflict):
        api.image_update(admin_context(), image["id"], {"status": "active", "name": "new"},
                         from_state="saving")
    fetched = api.image_get(admin_context(), image["id"])
    assert (fetched["status"], fetched["name"]) == ("queued", "orig")


def test_update_from_state_after_a_first_transition_is_conflict():
    image = create_image(status="saving")
    api.image_update(admin_context(), image["id"], {"status": "active"}, from_state="saving")
    with pytest.raises(exception.Conflict):
        api.image_update(admin_context(), image["id"], {"status": "killed"},
                         from_state="saving")
    assert api.image_get(admin_context(), image["id"])["status"] == "active"


# --- properties through image_update --------------------------------------------------------

def test_update_properties_merge_without_purge():
    image = create_image(properties={"a": "1", "b": "2"})
    updated = api.image_update(admin_context(), image["id"],
                               {"properties": {"b": "20", "c": "3"}})
    assert live_properties(updated) == {"a": "1", "b": "20", "c": "3"}


def test_update_purge_props_soft_deletes_missing_ones():
    image = create_image(properties={"a": "1", "b": "2"})
    updated = api.image_update(admin_context(), image["id"],
                               {"properties": {"b": "2", "c": "3"}}, purge_props=True)
    assert live_properties(updated) == {"b": "2", "c": "3"}
    # the purged property is still listed, marked deleted
    assert all_properties(updated)["a"] == ("1", True)
    purged = [p for p in updated["properties"] if p["name"] == "a"][0]
    assert purged["deleted_at"] is not None
    fetched = api.image_get(admin_context(), image["id"])
    assert all_properties(fetched) == all_properties(updated)


def test_update_purge_props_with_empty_dict_deletes_all():
    image = create_image(properties={"a": "1", "b": "2"})
    updated = api.image_update(admin_context(), image["id"], {"properties": {}},
                               purge_props=True)
    assert live_properties(updated) == {}
    assert all_properties(updated) == {"a": ("1", True), "b": ("2", True)}


def test_update_purge_props_refreshes_deleted_at_of_deleted_ones(db):
    image = create_image(properties={"live": "1"})
    insert_rows(db, models.image_properties, {
        "image_id": image["id"], "name": "old", "value": "o", "deleted": True,
        "deleted_at": at(0)})
    updated = api.image_update(admin_context(), image["id"], {"properties": {"live": "1"}},
                               purge_props=True)
    (old,) = [p for p in updated["properties"] if p["name"] == "old"]
    assert old["deleted"] is True and old["deleted_at"] > at(0)


def test_update_resets_a_deleted_property_instead_of_inserting():
    image = create_image(properties={"a": "1"})
    api.image_update(admin_context(), image["id"], {"properties": {}}, purge_props=True)
    updated = api.image_update(admin_context(), image["id"], {"properties": {"a": "again"}})
    assert live_properties(updated) == {"a": "again"}
    assert [p["name"] for p in updated["properties"]] == ["a"]  # one row, undeleted


def test_update_atomic_props_are_never_touched():
    image = create_image(properties={"keep": "k", "os_glance_lock": "mine", "other": "o"})
    updated = api.image_update(
        admin_context(), image["id"],
        {"properties": {"os_glance_lock": "theirs", "os_glance_new": "x", "other": "p"}},
        purge_props=True, atomic_props=["os_glance_lock", "os_glance_new"])
    # 'keep' purged; atomic ones neither updated, created nor purged
    assert live_properties(updated) == {"os_glance_lock": "mine", "other": "p"}
    assert all_properties(updated)["keep"] == ("k", True)


# --- locations through image_update ---------------------------------------------------------

def test_update_with_empty_locations_leaves_them():
    image = create_image(locations=[_location("file:///a")])
    updated = api.image_update(admin_context(), image["id"], {"locations": []})
    assert [loc["url"] for loc in updated["locations"]] == ["file:///a"]


def test_update_locations_adds_updates_and_removes():
    image = create_image(locations=[_location("file:///a"), _location("file:///b")])
    loc_a, loc_b = image["locations"]
    updated = api.image_update(admin_context(), image["id"], {"locations": [
        {"id": loc_b["id"], "url": "file:///b2", "metadata": {"k": "v"}, "status": "active"},
        _location("file:///c"),
    ]})
    assert [(loc["url"], loc["metadata"]) for loc in updated["locations"]] == [
        ("file:///b2", {"k": "v"}), ("file:///c", {})]
    assert updated["locations"][0]["id"] == loc_b["id"]
    forced = api.image_get(admin_context(), image["id"], force_show_deleted=True)["locations"]
    removed = [loc for loc in forced if loc["id"] == loc_a["id"]]
    assert [loc["status"] for loc in removed] == ["deleted"]


# --- image_destroy --------------------------------------------------------------------------

def _image_with_children(**values):
    image = create_image(properties={"a": "1", "b": "2"},
                         locations=[_location("file:///a"), _location("file:///b")], **values)
    ctx = admin_context()
    api.image_member_create(ctx, {"image_id": image["id"], "member": "tenant2"})
    api.image_tag_create(ctx, image["id"], "t1")
    api.image_tag_create(ctx, image["id"], "t2")
    return image


def test_destroy_returns_deleted_image():
    image = _image_with_children(status="active", owner="tenant1")
    destroyed = api.image_destroy(user_context("tenant1"), image["id"])
    assert set(destroyed) == IMAGE_KEYS
    assert destroyed["id"] == image["id"]
    assert destroyed["deleted"] is True and destroyed["deleted_at"] is not None
    assert destroyed["status"] == "active"  # the DB layer does not change the status
    assert destroyed["locations"] == []
    assert all_properties(destroyed) == {"a": ("1", True), "b": ("2", True)}


def test_destroy_cascades_soft_deletes_with_one_time():
    image = _image_with_children(owner="tenant1")
    old_prop = api.image_property_create(admin_context(), {
        "image_id": image["id"], "name": "old", "value": "o"})
    api.image_property_delete(admin_context(), "old", image["id"])
    old_deleted_at = api.image_get(admin_context(), image["id"])
    old_deleted_at = [p for p in old_deleted_at["properties"] if p["id"] == old_prop["id"]][0]
    destroyed = api.image_destroy(admin_context(), image["id"])
    when = destroyed["deleted_at"]
    fetched = api.image_get(admin_context(), image["id"], force_show_deleted=True)
    assert fetched["deleted"] is True and fetched["deleted_at"] == when
    for prop in fetched["properties"]:
        assert prop["deleted"] is True
        if prop["name"] != "old":
            assert prop["deleted_at"] == when
    # an already deleted property is not touched again
    old_now = [p for p in fetched["properties"] if p["name"] == "old"][0]
    assert old_now["deleted_at"] == old_deleted_at["deleted_at"]
    assert [loc["status"] for loc in fetched["locations"]] == ["deleted", "deleted"]
    assert api.image_tag_get_all(admin_context(), image["id"]) == []
    assert api.image_member_find(admin_context(), image_id=image["id"]) == []
    members = api.image_member_find(admin_context(), image_id=image["id"],
                                    include_deleted=True)
    assert [m["deleted"] for m in members] == [True]
    assert api.image_member_count(admin_context(), image["id"]) == 0


def test_destroy_hides_image_from_users():
    image = create_image(owner="tenant1", visibility="public")
    api.image_destroy(user_context("tenant1"), image["id"])
    with pytest.raises(exception.ImageNotFound):
        api.image_get(user_context("tenant1"), image["id"])
    with pytest.raises(exception.ImageNotFound):
        api.image_destroy(user_context("tenant1"), image["id"])


def test_admin_can_destroy_a_deleted_image_again():
    image = create_image(deleted=True, deleted_at=at(0))
    again = api.image_destroy(admin_context(), image["id"])
    assert again["deleted"] is True and again["deleted_at"] > at(0)  # refreshed


def test_destroy_does_not_check_protected():
    image = create_image(owner="tenant1", protected=True)  # ImageRepo refuses, not the DB
    destroyed = api.image_destroy(user_context("tenant1"), image["id"])
    assert destroyed["deleted"] is True and destroyed["protected"] is True


def test_destroy_unknown_or_overlong_id_is_image_not_found():
    with pytest.raises(exception.ImageNotFound):
        api.image_destroy(admin_context(), new_id())
    with pytest.raises(exception.ImageNotFound):
        api.image_destroy(admin_context(), "y" * 37)


# --- configure / get_engine / reset_db ------------------------------------------------------

def test_get_engine_is_the_configured_database(db):
    assert api.get_engine().url.database == db_engine.normalize_url(db.url).database
    assert api.get_engine() is api.get_engine()


def test_configure_replaces_the_engine(db):
    image = create_image()
    before = api.get_engine()
    api.configure(db.url)
    assert api.get_engine() is not before
    assert api.image_get(admin_context(), image["id"])["id"] == image["id"]


def test_unconfigured_database_is_a_clear_error(db):
    db_engine.dispose()
    try:
        with pytest.raises(exception.DBNotConfigured):
            api.get_engine()
        with pytest.raises(exception.DBNotConfigured):
            api.image_get(admin_context(), new_id())
    finally:
        api.configure(db.url)


def test_reset_db_removes_every_row():
    image = create_image(properties={"a": "1"}, locations=[_location("file:///a")])
    api.image_member_create(admin_context(), {"image_id": image["id"], "member": "t2"})
    api.image_tag_create(admin_context(), image["id"], "t")
    api.reset_db()
    assert api.image_get_all(admin_context()) == []
    assert api.image_tag_get_all(admin_context(), image["id"]) == []
    assert api.image_member_find(admin_context(), include_deleted=True) == []
    with pytest.raises(exception.ImageNotFound):
        api.image_get(admin_context(), image["id"])
    again = create_image(id=image["id"], properties={"a": "2"})  # the id is free again
    assert live_properties(again) == {"a": "2"}
