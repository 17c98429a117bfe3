"""image_get_all: filters, sorting, marker/limit paging and return shapes (spec §5.1, §5.2, §5.4).

Visibility of the candidate set (§5.3) is in test_db_api_visibility.py.
"""

import datetime

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api
from tests.db.helpers import (
    IMAGE_KEYS, admin_context, at, create_image, ids, new_id, sorted_ids, user_context)

pytestmark = pytest.mark.usefixtures("db")


def _image(n, **values):
    """A public image created at at(n) (so ordering is deterministic on every backend)."""
    values.setdefault("visibility", "public")
    values.setdefault("created_at", at(n))
    values.setdefault("updated_at", at(n))
    return create_image(**values)


def _listed(filters=None, context=None, **kwargs):
    """The set of ids image_get_all returns (for filter tests, where order does not matter)."""
    found = api.image_get_all(context or admin_context(), filters=filters, **kwargs)
    result = set(ids(found))
    assert len(result) == len(found), "an image was listed twice"
    return result


# --- return shape ---------------------------------------------------------------------------

def test_get_all_returns_image_dicts_without_tags():
    image = _image(0, properties={"a": "1"})
    api.image_tag_create(admin_context(), image["id"], "t")
    (listed,) = api.image_get_all(admin_context())
    assert set(listed) == IMAGE_KEYS
    assert listed["id"] == image["id"]
    assert [(p["name"], p["value"]) for p in listed["properties"]] == [("a", "1")]


def test_get_all_lists_deleted_properties_and_live_locations():
    image = _image(0, properties={"a": "1", "b": "2"},
                   locations=[{"url": "file:///a", "metadata": {}, "status": "active"}])
    api.image_property_delete(admin_context(), "a", image["id"])
    (listed,) = api.image_get_all(admin_context())
    assert sorted((p["name"], p["deleted"]) for p in listed["properties"]) == [
        ("a", True), ("b", False)]
    assert [loc["url"] for loc in listed["locations"]] == ["file:///a"]
    assert listed["created_at"] == at(0) and listed["created_at"].tzinfo is None


def test_get_all_hides_locations_of_deactivated_images_from_users():
    image = _image(0, owner="tenant1", status="deactivated",
                   locations=[{"url": "file:///a", "metadata": {}, "status": "active"}])
    (as_user,) = api.image_get_all(user_context("tenant1"))
    assert as_user["id"] == image["id"] and as_user["locations"] == []
    (as_admin,) = api.image_get_all(admin_context())
    assert [loc["url"] for loc in as_admin["locations"]] == ["file:///a"]


def test_get_all_return_tag_adds_live_tags():
    image = _image(0)
    other = _image(1)
    for tag in ("t1", "t2", "t3"):
        api.image_tag_create(admin_context(), image["id"], tag)
    api.image_tag_delete(admin_context(), image["id"], "t2")
    listed = {i["id"]: i for i in api.image_get_all(admin_context(), return_tag=True)}
    assert listed[image["id"]]["tags"] == ["t1", "t3"]
    assert listed[other["id"]]["tags"] == []
    assert set(listed[image["id"]]) == IMAGE_KEYS | {"tags"}


def test_get_all_v1_mode():
    _image(0, visibility="public")
    _image(1, visibility="private")
    listed = api.image_get_all(admin_context(), v1_mode=True)
    assert sorted(i["is_public"] for i in listed) == [False, True]
    assert all("visibility" not in i for i in listed)


def test_get_all_empty_database():
    assert api.image_get_all(admin_context()) == []
    assert api.image_get_all(user_context("tenant1")) == []


# --- filters: name, id, status, formats (eq / in) -------------------------------------------

def test_filter_name_equality():
    _image(0, name="alpha")
    beta = _image(1, name="beta")
    assert _listed({"name": "beta"}) == {beta["id"]}
    assert _listed({"name": "eq:beta"}) == {beta["id"]}
    assert _listed({"name": "delta"}) == set()


def test_filter_name_in_list():
    alpha, _, gamma = _image(0, name="alpha"), _image(1, name="beta"), _image(2, name="gamma")
    assert _listed({"name": "in:alpha,gamma"}) == {alpha["id"], gamma["id"]}
    assert _listed({"name": "in:gamma"}) == {gamma["id"]}


def test_filter_in_list_with_quoted_commas():
    comma = _image(0, name="a,b")
    c = _image(1, name="c")
    _image(2, name="a")
    _image(3, name="b")
    assert _listed({"name": 'in:"a,b",c'}) == {comma["id"], c["id"]}
    assert _listed({"name": 'in:c,"a,b"'}) == {comma["id"], c["id"]}


def test_filter_in_list_accepts_escaped_quotes():
    c = _image(0, name="c")
    assert c["id"] in _listed({"name": 'in:"x\\"y",c'})


def test_filter_in_list_keeps_backslashes_as_glance_does():
    # Glance's quoting: a backslash protects a quote inside a quoted item but stays in the
    # value, so "fake\"name" matches the name fake\"name (with the backslash).
    escaped = _image(0, name='fake\\"name')
    comma = _image(1, name="fake,name")
    plain = _image(2, name="fakename")
    unescaped = _image(3, name='fake"name')
    found = _listed({"name": 'in:"fake\\"name",fakename,"fake,name"'})
    assert found == {escaped["id"], comma["id"], plain["id"]}
    assert unescaped["id"] not in found
    # An escaped quote outside quotes is part of an unquoted item, backslash included.
    assert _listed({"name": 'in:fake\\"name'}) == {escaped["id"]}


def test_filter_in_list_empty_items_like_glance():
    empty = _image(0, name="")
    a = _image(1, name="a")
    assert _listed({"name": "in:a,,b"}) == {a["id"], empty["id"]}
    assert _listed({"name": "in:a,"}) == {a["id"]}   # a trailing comma adds no item
    assert _listed({"name": 'in:"",a'}) == {a["id"], empty["id"]}
    assert _listed({"name": "in:"}) == set()


@pytest.mark.parametrize("value", [
    'in:"a,b',        # quote not closed
    'in:a"b",c',      # no comma before the opening quote
    'in:"a"b,c',      # no comma after the closing quote
    # Glance's own list of malformed values:
    'in:"name', 'in:"name"name', 'in:name"dd"', 'in:na"me', 'in:"name""name"',
    'in:"a\\"',       # the only quote after the first is escaped: not closed
])
def test_filter_in_list_with_bad_quoting(value):
    _image(0, name="a")
    with pytest.raises(exception.InvalidParameterValue):
        api.image_get_all(admin_context(), filters={"name": value})


def test_filter_name_containing_colon_needs_eq():
    colon = _image(0, name="a:b")
    _image(1, name="a")
    assert _listed({"name": "eq:a:b"}) == {colon["id"]}
    with pytest.raises(exception.InvalidFilterOperatorValue):
        api.image_get_all(admin_context(), filters={"name": "a:b"})


@pytest.mark.parametrize("key", ["name", "id", "status", "container_format", "disk_format"])
@pytest.mark.parametrize("op", ["gt", "neq", "foo"])
def test_filter_unknown_operator_for_list_keys(key, op):
    _image(0, name="x")
    with pytest.raises(exception.InvalidFilterOperatorValue):
        api.image_get_all(admin_context(), filters={key: "%s:x" % op})


def test_filter_id():
    one, two, _ = _image(0), _image(1), _image(2)
    assert _listed({"id": one["id"]}) == {one["id"]}
    assert _listed({"id": "in:%s,%s" % (one["id"], two["id"])}) == {one["id"], two["id"]}
    assert _listed({"id": new_id()}) == set()


def test_filter_status():
    active = _image(0, status="active")
    queued = _image(1, status="queued")
    _image(2, status="saving")
    assert _listed({"status": "queued"}) == {queued["id"]}
    assert _listed({"status": "in:active,queued"}) == {active["id"], queued["id"]}


def test_filter_formats():
    qcow = _image(0, disk_format="qcow2", container_format="bare")
    raw = _image(1, disk_format="raw", container_format="ovf")
    assert _listed({"disk_format": "qcow2"}) == {qcow["id"]}
    assert _listed({"container_format": "in:bare,ovf"}) == {qcow["id"], raw["id"]}
    assert _listed({"disk_format": "eq:raw", "container_format": "ovf"}) == {raw["id"]}


# --- filters: visibility, properties, tags --------------------------------------------------

@pytest.mark.parametrize("visibility", ["public", "private", "shared", "community"])
def test_filter_visibility(visibility):
    made = {v: _image(i, visibility=v, owner="tenant1")["id"]
            for i, v in enumerate(["public", "private", "shared", "community"])}
    assert _listed({"visibility": visibility}) == {made[visibility]}
    assert _listed({"visibility": visibility}, context=user_context("tenant1")) == \
        {made[visibility]}
    assert _listed({"visibility": "all"}) == set(made.values())


def test_filter_properties_are_anded():
    both = _image(0, properties={"a": "1", "b": "2"})
    only_a = _image(1, properties={"a": "1", "b": "3"})
    _image(2)
    assert _listed({"properties": {"a": "1"}}) == {both["id"], only_a["id"]}
    assert _listed({"properties": {"a": "1", "b": "2"}}) == {both["id"]}
    assert _listed({"properties": {"a": "2"}}) == set()


def test_filter_unknown_key_is_a_property_filter():
    ubuntu = _image(0, properties={"os_distro": "ubuntu"})
    _image(1, properties={"os_distro": "fedora"})
    legacy = _image(2, properties={"is_public": "yes"})
    assert _listed({"os_distro": "ubuntu"}) == {ubuntu["id"]}
    assert _listed({"is_public": "yes"}) == {legacy["id"]}
    assert _listed({"os_distro": "ubuntu", "properties": {"os_distro": "ubuntu"}}) == \
        {ubuntu["id"]}
    assert _listed({"no_such_property": "x"}) == set()


def test_filter_properties_ignore_deleted_rows():
    image = _image(0, properties={"a": "1"})
    api.image_property_delete(admin_context(), "a", image["id"])
    assert _listed({"properties": {"a": "1"}}) == set()
    assert _listed({"a": "1"}) == set()


def test_filter_tags_are_anded_and_live_only():
    both = _image(0)
    one = _image(1)
    ctx = admin_context()
    api.image_tag_create(ctx, both["id"], "x")
    api.image_tag_create(ctx, both["id"], "y")
    api.image_tag_create(ctx, one["id"], "x")
    api.image_tag_create(ctx, one["id"], "z")
    assert _listed({"tags": ["x"]}) == {both["id"], one["id"]}
    assert _listed({"tags": ["x", "y"]}) == {both["id"]}
    assert _listed({"tags": ["nope"]}) == set()
    api.image_tag_delete(ctx, both["id"], "y")
    assert _listed({"tags": ["y"]}) == set()


# --- filters: ranges and column equality ----------------------------------------------------

def test_filter_size_min_max():
    small, medium, large = _image(0, size=10), _image(1, size=100), _image(2, size=1000)
    assert _listed({"size_min": 100}) == {medium["id"], large["id"]}
    assert _listed({"size_max": 100}) == {small["id"], medium["id"]}
    assert _listed({"size_min": "50", "size_max": "500"}) == {medium["id"]}
    assert _listed({"size_min": 2000}) == set()


def test_filter_range_on_other_integer_columns():
    low = _image(0, min_ram=128, virtual_size=10, min_disk=1)
    high = _image(1, min_ram=1024, virtual_size=5000, min_disk=20)
    assert _listed({"min_ram_min": 512}) == {high["id"]}
    assert _listed({"virtual_size_max": 100}) == {low["id"]}
    assert _listed({"min_disk_min": "1", "min_disk_max": "1"}) == {low["id"]}


@pytest.mark.parametrize("key", ["size_min", "size_max", "min_ram_min"])
def test_filter_range_with_non_integer(key):
    _image(0, size=1)
    with pytest.raises(exception.InvalidFilterRangeValue):
        api.image_get_all(admin_context(), filters={key: "big"})


def test_filter_column_equality():
    hidden = _image(0, os_hidden=True, protected=True, owner="tenant1", checksum="a" * 32,
                    os_hash_algo="sha512", os_hash_value="f" * 128, min_ram=512, size=7)
    plain = _image(1, checksum="b" * 32, os_hash_value="e" * 128)
    assert _listed({"os_hidden": True}) == {hidden["id"]}
    assert _listed({"os_hidden": False}) == {plain["id"]}
    assert _listed({"protected": True}) == {hidden["id"]}
    assert _listed({"protected": False}) == {plain["id"]}
    assert _listed({"owner": "tenant1"}) == {hidden["id"]}
    assert _listed({"checksum": "b" * 32}) == {plain["id"]}
    assert _listed({"os_hash_value": "f" * 128}) == {hidden["id"]}
    assert _listed({"os_hash_algo": "sha512"}) == {hidden["id"]}
    assert _listed({"min_ram": 512}) == {hidden["id"]}
    assert _listed({"size": 7}) == {hidden["id"]}


def test_filter_keys_with_none_value_are_ignored():
    one, two = _image(0, name="one"), _image(1, name="two")
    everything = {one["id"], two["id"]}
    assert _listed({"name": None}) == everything
    assert _listed({"status": None, "os_distro": None, "size_min": None}) == everything


# --- filters: created_at / updated_at -------------------------------------------------------

@pytest.mark.parametrize("op, expected", [
    ("gt", [20]), ("gte", [10, 20]), ("lt", [0]), ("lte", [0, 10]), ("eq", [10]),
    ("neq", [0, 20]),
])
@pytest.mark.parametrize("key", ["created_at", "updated_at"])
def test_filter_time_operators(key, op, expected):
    made = {n: _image(n)["id"] for n in (0, 10, 20)}
    value = "%s:%s" % (op, at(10).isoformat())
    assert _listed({key: value}) == {made[n] for n in expected}


@pytest.mark.parametrize("key", ["created_at", "updated_at"])
def test_filter_time_bare_value_means_eq(key):
    made = {n: _image(n)["id"] for n in (0, 10, 20)}
    assert _listed({key: at(10).isoformat()}) == {made[10]}


def test_filter_time_with_timezone_is_normalised_to_utc():
    made = {n: _image(n)["id"] for n in (0, 10, 20)}
    assert _listed({"created_at": "gt:2024-01-01T12:00:10Z"}) == {made[20]}
    assert _listed({"created_at": "gt:2024-01-01T14:00:10+02:00"}) == {made[20]}
    assert _listed({"created_at": "2024-01-01T13:00:10+01:00"}) == {made[10]}


@pytest.mark.parametrize("key", ["created_at", "updated_at"])
@pytest.mark.parametrize("value", ["gt:yesterday", "not a date", "lt:2024-13-45T00:00:00"])
def test_filter_time_with_bad_date(key, value):
    _image(0)
    with pytest.raises(exception.InvalidParameterValue):
        api.image_get_all(admin_context(), filters={key: value})


@pytest.mark.parametrize("key", ["created_at", "updated_at"])
def test_filter_time_with_unknown_operator(key):
    _image(0)
    with pytest.raises(exception.InvalidFilterOperatorValue):
        api.image_get_all(admin_context(), filters={key: "after:%s" % at(0).isoformat()})


# --- filters: deleted and changes-since -----------------------------------------------------

def _live_killed_deleted():
    live = _image(0, status="active", owner="tenant1")
    killed = _image(1, status="killed", owner="tenant1")
    deleted = _image(2, status="active", owner="tenant1")
    api.image_destroy(admin_context(), deleted["id"])
    return live["id"], killed["id"], deleted["id"]


def test_filter_deleted():
    live, killed, deleted = _live_killed_deleted()
    assert _listed() == {live, killed, deleted}  # admins list soft-deleted rows
    assert _listed({"deleted": False}) == {live}  # also drops 'killed'
    assert _listed({"deleted": True}) == {deleted}


def test_user_listing_includes_deleted_images_unless_filtered():
    live, killed, deleted = _live_killed_deleted()
    tenant2 = user_context("tenant2")  # sees these public images, owns none
    assert _listed(context=tenant2) == {live, killed, deleted}
    assert _listed({"deleted": False}, context=tenant2) == {live}
    assert _listed({"deleted": True}, context=tenant2) == {deleted}


def test_filter_changes_since():
    old = _image(0)
    new = _image(20)
    assert _listed({"changes-since": at(10)}) == {new["id"]}
    assert _listed({"changes-since": at(20)}) == set()
    api.image_update(admin_context(), old["id"], {"name": "touched"})  # updated_at = now
    assert _listed({"changes-since": at(10)}) == {old["id"], new["id"]}


def test_filter_changes_since_accepts_aware_datetime():
    _image(0)
    new = _image(20)
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    since = (at(10) + datetime.timedelta(hours=2)).replace(tzinfo=plus_two)  # == at(10) UTC
    assert _listed({"changes-since": since}) == {new["id"]}


def test_filter_changes_since_lists_deleted_images_for_users():
    image = _image(0, owner="tenant1")
    api.image_destroy(admin_context(), image["id"])
    assert _listed({"changes-since": at(-10)}, context=user_context("tenant2")) == \
        {image["id"]}


@pytest.mark.parametrize("filters", [
    {"deleted": True}, {"changes-since": datetime.datetime(2000, 1, 1)}])
def test_showing_deleted_keeps_deleted_locations(filters):
    image = _image(0, locations=[{"url": "file:///a", "metadata": {}, "status": "active"},
                                 {"url": "file:///b", "metadata": {}, "status": "active"}])
    api.image_location_delete(admin_context(), image["id"], image["locations"][0]["id"],
                              "deleted")
    (plain,) = api.image_get_all(admin_context())
    assert [loc["url"] for loc in plain["locations"]] == ["file:///b"]
    api.image_destroy(admin_context(), image["id"])
    (shown,) = api.image_get_all(admin_context(), filters=filters)
    assert [(loc["url"], loc["status"]) for loc in shown["locations"]] == [
        ("file:///a", "deleted"), ("file:///b", "deleted")]


# --- is_public / admin_as_user arguments ----------------------------------------------------

def test_is_public_argument():
    public = _image(0, visibility="public")
    private = _image(1, visibility="private")
    shared = _image(2, visibility="shared")
    assert _listed(is_public=True) == {public["id"]}
    assert _listed(is_public=False) == {private["id"], shared["id"]}


# --- sorting --------------------------------------------------------------------------------

def test_default_sort_is_created_at_desc():
    made = [_image(n)["id"] for n in (3, 1, 4, 0, 2)]
    listed = ids(api.image_get_all(admin_context()))
    assert listed == [made[2], made[0], made[4], made[1], made[3]]


def test_default_sort_breaks_created_at_ties_by_id_desc():
    made = [_image(0) for _ in range(5)] + [_image(1)]
    listed = ids(api.image_get_all(admin_context()))
    assert listed == [made[5]["id"]] + sorted(ids(made[:5]), reverse=True)


def test_sort_single_direction_applies_to_appended_keys():
    made = [_image(n % 3, name="n%d" % (n % 2)) for n in range(8)]
    listed = ids(api.image_get_all(admin_context(), sort_key=["name"], sort_dir=["asc"]))
    assert listed == sorted_ids(made, ["name", "created_at", "id"], ["asc"] * 3)


def test_sort_key_without_direction_is_desc():
    made = [_image(n % 3, name="n%d" % (n % 2)) for n in range(8)]
    listed = ids(api.image_get_all(admin_context(), sort_key=["name"]))
    assert listed == sorted_ids(made, ["name", "created_at", "id"], ["desc"] * 3)


def test_sort_several_keys_and_directions():
    statuses = ["active", "queued", "saving"]
    made = [_image(n % 2, status=statuses[n % 3], name="n%d" % (n % 4)) for n in range(12)]
    listed = ids(api.image_get_all(admin_context(), sort_key=["status", "name"],
                                   sort_dir=["asc", "desc"]))
    # created_at and id are appended with the default direction, desc
    assert listed == sorted_ids(made, ["status", "name", "created_at", "id"],
                                ["asc", "desc", "desc", "desc"])


@pytest.mark.parametrize("key", ["size", "min_ram", "updated_at", "id", "created_at", "name"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sort_by_column(key, direction):
    made = [_image(n, name="n%02d" % ((n * 7) % 10), size=(n * 3) % 10,
                   min_ram=(n * 5) % 10, updated_at=at(100 - n)) for n in range(10)]
    listed = ids(api.image_get_all(admin_context(), sort_key=[key], sort_dir=[direction]))
    keys = [key] + [k for k in ("created_at", "id") if k != key]
    assert listed == sorted_ids(made, keys, [direction] * len(keys))


def test_unknown_sort_key():
    _image(0)
    with pytest.raises(exception.InvalidSortKey):
        api.image_get_all(admin_context(), sort_key=["flavour"])


@pytest.mark.parametrize("sort_dir", [["up"], ["asc", "sideways"]])
def test_unknown_sort_dir(sort_dir):
    _image(0)
    with pytest.raises(exception.InvalidSortDir):
        api.image_get_all(admin_context(), sort_key=["name", "size"], sort_dir=sort_dir)


def test_sort_dir_count_mismatch():
    _image(0)
    with pytest.raises(exception.Invalid):
        api.image_get_all(admin_context(), sort_key=["name", "size"],
                          sort_dir=["asc", "desc", "asc"])
    with pytest.raises(exception.Invalid):
        api.image_get_all(admin_context(), sort_key=["name", "size", "status"],
                          sort_dir=["asc", "desc"])


# --- marker / limit -------------------------------------------------------------------------

def _paging_images():
    """13 images with ties in every sort key: names, created_at and sizes repeat."""
    return [_image(n // 3, name="n%d" % (n % 3), size=(n % 4) * 100,
                   status=("active", "queued")[n % 2]) for n in range(13)]


def _walk(context, limit, **kwargs):
    """Every page of image_get_all, following the marker until a page comes back empty."""
    pages, marker = [], None
    while True:
        page = ids(api.image_get_all(context, marker=marker, limit=limit, **kwargs))
        assert len(page) <= limit
        if not page:
            return pages
        pages.append(page)
        marker = page[-1]
        assert len(pages) <= 100, "paging does not terminate"


SORTS = [
    (None, None, ["created_at", "id"], ["desc", "desc"]),
    (["name"], ["asc"], ["name", "created_at", "id"], ["asc", "asc", "asc"]),
    (["name"], ["desc"], ["name", "created_at", "id"], ["desc", "desc", "desc"]),
    (["size", "name"], ["asc", "desc"], ["size", "name", "created_at", "id"],
     ["asc", "desc", "desc", "desc"]),
    (["status"], None, ["status", "created_at", "id"], ["desc", "desc", "desc"]),
    (["created_at"], ["asc"], ["created_at", "id"], ["asc", "asc"]),
    (["id"], ["asc"], ["id", "created_at"], ["asc", "asc"]),
]


@pytest.mark.parametrize("sort_key, sort_dir, keys, dirs", SORTS,
                         ids=["default", "name-asc", "name-desc", "size-asc-name-desc",
                              "status", "created-asc", "id-asc"])
@pytest.mark.parametrize("limit", [1, 3, 5])
def test_paging_walks_every_image_once_in_order(sort_key, sort_dir, keys, dirs, limit):
    made = _paging_images()
    expected = sorted_ids(made, keys, dirs)
    kwargs = {"sort_key": list(sort_key) if sort_key else None,
              "sort_dir": list(sort_dir) if sort_dir else None}
    assert ids(api.image_get_all(admin_context(), **kwargs)) == expected
    pages = _walk(admin_context(), limit, **kwargs)
    assert [image_id for page in pages for image_id in page] == expected
    assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1)


def test_paging_as_a_user_over_the_union_of_visible_images():
    ctx = admin_context()
    made = []
    for n in range(12):
        owner, visibility = [("tenant1", "private"), ("tenant2", "public"),
                             ("tenant2", "shared"), ("tenant2", "private")][n % 4]
        image = _image(n // 4, name="n%d" % (n % 2), owner=owner, visibility=visibility)
        if visibility == "shared":
            api.image_member_create(ctx, {"image_id": image["id"], "member": "tenant1",
                                          "status": "accepted"})
        made.append(image)
    visible = [i for i in made if not (i["owner"] == "tenant2" and i["visibility"] == "private")]
    expected = sorted_ids(visible, ["name", "created_at", "id"], ["asc"] * 3)
    pages = _walk(user_context("tenant1"), 2, sort_key=["name"], sort_dir=["asc"])
    assert [image_id for page in pages for image_id in page] == expected


def test_paging_with_filters():
    made = _paging_images()
    wanted = [i for i in made if i["status"] == "queued"]
    expected = sorted_ids(wanted, ["created_at", "id"], ["desc", "desc"])
    pages = _walk(admin_context(), 2, filters={"status": "queued"})
    assert [image_id for page in pages for image_id in page] == expected


def test_limit():
    made = [_image(n)["id"] for n in range(4)]
    assert api.image_get_all(admin_context(), limit=0) == []
    assert ids(api.image_get_all(admin_context(), limit=2)) == made[::-1][:2]
    assert ids(api.image_get_all(admin_context(), limit=None)) == made[::-1]
    assert ids(api.image_get_all(admin_context(), limit=10)) == made[::-1]


def test_marker_is_excluded_and_last_marker_gives_nothing():
    made = [_image(n)["id"] for n in range(4)]
    assert ids(api.image_get_all(admin_context(), marker=made[2])) == [made[1], made[0]]
    assert api.image_get_all(admin_context(), marker=made[0]) == []


def test_marker_outside_filtered_set_still_positions():
    a0 = _image(0, name="a")
    b1 = _image(1, name="b")
    _image(2, name="a")
    _image(3, name="a")
    listed = api.image_get_all(admin_context(), filters={"name": "a"}, marker=b1["id"])
    assert ids(listed) == [a0["id"]]


def test_unknown_marker_is_image_not_found():
    _image(0)
    with pytest.raises(exception.ImageNotFound):
        api.image_get_all(admin_context(), marker=new_id())
    with pytest.raises(exception.ImageNotFound):
        api.image_get_all(user_context("tenant1"), marker=new_id())


def test_invisible_marker_is_forbidden():
    _image(0)
    hidden = _image(1, owner="tenant2", visibility="private")
    with pytest.raises(exception.Forbidden):
        api.image_get_all(user_context("tenant1"), marker=hidden["id"])


def test_deleted_marker():
    first = _image(0, owner="tenant1")
    marker = _image(1, owner="tenant1")
    api.image_destroy(admin_context(), marker["id"])
    assert ids(api.image_get_all(admin_context(), marker=marker["id"])) == [first["id"]]
    with pytest.raises(exception.NotFound):
        api.image_get_all(user_context("tenant1"), filters={"deleted": False},
                          marker=marker["id"])
    # showing deleted images (deleted or changes-since filter) accepts a deleted marker
    assert ids(api.image_get_all(user_context("tenant1"), filters={"deleted": True},
                                 marker=marker["id"])) == []
    since = {"changes-since": at(-5)}
    assert ids(api.image_get_all(user_context("tenant1"), filters=since,
                                 marker=marker["id"])) == [first["id"]]
