"""Who may see and change an image: Glance's visibility model, in Python and in SQL."""

import sqlalchemy as sa

from glance_cache_mw.db import engine, models

images = models.images
members = models.image_members


def _get(image, key):
    return image[key] if isinstance(image, dict) else getattr(image, key)


def member_condition(image_id_col, owner, status=None):
    """A live membership of ``owner`` on the image, with ``status`` unless it is None or 'all'."""
    conds = [members.c.image_id == image_id_col, members.c.member == owner,
             members.c.deleted == sa.false()]
    if status is not None and status != "all":
        conds.append(members.c.status == status)
    return sa.exists().where(*conds)


def visible_without_membership(context, image):
    """True/False when the answer needs no membership lookup, else None (a shared image)."""
    if context.is_admin or _get(image, "owner") is None:
        return True
    if _get(image, "visibility") in ("public", "community"):
        return True
    if context.owner is None:
        return False
    if _get(image, "owner") == context.owner:
        return True
    if _get(image, "visibility") == "shared":
        return None
    return False  # members of a private image do not see it


def is_image_visible(context, image, status=None):
    """True when ``context`` may see ``image`` (a dict or row with id, owner, visibility).

    ``status`` restricts which membership statuses count; None and 'all' accept any.
    """
    answer = visible_without_membership(context, image)
    if answer is not None:
        return answer
    query = sa.select(member_condition(sa.literal(_get(image, "id")), context.owner, status))
    with engine.reader() as conn:
        return bool(conn.execute(query).scalar())


def is_image_mutable(context, image):
    """Admins change anything; otherwise only the owner, and nobody changes an unowned image."""
    if context.is_admin:
        return True
    if _get(image, "owner") is None or context.owner is None:
        return False
    return _get(image, "owner") == context.owner


def listing_branches(context, member_status, visibility=None, is_public=None):
    """A regular user's listable images as disjoint conditions, one per branch of Glance's
    three-way union: others' public images, others' community images, the caller's own
    images, and shared images the caller is a member of. Branches that the ``visibility``
    filter or ``is_public`` leave empty are not returned.

    Each branch is listed on its own (ordered and limited) and the results merged: every
    branch can then walk an index in sort order and stop after a page, which one query with
    OR cannot do (docs/benchmarks.md, "Database").
    """
    branches = []
    not_mine = (sa.true() if context.owner is None else
                sa.or_(images.c.owner.is_(None), images.c.owner != context.owner))
    for value in ("public", "community"):
        if _branch_possible(value, visibility, is_public):
            branches.append(sa.and_(images.c.visibility == value, not_mine))
    if context.owner is not None:
        branches.append(images.c.owner == context.owner)
    if _branch_possible("shared", visibility, is_public):
        branches.append(_shared_with(context, member_status, not_mine))
    return branches


def _branch_possible(value, visibility, is_public):
    if visibility is None and value == "community":
        return False    # others' community images are listed only when asked for
    if visibility not in (None, "all") and visibility != value:
        return False
    return is_public is None or is_public == (value == "public")


def _shared_with(context, member_status, not_mine):
    if context.owner is None:
        # Glance: without a project, any live member row at all (listing only; image_get
        # still refuses these images).
        return sa.and_(images.c.visibility == "shared", sa.exists().where(
            members.c.image_id == images.c.id, members.c.deleted == sa.false()))
    member_of = sa.select(members.c.image_id).where(
        members.c.member == context.owner, members.c.deleted == sa.false())
    if member_status is not None and member_status != "all":
        member_of = member_of.where(members.c.status == member_status)
    # A caller is a member of few images: drive this branch from its membership rows. The
    # visibility test is an expression, so no planner walks the (huge) 'shared' index range.
    return sa.and_(images.c.visibility.concat("") == "shared", not_mine,
                   images.c.id.in_(member_of))


def visibility_filter_condition(context, visibility):
    """The ``visibility`` filter key, applied to everyone (admins included)."""
    if visibility == "all":
        return None
    if visibility is not None:
        return images.c.visibility == visibility
    if context.owner is None:
        return images.c.visibility != "community"
    return sa.or_(images.c.visibility != "community", images.c.owner == context.owner)
