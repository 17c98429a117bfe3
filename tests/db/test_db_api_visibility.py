"""Who sees and who may change which image (spec §3 and §5.3), as parametrized tables.

One owner ("owner1") has an image of each visibility. Every image carries the same member
rows: "pending1" (pending), "accepted1" (accepted), "rejected1" (rejected) and "former1"
(accepted, then deleted).
"""

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api
from tests.db.helpers import admin_context, at, create_image, ids, user_context

pytestmark = pytest.mark.usefixtures("db")

VISIBILITIES = ("public", "private", "shared", "community")

CONTEXTS = {
    "owner": lambda: user_context("owner1"),
    "pending": lambda: user_context("pending1"),
    "accepted": lambda: user_context("accepted1"),
    "rejected": lambda: user_context("rejected1"),
    "former": lambda: user_context("former1"),       # membership soft-deleted
    "stranger": lambda: user_context("stranger1"),
    "no_project": lambda: user_context(None),
    "admin": lambda: admin_context(),
    "admin_project": lambda: admin_context("stranger1"),
}
MEMBERS = {"pending": "pending1", "accepted": "accepted1", "rejected": "rejected1"}

# is_image_visible(ctx, image) and image_get: who sees the owner1 image of each visibility.
SEES = {
    "public": set(CONTEXTS),
    "community": set(CONTEXTS),
    # members of a shared image see it whatever their status; a deleted membership does not count
    "shared": {"owner", "pending", "accepted", "rejected", "admin", "admin_project"},
    # members of a private image do not see it
    "private": {"owner", "admin", "admin_project"},
}

VISIBLE_CASES = [pytest.param(who, vis, who in SEES[vis], id="%s-%s" % (who, vis))
                 for vis in VISIBILITIES for who in CONTEXTS]


@pytest.fixture
def owned():
    """{visibility: image dict} for owner1, with the member rows described above."""
    ctx = admin_context()
    images = {}
    for n, visibility in enumerate(VISIBILITIES):
        image = create_image(owner="owner1", visibility=visibility, created_at=at(n),
                             name=visibility)
        for who, member in MEMBERS.items():
            api.image_member_create(ctx, {"image_id": image["id"], "member": member,
                                          "status": who})
        former = api.image_member_create(ctx, {"image_id": image["id"], "member": "former1",
                                               "status": "accepted"})
        api.image_member_delete(ctx, former["id"])
        images[visibility] = image
    return images


@pytest.mark.parametrize("who, visibility, expected", VISIBLE_CASES)
def test_is_image_visible_and_image_get(owned, who, visibility, expected):
    context = CONTEXTS[who]()
    image = owned[visibility]
    assert api.is_image_visible(context, image) is expected
    # only id, owner and visibility are read
    minimal = {key: image[key] for key in ("id", "owner", "visibility")}
    assert api.is_image_visible(context, minimal) is expected
    if expected:
        assert api.image_get(context, image["id"])["id"] == image["id"]
    else:
        with pytest.raises(exception.Forbidden):
            api.image_get(context, image["id"])


# is_image_visible(ctx, shared image, status=...): the member row's status must match.
STATUS_SEES = {
    "accepted": {"owner", "accepted", "admin", "admin_project"},
    "pending": {"owner", "pending", "admin", "admin_project"},
    "rejected": {"owner", "rejected", "admin", "admin_project"},
}


@pytest.mark.parametrize("who, status, expected", [
    pytest.param(who, status, who in STATUS_SEES[status], id="%s-%s" % (who, status))
    for status in STATUS_SEES for who in CONTEXTS])
def test_is_image_visible_with_member_status(owned, who, status, expected):
    assert api.is_image_visible(CONTEXTS[who](), owned["shared"], status=status) is expected


@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("who", sorted(CONTEXTS))
def test_unowned_images_are_visible_to_everyone(who, visibility):
    image = create_image(visibility=visibility)
    context = CONTEXTS[who]()
    assert api.is_image_visible(context, image) is True
    assert api.is_image_visible(context, image, status="accepted") is True
    assert api.image_get(context, image["id"])["id"] == image["id"]


# image_get_all(ctx, member_status=...): which owner1 images are listed (no filters).
def _listed_for(who, member_status):
    if who == "owner":
        return set(VISIBILITIES)  # own community images are kept
    if who in MEMBERS:
        shared = member_status in (who, "all")  # the context name is its member status
        return {"public", "shared"} if shared else {"public"}
    if who in ("admin", "admin_project"):
        return {"public", "private", "shared"}  # others' community images are dropped
    if who == "no_project":
        # owner-less users list every shared image that has any live member (spec §5.3)
        return {"public", "shared"}
    return {"public"}  # stranger, former member


MEMBER_STATUSES = ("accepted", "pending", "rejected", "all")


@pytest.mark.parametrize("who, member_status, expected", [
    pytest.param(who, status, _listed_for(who, status), id="%s-%s" % (who, status))
    for status in MEMBER_STATUSES for who in CONTEXTS])
def test_image_get_all_member_status(owned, who, member_status, expected):
    listed = api.image_get_all(CONTEXTS[who](), member_status=member_status)
    assert sorted(image["name"] for image in listed) == sorted(expected)


def test_image_get_all_default_member_status_is_accepted(owned):
    assert sorted(i["name"] for i in api.image_get_all(user_context("accepted1"))) == \
        ["public", "shared"]
    assert [i["name"] for i in api.image_get_all(user_context("pending1"))] == ["public"]


def test_admin_as_user_lists_like_a_member(owned):
    admin_member = admin_context("accepted1")
    as_user = api.image_get_all(admin_member, admin_as_user=True)
    assert sorted(i["name"] for i in as_user) == ["public", "shared"]
    pending = api.image_get_all(admin_member, admin_as_user=True, member_status="pending")
    assert [i["name"] for i in pending] == ["public"]
    as_admin = api.image_get_all(admin_member)
    assert sorted(i["name"] for i in as_admin) == ["private", "public", "shared"]


# --- is_image_mutable -----------------------------------------------------------------------

MUTABLE = {"owner", "admin", "admin_project"}


@pytest.mark.parametrize("who, visibility, expected", [
    pytest.param(who, vis, who in MUTABLE, id="%s-%s" % (who, vis))
    for vis in VISIBILITIES for who in CONTEXTS])
def test_is_image_mutable(owned, who, visibility, expected):
    assert api.is_image_mutable(CONTEXTS[who](), owned[visibility]) is expected


@pytest.mark.parametrize("who", sorted(CONTEXTS))
def test_unowned_image_is_mutable_by_admins_only(who):
    image = create_image(visibility="public")
    assert api.is_image_mutable(CONTEXTS[who](), image) is (who in ("admin", "admin_project"))


# --- TestVisibility (spec §5.3): 4 owners x 4 visibilities, no members ----------------------

OWNERS = (None, "admin_project", "tenant1", "tenant2")


@pytest.fixture
def sixteen():
    """{(owner, visibility): image id} for every owner and visibility."""
    made = {}
    for n, owner in enumerate(OWNERS):
        for m, visibility in enumerate(VISIBILITIES):
            made[(owner, visibility)] = create_image(
                owner=owner, visibility=visibility, created_at=at(n * 4 + m))["id"]
    return made


def _pick(made, keep):
    return {image_id for (owner, vis), image_id in made.items() if keep(owner, vis)}


VISIBILITY_TABLE = [
    # (context name, get_all kwargs, expected count, predicate on (owner, visibility))
    ("admin", {}, 12, lambda o, v: v != "community"),
    ("admin", {"filters": {"visibility": "all"}}, 16, lambda o, v: True),
    ("admin", {"is_public": True}, 4, lambda o, v: v == "public"),
    ("admin", {"is_public": False}, 8, lambda o, v: v in ("private", "shared")),
    ("admin_with_project", {}, 13,
     lambda o, v: v != "community" or o == "admin_project"),
    ("admin_with_project", {"filters": {"visibility": "all"}}, 16, lambda o, v: True),
    ("admin_with_project", {"is_public": True}, 4, lambda o, v: v == "public"),
    ("admin_with_project", {"is_public": False}, 9,
     lambda o, v: v in ("private", "shared") or (v == "community" and o == "admin_project")),
    ("admin_with_project", {"admin_as_user": True}, 7,
     lambda o, v: v == "public" or o == "admin_project"),
    ("no_project", {}, 4, lambda o, v: v == "public"),
    ("no_project", {"filters": {"visibility": "all"}}, 8,
     lambda o, v: v in ("public", "community")),
    ("no_project", {"is_public": True}, 4, lambda o, v: v == "public"),
    ("no_project", {"is_public": False}, 0, lambda o, v: False),
    ("tenant1", {}, 7, lambda o, v: v == "public" or o == "tenant1"),
    ("tenant1", {"filters": {"visibility": "all"}}, 10,
     lambda o, v: v in ("public", "community") or o == "tenant1"),
    ("tenant1", {"is_public": True}, 4, lambda o, v: v == "public"),
    ("tenant1", {"is_public": False}, 3, lambda o, v: v != "public" and o == "tenant1"),
]
TABLE_CONTEXTS = {
    "admin": lambda: admin_context(),
    "admin_with_project": lambda: admin_context("admin_project"),
    "no_project": lambda: user_context(None),
    "tenant1": lambda: user_context("tenant1"),
}


def _row_id(row):
    who, kwargs = row[0], row[1]
    if "filters" in kwargs:
        return "%s-visibility=all" % who
    return "-".join([who] + ["%s=%s" % item for item in kwargs.items()]) if kwargs else who


@pytest.mark.parametrize("who, kwargs, count, keep", VISIBILITY_TABLE,
                         ids=[_row_id(row) for row in VISIBILITY_TABLE])
def test_visibility_table(sixteen, who, kwargs, count, keep):
    listed = api.image_get_all(TABLE_CONTEXTS[who](), **kwargs)
    assert len(listed) == count
    assert set(ids(listed)) == _pick(sixteen, keep)


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_visibility_filter_applies_to_admins(sixteen, visibility):
    listed = api.image_get_all(admin_context(), filters={"visibility": visibility})
    assert set(ids(listed)) == _pick(sixteen, lambda o, v: v == visibility)


def test_community_filter_for_a_user_lists_every_community_image(sixteen):
    listed = api.image_get_all(user_context("tenant1"), filters={"visibility": "community"})
    assert set(ids(listed)) == _pick(sixteen, lambda o, v: v == "community")


def test_private_filter_for_a_user_lists_only_own(sixteen):
    listed = api.image_get_all(user_context("tenant1"), filters={"visibility": "private"})
    assert set(ids(listed)) == {sixteen[("tenant1", "private")]}


@pytest.mark.parametrize("visibility, expected", [
    (None, ["public"]), ("all", ["community", "public"]), ("shared", []), ("private", []),
    ("community", ["community"])])
@pytest.mark.parametrize("member_status", ["accepted", "pending", "all"])
def test_an_over_long_project_id_lists_public_and_community_only(owned, visibility, expected,
                                                                 member_status):
    """The images API lists for a caller without a project as a project of 256+ characters,
    which no owner or member can be (api/images.py, docs/glance-differences.md)."""
    context = user_context("(no project)" + "-" * 256)
    filters = {} if visibility is None else {"visibility": visibility}
    listed = api.image_get_all(context, filters=filters, member_status=member_status,
                               sort_key=["name"], sort_dir=["asc"])
    assert [image["name"] for image in listed] == expected
    if len(expected) == 2:   # the marker works too
        page = api.image_get_all(context, filters=filters, member_status=member_status,
                                 sort_key=["name"], sort_dir=["asc"], marker=listed[0]["id"])
        assert [image["name"] for image in page] == expected[1:]
