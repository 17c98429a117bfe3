"""Glance's Database Public API on SQLAlchemy: images and, re-exported, their child rows.

Functions take the request context first, take and return plain dicts, use naive UTC datetimes
and raise Glance's exceptions (glance_cache_mw.exception, with Glance's names). A page of images
costs two SQL statements (three with a marker): the page, then every property, location and
tag of its images in one UNION ALL.
"""

import json
import uuid

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import engine, models, prepared, query, values, visibility
from glance_cache_mw.db.children import (  # noqa: F401  (the public surface)
    image_location_add, image_location_delete, image_location_update, image_member_count,
    image_member_create, image_member_delete, image_member_find, image_member_update,
    image_property_create, image_property_delete, image_tag_create, image_tag_delete,
    image_tag_get_all, image_tag_set_all)
from glance_cache_mw.db import children
from glance_cache_mw.db.visibility import is_image_mutable, is_image_visible  # noqa: F401

images = models.images

configure = engine.configure
get_engine = engine.get_engine


def configured(url):
    """Configure the engine for ``url`` unless it already is; return this module (Paste use)."""
    if not engine.is_configured() or str(engine.get_engine().url) != str(
            engine.normalize_url(url)):
        engine.configure(url)
    return __import__(__name__, fromlist=["_"])


def reset_db():
    """Delete every row of every table (for tests)."""
    with engine.writer() as conn:
        for table in reversed(models.metadata.sorted_tables):
            conn.execute(table.delete())


# --- reading --------------------------------------------------------------------------------

# Built once: only the bound values change between calls, so SQLAlchemy reuses the compiled
# statement (building a select costs more than running it on the hit path).
_IMAGE_BY_ID = sa.select(images).where(images.c.id == sa.bindparam("image_id"))
_IMAGE_BY_ID_WITH_MEMBERSHIP = sa.select(
    images, visibility.member_condition(images.c.id, sa.bindparam("owner")).label("_is_member")
).where(images.c.id == sa.bindparam("image_id"))


# The hit path's read: only the columns a download needs, run by PreparedRead (no
# transaction, no result processing: none of these columns needs any).
_HIT_COLUMNS = [images.c[name] for name in ("id", "status", "size", "checksum", "os_hash_algo",
                                            "os_hash_value", "visibility", "owner", "deleted")]
_HIT_BY_ID = prepared.PreparedRead(
    sa.select(*_HIT_COLUMNS).where(images.c.id == sa.bindparam("image_id")))
_HIT_BY_ID_WITH_MEMBERSHIP = prepared.PreparedRead(sa.select(
    *_HIT_COLUMNS,
    visibility.member_condition(images.c.id, sa.bindparam("owner")).label("_is_member")
).where(images.c.id == sa.bindparam("image_id")))


def _fetch_image(conn, context, image_id, force_show_deleted=False):
    """The image row as a dict, with Glance's get rules: ImageNotFound or Forbidden."""
    values.check_image_id(image_id)
    if context.owner is not None and not context.is_admin:
        row = conn.execute(_IMAGE_BY_ID_WITH_MEMBERSHIP,
                           {"image_id": image_id, "owner": context.owner}).first()
    else:
        row = conn.execute(_IMAGE_BY_ID, {"image_id": image_id}).first()
    return _checked(context, image_id, None if row is None else dict(row._mapping),
                    force_show_deleted)


def _checked(context, image_id, image, force_show_deleted=False):
    """``image`` (a row as a dict, or None) if ``context`` may get it: image_get's rules."""
    if image is None or (image["deleted"] and not (force_show_deleted
                                                   or context.can_see_deleted)):
        raise exception.ImageNotFound("No image found with ID %s" % image_id)
    is_member = bool(image.pop("_is_member", False))
    visible = visibility.visible_without_membership(context, image)
    if visible is None:
        visible = is_member
    if not visible:
        raise exception.Forbidden("Image %s is not visible to you" % image_id)
    return image


def _children_statement(with_tags, show_deleted_locations):
    """Properties, locations (and tags) of the images in the expanding parameter ``ids``."""
    p, loc, t = models.image_properties, models.image_locations, models.image_tags
    text, short = sa.Text(), sa.String(255)
    ids = sa.bindparam("ids", expanding=True)

    def part(kind, table, name, value, meta, status, *where):
        return sa.select(sa.literal_column("'%s'" % kind).label("kind"), table.c.image_id,
                         table.c.id, name.label("name"), value.label("value"),
                         meta.label("meta"), status.label("status"), table.c.created_at,
                         table.c.updated_at, table.c.deleted_at, table.c.deleted
                         ).where(table.c.image_id.in_(ids), *where)

    null_text, null_short = sa.cast(sa.null(), text), sa.cast(sa.null(), short)
    parts = [part("p", p, p.c.name, sa.cast(p.c.value, text), null_text, null_short)]
    live_locations = () if show_deleted_locations else (loc.c.deleted == sa.false(),)
    parts.append(part("l", loc, null_short, sa.cast(loc.c.value, text), loc.c.meta_data,
                      sa.cast(loc.c.status, short), *live_locations))
    if with_tags:
        parts.append(part("t", t, null_short, sa.cast(t.c.value, text), null_text, null_short,
                          t.c.deleted == sa.false()))
    return sa.union_all(*parts)


# Built once (SQLAlchemy then reuses their compiled form): (with_tags, deleted locations).
_CHILDREN = {(tags, deleted): _children_statement(tags, deleted)
             for tags in (False, True) for deleted in (False, True)}


def _children(conn, image_ids, with_tags, show_deleted_locations):
    """{image_id: {"properties": [...], "locations": [...], "tags": [...]}} in one statement."""
    found = {image_id: {"properties": [], "locations": [], "tags": []} for image_id in image_ids}
    if not image_ids:
        return found
    rows = conn.execute(_CHILDREN[(bool(with_tags), bool(show_deleted_locations))],
                        {"ids": list(image_ids)}).all()
    for row in sorted(rows, key=lambda r: r.id):
        entry = found[row.image_id]
        if row.kind == "p":
            entry["properties"].append({
                "id": row.id, "image_id": row.image_id, "name": row.name, "value": row.value,
                "created_at": row.created_at, "updated_at": row.updated_at,
                "deleted_at": row.deleted_at, "deleted": bool(row.deleted)})
        elif row.kind == "l":
            entry["locations"].append({"id": row.id, "url": row.value,
                                       "metadata": json.loads(row.meta or "{}"),
                                       "status": row.status})
        else:
            entry["tags"].append(row.value)
    return found


def _shape(context, image, kids, with_tags=False, v1_mode=False):
    """The image dict Glance returns: columns, properties, locations (+ tags)."""
    image = dict(image)
    image["deleted"] = bool(image["deleted"])
    image["properties"] = kids["properties"]
    locations = kids["locations"]
    if image["status"] == "deactivated" and not context.is_admin:
        locations = []
    image["locations"] = locations
    if with_tags:
        image["tags"] = kids["tags"]
    if v1_mode:
        image["is_public"] = image.pop("visibility") == "public"
    return image


def _read_image(conn, context, image_id, force_show_deleted=False, v1_mode=False,
                show_deleted_locations=None, check_visibility=True):
    if check_visibility:
        image = _fetch_image(conn, context, image_id, force_show_deleted)
    else:
        row = conn.execute(sa.select(images).where(images.c.id == image_id)).one()
        image = dict(row._mapping)
    if show_deleted_locations is None:
        show_deleted_locations = force_show_deleted
    kids = _children(conn, [image_id], False, show_deleted_locations)[image_id]
    return _shape(context, image, kids, v1_mode=v1_mode)


def image_get(context, image_id, force_show_deleted=False, v1_mode=False):
    """Return the image; ImageNotFound if missing or deleted (and hidden), Forbidden if hidden."""
    with engine.reader() as conn:
        return _read_image(conn, context, image_id, force_show_deleted, v1_mode)


def image_get_visible(context, image_id):
    """What the cache's hit path needs on every download, after image_get's checks: id,
    status, size, checksum, os_hash_algo, os_hash_value, visibility, owner, deleted. One
    SELECT, run without a transaction (``prepared.PreparedRead``)."""
    values.check_image_id(image_id)
    if context.owner is not None and not context.is_admin:
        row = _HIT_BY_ID_WITH_MEMBERSHIP.first({"image_id": image_id, "owner": context.owner})
    else:
        row = _HIT_BY_ID.first({"image_id": image_id})
    if row is not None:
        row["deleted"] = bool(row["deleted"])
    return _checked(context, image_id, row)


def image_get_all(context, filters=None, marker=None, limit=None, sort_key=None,
                  sort_dir=None, member_status="accepted", is_public=None,
                  admin_as_user=False, return_tag=False, v1_mode=False):
    """List the images ``context`` may see that match ``filters``, one page after ``marker``."""
    keys, dirs = query.sort_order(sort_key, sort_dir)
    conds, showing_deleted, visibility_filter = query.filter_conditions(filters)
    if limit is not None and limit == 0:
        return []
    vis_cond = visibility.visibility_filter_condition(context, visibility_filter)
    if vis_cond is not None:
        conds.append(vis_cond)
    if is_public is not None:
        conds.append(images.c.visibility == "public" if is_public
                     else images.c.visibility != "public")
    limit = limit if limit is not None and limit > 0 else None
    branches = None
    if not context.is_admin or admin_as_user:
        branches = visibility.listing_branches(context, member_status, visibility_filter,
                                               is_public)
        if not branches:
            return []
    with engine.reader() as conn:
        if marker is not None:
            marker_image = _fetch_image(conn, context, marker, force_show_deleted=showing_deleted)
            conds.append(query.after_marker(keys, dirs, marker_image))
        stmt = _listing(conn.dialect.name, conds, branches, keys, dirs, limit)
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
        kids = _children(conn, [row["id"] for row in rows], return_tag, showing_deleted)
    return [_shape(context, row, kids[row["id"]], return_tag, v1_mode) for row in rows]


def _listing(dialect_name, conds, branches, keys, dirs, limit):
    """One ordered, limited SELECT. With visibility ``branches``, each branch selects the ids
    and sort keys of its own ordered, limited page; the pages are merged (the branches are
    disjoint, so UNION ALL) and joined back to the images of the final page."""
    order = query.order_by(keys, dirs, dialect_name)
    if branches is None:
        stmt = sa.select(images).where(*conds).order_by(*order)
        return stmt if limit is None else stmt.limit(limit)
    columns = [images.c[key] for key in dict.fromkeys(keys)]
    pages = []
    for branch in branches:
        page = sa.select(*columns).where(*conds, branch).order_by(*order)
        pages.append(sa.select(page.subquery() if limit is None else page.limit(limit)
                               .subquery()))
    merged = sa.union_all(*pages).subquery("listed")
    if limit is not None:
        merged = (sa.select(merged).order_by(*query.order_by(keys, dirs, dialect_name,
                                                                   merged.c))
                  .limit(limit).subquery("page"))
    return sa.select(images).join(merged, images.c.id == merged.c.id).order_by(*order)


# --- writing --------------------------------------------------------------------------------

@engine.retry_on_deadlock
def image_create(context, values_, v1_mode=False):
    """Create an image (with properties, locations and tags) and return it. No policy check."""
    data = dict(values_)
    new_props = data.pop("properties", None) or {}
    new_locations = data.pop("locations", None) or []
    new_tags = data.pop("tags", None) or []
    values.check_image_values(data, creating=True)
    if data.get("id") is not None:
        values.check_lengths(images, {"id": data["id"]})
    row = values.image_columns(data)
    now = models.utcnow()
    row.setdefault("id", str(uuid.uuid4()))
    row.setdefault("created_at", now)
    row.setdefault("updated_at", now)
    row["deleted"] = bool(row.get("deleted", False))
    image_id = row["id"]
    with engine.writer() as conn:
        exists = conn.execute(sa.select(images.c.id).where(images.c.id == image_id)).first()
        if exists is not None:
            raise exception.Duplicate("Image ID %s already exists!" % image_id)
        try:
            conn.execute(images.insert().values(**row))
        except sa.exc.IntegrityError:
            raise exception.Duplicate("Image ID %s already exists!" % image_id) from None
        children.set_properties(conn, image_id, new_props, False, None, now)
        for location in new_locations:
            conn.execute(models.image_locations.insert().values(
                children.location_row(image_id, location, now)))
        if new_tags:
            _insert_tags(conn, image_id, new_tags, now)
    with engine.reader() as conn:
        return _read_image(conn, context, image_id, v1_mode=v1_mode, check_visibility=False)


def _insert_tags(conn, image_id, new_tags, now):
    for value in new_tags:
        children._check_tag(value)
    conn.execute(models.image_tags.insert(), [
        {"image_id": image_id, "value": value, "created_at": now, "updated_at": now,
         "deleted": False} for value in dict.fromkeys(new_tags)])


def _load_for_change(conn, context, image_id):
    """The image, if ``context`` may see it and change it (Forbidden / ForbiddenPublicImage)."""
    image = _fetch_image(conn, context, image_id)
    if not is_image_mutable(context, image):
        if image["visibility"] in ("public", "community"):
            raise exception.ForbiddenPublicImage(
                "You are not permitted to modify public image %s" % image_id)
        raise exception.Forbidden("You are not permitted to modify image %s" % image_id)
    return image


@engine.retry_on_deadlock
def image_update(context, image_id, values_, purge_props=False, from_state=None,
                 v1_mode=False, atomic_props=None):
    """Update an image; with ``from_state`` only while its status is that (else Conflict)."""
    data = dict(values_)
    new_props = data.pop("properties", None)
    new_locations = data.pop("locations", None)
    for key in values.PROTECTED_ATTRS:
        data.pop(key, None)
    data.pop("id", None)
    values.check_image_values(data, creating=False)
    changes = values.image_columns(data)
    now = models.utcnow()
    changes["updated_at"] = now
    with engine.writer() as conn:
        _load_for_change(conn, context, image_id)
        stmt = images.update().where(images.c.id == image_id)
        if from_state is not None:
            stmt = stmt.where(images.c.status == from_state)
        if conn.execute(stmt.values(**changes)).rowcount == 0:
            current = conn.execute(sa.select(images.c.status)
                                   .where(images.c.id == image_id)).scalar()
            raise exception.Conflict(
                "cannot transition from %s to %s in update (wanted from_state=%s)"
                % (current, changes.get("status"), from_state))
        if new_props is not None:
            children.set_properties(conn, image_id, new_props, purge_props, atomic_props, now)
        if new_locations:
            _replace_locations(conn, image_id, new_locations, now)
    with engine.reader() as conn:
        return _read_image(conn, context, image_id, force_show_deleted=True, v1_mode=v1_mode,
                           show_deleted_locations=False, check_visibility=False)


def _replace_locations(conn, image_id, new_locations, now):
    """Glance's _image_locations_set: drop live ones not listed, update listed, add new."""
    loc = models.image_locations
    keep = {location["id"] for location in new_locations if location.get("id") is not None}
    live = conn.execute(sa.select(loc.c.id).where(loc.c.image_id == image_id,
                                                  loc.c.deleted == sa.false())).scalars()
    for location_id in live:
        if location_id not in keep:
            children.delete_location(conn, image_id, location_id, "deleted", now)
    for location in new_locations:
        if location.get("id") is None:
            conn.execute(loc.insert().values(children.location_row(image_id, location, now)))
        else:
            children.update_location(conn, image_id, location, now)


@engine.retry_on_deadlock
def image_destroy(context, image_id):
    """Soft-delete an image and all its live child rows at one delete time; return it."""
    now = models.utcnow()
    with engine.writer() as conn:
        _load_for_change(conn, context, image_id)
        conn.execute(images.update().where(images.c.id == image_id).values(
            deleted=True, deleted_at=now, updated_at=now))
        loc = models.image_locations
        conn.execute(loc.update().where(loc.c.image_id == image_id, loc.c.deleted == sa.false())
                     .values(deleted=True, status="deleted", deleted_at=now, updated_at=now))
        for table in (models.image_properties, models.image_members, models.image_tags):
            conn.execute(table.update()
                         .where(table.c.image_id == image_id, table.c.deleted == sa.false())
                         .values(deleted=True, deleted_at=now))
    with engine.reader() as conn:
        return _read_image(conn, context, image_id, check_visibility=False)
