"""Locations, properties, members and tags of an image: Glance's DB API functions for them.

Like Glance these do no visibility or policy check (the API layers above do). Unlike Glance,
a child row for a missing image is ImageNotFound and a missing row is NotFound, never a raw
SQLAlchemy error; a tag is kept once, and image_location_delete honours ``delete_time``.
"""

import json

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import engine, models, values

images = models.images
locations = models.image_locations
props = models.image_properties
members = models.image_members
tags = models.image_tags

MEMBER_FIELDS = ("id", "image_id", "member", "can_share", "status", "created_at",
                 "updated_at", "deleted")
PROPERTY_FIELDS = ("id", "image_id", "name", "value", "created_at", "updated_at",
                   "deleted_at", "deleted")


def require_image(conn, image_id):
    """Raise ImageNotFound unless a row (deleted or not) exists for ``image_id``."""
    values.check_image_id(image_id)
    found = conn.execute(sa.select(images.c.id).where(images.c.id == image_id)).first()
    if found is None:
        raise exception.ImageNotFound("No image found with ID %s" % image_id)


def _location_status(location):
    status = location.get("status")
    if not status:
        raise exception.Invalid("Location %r has no status." % (location.get("url"),))
    return status


def location_row(image_id, location, now):
    """Column values for a new location row (created soft-deleted for a deleted status)."""
    for key in ("url", "metadata"):
        if key not in location:
            raise exception.Invalid("Location is missing %r: %r" % (key, location))
    status = _location_status(location)
    values.check_no_4byte({"url": location["url"], "metadata": location["metadata"]})
    deleted = status in values.DELETED_LOCATION_STATUSES
    row = {"image_id": image_id, "value": location["url"],
           "meta_data": json.dumps(location["metadata"] or {}), "status": status,
           "created_at": now, "updated_at": now, "deleted": deleted,
           "deleted_at": now if deleted else None}
    if location.get("id") is not None:
        row["id"] = location["id"]
    return row


@engine.retry_on_deadlock
def image_location_add(context, image_id, location):
    """Add a location ({url, metadata, status}) to an image. Returns None."""
    with engine.writer() as conn:
        require_image(conn, image_id)
        conn.execute(locations.insert().values(location_row(image_id, location,
                                                            models.utcnow())))


def update_location(conn, image_id, location, now):
    if location.get("id") is None:
        raise exception.Invalid("The location to update has no id: %r" % (location,))
    status = _location_status(location)
    values.check_no_4byte({"url": location.get("url"), "metadata": location.get("metadata")})
    deleted = status in values.DELETED_LOCATION_STATUSES
    result = conn.execute(
        locations.update()
        .where(locations.c.id == location["id"], locations.c.image_id == image_id)
        .values(value=location["url"], meta_data=json.dumps(location.get("metadata") or {}),
                status=status, updated_at=now, deleted=deleted,
                deleted_at=now if deleted else None))
    if result.rowcount == 0:
        raise exception.NotFound("No location found with ID %s for image %s"
                                 % (location["id"], image_id))


@engine.retry_on_deadlock
def image_location_update(context, image_id, location):
    """Rewrite a location by id; a non-deleted status undeletes it. Returns None."""
    with engine.writer() as conn:
        update_location(conn, image_id, location, models.utcnow())


def delete_location(conn, image_id, location_id, status, delete_time):
    if status not in values.DELETED_LOCATION_STATUSES:
        raise exception.Invalid("The status of deleted image location can only be set to "
                                "'pending_delete' or 'deleted', not %r" % (status,))
    result = conn.execute(
        locations.update()
        .where(locations.c.id == location_id, locations.c.image_id == image_id)
        .values(deleted=True, status=status, updated_at=delete_time, deleted_at=delete_time))
    if result.rowcount == 0:
        raise exception.NotFound("No location found with ID %s for image %s"
                                 % (location_id, image_id))


@engine.retry_on_deadlock
def image_location_delete(context, image_id, location_id, status, delete_time=None):
    """Soft-delete a location with status 'deleted' or 'pending_delete'. Returns None."""
    with engine.writer() as conn:
        delete_location(conn, image_id, location_id, status, delete_time or models.utcnow())


# --- properties -----------------------------------------------------------------------------

def _property_dict(row):
    return {key: row._mapping[key] for key in PROPERTY_FIELDS}


@engine.retry_on_deadlock
def image_property_create(context, values_):
    """Create a property {image_id, name, value}; Duplicate if the name exists (even deleted)."""
    image_id, name = values_.get("image_id"), values_.get("name")
    if not name:
        raise exception.Invalid("A property needs a name.")
    value = values_.get("value")
    values.check_no_4byte({name: value})
    values.check_lengths(props, {"name": name})
    now = models.utcnow()
    with engine.writer() as conn:
        require_image(conn, image_id)
        existing = conn.execute(sa.select(props.c.id).where(
            props.c.image_id == image_id, props.c.name == name)).first()
        if existing is not None:
            raise exception.Duplicate("Property %r already exists for image %s"
                                      % (name, image_id))
        new_id = conn.execute(props.insert().values(
            image_id=image_id, name=name, value=value, created_at=now, updated_at=now,
            deleted=False)).inserted_primary_key[0]
        return _property_dict(conn.execute(sa.select(props).where(props.c.id == new_id)).one())


@engine.retry_on_deadlock
def image_property_delete(context, prop_ref, image_ref):
    """Soft-delete the property named ``prop_ref`` of image ``image_ref``; returns the row."""
    now = models.utcnow()
    with engine.writer() as conn:
        where = (props.c.image_id == image_ref, props.c.name == prop_ref)
        result = conn.execute(props.update().where(*where).values(
            deleted=True, deleted_at=now, updated_at=now))
        if result.rowcount == 0:
            raise exception.NotFound("No property %r found for image %s" % (prop_ref, image_ref))
        return _property_dict(conn.execute(sa.select(props).where(*where)).one())


def set_properties(conn, image_id, new_props, purge_props, atomic_props, now):
    """Glance's _set_properties_for_image: upsert by name (undeleting), optionally purge."""
    atomic = set(atomic_props or ())
    values.check_no_4byte(new_props)
    for name in new_props:
        values.check_lengths(props, {"name": name})
    existing = {row.name: row for row in conn.execute(
        sa.select(props.c.id, props.c.name, props.c.value, props.c.deleted)
        .where(props.c.image_id == image_id))}
    for name, value in new_props.items():
        if name in atomic:
            continue
        value = None if value is None else str(value)
        row = existing.get(name)
        if row is None:
            conn.execute(props.insert().values(image_id=image_id, name=name, value=value,
                                               created_at=now, updated_at=now, deleted=False))
        elif row.value != value or row.deleted:
            conn.execute(props.update().where(props.c.id == row.id).values(
                value=value, deleted=False, deleted_at=None, updated_at=now))
    if purge_props:
        doomed = [row.id for name, row in existing.items()
                  if name not in new_props and name not in atomic]
        if doomed:
            conn.execute(props.update().where(props.c.id.in_(doomed)).values(
                deleted=True, deleted_at=now, updated_at=now))


# --- members --------------------------------------------------------------------------------

def _member_dict(row):
    return {key: row._mapping[key] for key in MEMBER_FIELDS}


def _check_member_status(status):
    if status not in values.MEMBER_STATUSES:
        raise exception.Invalid("Invalid member status %r (one of: %s)"
                                % (status, ", ".join(values.MEMBER_STATUSES)))


@engine.retry_on_deadlock
def image_member_create(context, values_):
    """Share an image with a project: {image_id, member[, can_share][, status]}."""
    image_id, member = values_.get("image_id"), values_.get("member")
    if not member:
        raise exception.Invalid("A member needs a project id.")
    status = values_.get("status") or "pending"
    _check_member_status(status)
    values.check_no_4byte({"member": member})
    values.check_lengths(members, {"member": member})
    now = models.utcnow()
    with engine.writer() as conn:
        require_image(conn, image_id)
        live = conn.execute(sa.select(members.c.id).where(
            members.c.image_id == image_id, members.c.member == member,
            members.c.deleted == sa.false())).first()
        if live is not None:
            raise exception.Duplicate("Project %s is already a member of image %s"
                                      % (member, image_id))
        new_id = conn.execute(members.insert().values(
            image_id=image_id, member=member, can_share=bool(values_.get("can_share", False)),
            status=status, created_at=now, updated_at=now, deleted=False)).inserted_primary_key[0]
        return _member_dict(conn.execute(sa.select(members).where(members.c.id == new_id)).one())


@engine.retry_on_deadlock
def image_member_update(context, memb_id, values_):
    """Update a membership by id (a deleted one is resurrected); can_share defaults to False."""
    changes = {key: value for key, value in values_.items()
               if key in ("status", "can_share", "member")}
    if "status" in changes:
        _check_member_status(changes["status"])
    values.check_no_4byte(changes)
    changes["can_share"] = bool(changes.get("can_share", False))
    now = models.utcnow()
    with engine.writer() as conn:
        result = conn.execute(members.update().where(members.c.id == memb_id).values(
            deleted=False, deleted_at=None, updated_at=now, **changes))
        if result.rowcount == 0:
            raise exception.NotFound("No membership found with ID %s" % (memb_id,))
        return _member_dict(conn.execute(sa.select(members).where(members.c.id == memb_id)).one())


@engine.retry_on_deadlock
def image_member_delete(context, memb_id):
    """Soft-delete a membership by id. Returns None."""
    now = models.utcnow()
    with engine.writer() as conn:
        result = conn.execute(members.update().where(members.c.id == memb_id).values(
            deleted=True, deleted_at=now, updated_at=now))
        if result.rowcount == 0:
            raise exception.NotFound("No membership found with ID %s" % (memb_id,))


def image_member_find(context, image_id=None, member=None, status=None, include_deleted=False):
    """Memberships the caller may see: of images it owns, or naming its project."""
    query = sa.select(members).order_by(members.c.id)
    if not context.is_admin:
        owner = context.owner
        owned = sa.select(images.c.id).where(
            images.c.owner.is_(None) if owner is None else images.c.owner == owner)
        query = query.where(sa.or_(members.c.image_id.in_(owned), members.c.member == owner))
    if not include_deleted:
        query = query.where(members.c.deleted == sa.false())
    for column, value in (("image_id", image_id), ("member", member), ("status", status)):
        if value is not None:
            query = query.where(members.c[column] == value)
    with engine.reader() as conn:
        return [_member_dict(row) for row in conn.execute(query)]


def image_member_count(context, image_id):
    """Live memberships of an image, whatever their status."""
    if not image_id:
        raise exception.Invalid("Image id is required.")
    query = sa.select(sa.func.count()).select_from(members).where(
        members.c.image_id == str(image_id), members.c.deleted == sa.false())
    with engine.reader() as conn:
        return conn.execute(query).scalar()


# --- tags -----------------------------------------------------------------------------------

def _check_tag(value):
    if not isinstance(value, str) or not value:
        raise exception.Invalid("A tag must be a non-empty string, not %r" % (value,))
    values.check_no_4byte(value, "tag")
    values.check_lengths(tags, {"value": value})


def image_tag_get_all(context, image_id):
    """Live tags of an image, oldest first ([] for an unknown image)."""
    values.check_image_id(image_id)
    with engine.reader() as conn:
        return _live_tags(conn, image_id)


def _live_tags(conn, image_id):
    return list(conn.execute(sa.select(tags.c.value).where(
        tags.c.image_id == image_id, tags.c.deleted == sa.false()).order_by(tags.c.id))
        .scalars())


@engine.retry_on_deadlock
def image_tag_create(context, image_id, value):
    """Add a tag (kept once: adding an existing tag changes nothing). Returns ``value``."""
    _check_tag(value)
    now = models.utcnow()
    with engine.writer() as conn:
        require_image(conn, image_id)
        if value not in _live_tags(conn, image_id):
            conn.execute(tags.insert().values(image_id=image_id, value=value, created_at=now,
                                              updated_at=now, deleted=False))
    return value


@engine.retry_on_deadlock
def image_tag_delete(context, image_id, value):
    """Soft-delete a live tag; NotFound when the image has no such tag."""
    values.check_image_id(image_id)
    now = models.utcnow()
    with engine.writer() as conn:
        result = conn.execute(tags.update().where(
            tags.c.image_id == image_id, tags.c.value == value, tags.c.deleted == sa.false())
            .values(deleted=True, deleted_at=now, updated_at=now))
        if result.rowcount == 0:
            raise exception.NotFound("Image %s has no tag %r" % (image_id, value))


@engine.retry_on_deadlock
def image_tag_set_all(context, image_id, tags_):
    """Make the live tags exactly ``tags_``: kept ones stay first, new ones follow in order."""
    wanted = list(dict.fromkeys(tags_ or ()))
    for value in wanted:
        _check_tag(value)
    now = models.utcnow()
    with engine.writer() as conn:
        require_image(conn, image_id)
        current = _live_tags(conn, image_id)
        new = [value for value in wanted if value not in current]
        if new:
            conn.execute(tags.insert(), [
                {"image_id": image_id, "value": value, "created_at": now, "updated_at": now,
                 "deleted": False} for value in new])
        doomed = [value for value in current if value not in wanted]
        if doomed:
            conn.execute(tags.update().where(
                tags.c.image_id == image_id, tags.c.value.in_(doomed),
                tags.c.deleted == sa.false()).values(deleted=True, deleted_at=now,
                                                     updated_at=now))
