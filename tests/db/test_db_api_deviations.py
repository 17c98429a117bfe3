"""Where we do better than Glance on purpose (docs/glance-differences.md), on every backend."""

import pytest
import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import api, models
from tests.db.helpers import admin_context, at, create_image, user_context


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_across_null_sort_values_returns_every_image_once(db, sort_dir, limit):
    names = [None, "a", None, "b", "c", None, "a"]
    ids = [create_image(name=name, created_at=at(i % 3))["id"] for i, name in enumerate(names)]
    context = admin_context()
    everything = api.image_get_all(context, sort_key=["name"], sort_dir=sort_dir)
    seen, marker = [], None
    while True:
        page = api.image_get_all(context, sort_key=["name"], sort_dir=sort_dir,
                                 limit=limit, marker=marker)
        if not page:
            break
        seen.extend(image["id"] for image in page)
        marker = page[-1]["id"]
    assert seen == [image["id"] for image in everything]
    assert sorted(seen) == sorted(ids)
    order = [image["name"] for image in everything]
    nulls = [name for name in order if name is None]
    # NULLs first ascending and last descending, on every database.
    if sort_dir == "asc":
        assert order[:len(nulls)] == nulls
    else:
        assert order[len(order) - len(nulls):] == nulls


def test_caller_sort_lists_are_not_mutated(db):
    keys, dirs = ["name"], ["asc"]
    api.image_get_all(admin_context(), sort_key=keys, sort_dir=dirs)
    assert (keys, dirs) == (["name"], ["asc"])


@pytest.mark.parametrize("sort_key, sort_dir", [
    (["name"], ["sideways"]), (["name", "size"], ["asc", "desc", "asc"]),
])
def test_bad_sort_directions_are_invalid_sort_dir(db, sort_key, sort_dir):
    with pytest.raises(exception.InvalidSortDir):
        api.image_get_all(admin_context(), sort_key=sort_key, sort_dir=sort_dir)


def test_bad_visibility_is_invalid(db):
    with pytest.raises(exception.Invalid, match="galactic"):
        api.image_create(admin_context(), {"status": "active", "visibility": "galactic"})


def test_is_image_visible_all_means_any_membership_status(db):
    image = create_image(owner="tenant1", visibility="shared")
    api.image_member_create(admin_context(), {"image_id": image["id"], "member": "tenant2",
                                              "status": "rejected"})
    context = user_context("tenant2")
    assert api.is_image_visible(context, image, status="all") is True
    assert api.is_image_visible(context, image, status="accepted") is False


def test_location_delete_honours_delete_time(db):
    image = create_image()
    api.image_location_add(admin_context(), image["id"],
                           {"url": "file:///x", "metadata": {}, "status": "active"})
    [location] = api.image_get(admin_context(), image["id"])["locations"]
    api.image_location_delete(admin_context(), image["id"], location["id"], "deleted",
                              delete_time=at(7))
    table = models.image_locations
    with db.engine.connect() as conn:
        deleted_at = conn.execute(sa.select(table.c.deleted_at)
                                  .where(table.c.id == location["id"])).scalar()
    assert deleted_at == at(7)


@pytest.mark.parametrize("key, value", [("checksum", "f" * 33), ("name", "n" * 256),
                                        ("size", -1), ("min_ram", "lots")])
def test_out_of_range_values_are_invalid_on_every_backend(db, key, value):
    with pytest.raises(exception.Invalid, match=key):
        api.image_create(admin_context(), {"status": "active", key: value})


def test_tags_in_image_create_are_created_once(db):
    image = api.image_create(admin_context(), {"status": "active", "tags": ["a", "b", "a"]})
    assert api.image_tag_get_all(admin_context(), image["id"]) == ["a", "b"]


LONE_SURROGATE = "\ud800"      # what a JSON "\ud800" escape decodes to: not encodable text


@pytest.mark.parametrize("write", [
    lambda image: create_image(name="bad" + LONE_SURROGATE),
    lambda image: create_image(properties={"p": LONE_SURROGATE}),
    lambda image: create_image(properties={LONE_SURROGATE: "v"}),
    lambda image: api.image_update(admin_context(), image["id"], {"name": LONE_SURROGATE}),
    lambda image: api.image_property_create(
        admin_context(), {"image_id": image["id"], "name": "p", "value": LONE_SURROGATE}),
    lambda image: api.image_member_create(
        admin_context(), {"image_id": image["id"], "member": "m" + LONE_SURROGATE}),
    lambda image: api.image_tag_create(admin_context(), image["id"], LONE_SURROGATE),
    lambda image: api.image_tag_set_all(admin_context(), image["id"], ["ok", LONE_SURROGATE]),
], ids=["create-name", "create-property-value", "create-property-name", "update-name",
        "property", "member", "tag", "tags"])
def test_lone_surrogates_are_invalid_not_a_driver_error(db, write):
    image = create_image(name="orig", visibility="shared")
    with pytest.raises(exception.Invalid, match="surrogate"):
        write(image)
    fetched = api.image_get(admin_context(), image["id"])
    assert fetched["name"] == "orig" and fetched["properties"] == []
    assert api.image_tag_get_all(admin_context(), image["id"]) == []
    assert api.image_member_find(admin_context(), image_id=image["id"]) == []
    assert len(api.image_get_all(admin_context())) == 1
