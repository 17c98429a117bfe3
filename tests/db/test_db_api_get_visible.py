"""image_get_visible (the cache's hit-path read) decides exactly as image_get does."""

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api
from tests.db.helpers import admin_context, create_image, user_context

CALLERS = {
    "owner": lambda: user_context("tenant1"),
    "accepted member": lambda: user_context("tenant2"),
    "pending member": lambda: user_context("tenant3"),
    "stranger": lambda: user_context("tenant4"),
    "no project": lambda: user_context(None),
    "admin": lambda: admin_context(),
}


def outcome(call):
    try:
        return call()["id"]
    except exception.NotFound:
        return "NotFound"
    except exception.Forbidden:
        return "Forbidden"


@pytest.mark.parametrize("deleted", [False, True])
@pytest.mark.parametrize("visibility", ["public", "private", "shared", "community"])
def test_same_answer_as_image_get_for_every_caller(db, visibility, deleted):
    image = create_image(owner="tenant1", visibility=visibility, properties={"k": "v"})
    for member, status in (("tenant2", "accepted"), ("tenant3", "pending")):
        api.image_member_create(admin_context(), {"image_id": image["id"], "member": member,
                                                  "status": status})
    if deleted:
        api.image_destroy(admin_context(), image["id"])
    for name, make in CALLERS.items():
        context = make()
        full = outcome(lambda: api.image_get(context, image["id"]))
        light = outcome(lambda: api.image_get_visible(context, image["id"]))
        assert light == full, name


def test_returns_the_columns_only(db):
    image = create_image(owner="tenant1", properties={"k": "v"})
    light = api.image_get_visible(user_context("tenant1"), image["id"])
    assert "properties" not in light and "locations" not in light
    assert {key: light[key] for key in ("id", "size", "checksum", "status", "deleted")} == \
        {key: image[key] for key in ("id", "size", "checksum", "status", "deleted")}


@pytest.mark.parametrize("bad_id", ["x" * 37, "", None])
def test_impossible_ids_are_not_found(db, bad_id):
    with pytest.raises(exception.ImageNotFound):
        api.image_get_visible(admin_context(), bad_id)


def test_every_read_sees_the_latest_commit(db):
    """The hit read runs outside a transaction on pooled connections: none of them may keep
    an old snapshot (MariaDB's REPEATABLE READ would, if a read left its transaction open)."""
    image = create_image(owner="tenant1", visibility="shared")
    for status in ("deactivated", "active", "deactivated", "active"):
        api.image_update(admin_context(), image["id"], {"status": status})
        for context in (user_context("tenant1"), admin_context()):
            assert api.image_get_visible(context, image["id"])["status"] == status


def test_a_new_membership_is_seen_at_once(db):
    image = create_image(owner="tenant1", visibility="shared")
    stranger = user_context("tenant2")
    with pytest.raises(exception.Forbidden):
        api.image_get_visible(stranger, image["id"])
    api.image_member_create(admin_context(), {"image_id": image["id"], "member": "tenant2",
                                              "status": "accepted"})
    assert api.image_get_visible(stranger, image["id"])["id"] == image["id"]


def test_the_read_needs_no_result_processing(db):
    """PreparedRead returns the driver's values: they must already be what callers expect."""
    image = create_image(owner="tenant1", size=123, checksum="a" * 32)
    light = api.image_get_visible(admin_context(), image["id"])
    assert light == {"id": image["id"], "status": image["status"], "size": 123,
                     "checksum": "a" * 32, "os_hash_algo": image["os_hash_algo"],
                     "os_hash_value": image["os_hash_value"], "visibility": image["visibility"],
                     "owner": "tenant1", "deleted": False}
    assert type(light["size"]) is int and type(light["deleted"]) is bool
