"""Checking and normalising the values the DB API is given, before any SQL runs.

Glance lets some bad values reach the database (a raw SQLAlchemy error, or silently truncated
strings on SQLite); here each one is a Glance ``Invalid`` naming the key and the value.
"""

import datetime

import sqlalchemy as sa

from glance_cache_mw import config, exception, image_ids
from glance_cache_mw.db import models

MAX_INT32 = 2 ** 31 - 1
# Keys a caller may not set on update (and that image_member/property writers drop).
PROTECTED_ATTRS = ("created_at", "updated_at", "deleted_at", "deleted")
DELETED_LOCATION_STATUSES = ("deleted", "pending_delete")
MEMBER_STATUSES = ("pending", "accepted", "rejected")

IMAGE_COLUMNS = frozenset(models.images.c.keys())


def check_no_4byte(values, where="value"):
    """Raise Invalid when a string anywhere in ``values`` has a character beyond U+FFFF, or a
    lone surrogate (U+D800..U+DFFF).

    Glance's MySQL tables are 3-byte utf8, so Glance refuses these characters everywhere. A lone
    surrogate (from a JSON ``\\ud800`` escape) is not Unicode text at all: no driver can
    encode it, and Glance lets the driver's error through (a 500).
    """
    if isinstance(values, str):
        if any(0xD800 <= ord(char) <= 0xDFFF for char in values):
            raise exception.Invalid(
                "%s %r contains a lone surrogate, which is not valid unicode" % (where, values))
        if any(ord(char) > 0xFFFF for char in values):
            raise exception.Invalid(
                "%s %r contains 4-byte unicode characters, which are not supported"
                % (where, values))
    elif isinstance(values, dict):
        for key, value in values.items():
            check_no_4byte(key, "key")
            check_no_4byte(value, "value of %r" % (key,))
    elif isinstance(values, (list, tuple, set)):
        for item in values:
            check_no_4byte(item, where)


def check_lengths(table, values):
    """Raise Invalid when a string is longer than its column allows (SQLite would store it)."""
    for key, value in values.items():
        column = table.c.get(key)
        if column is None or not isinstance(value, str):
            continue
        length = getattr(column.type, "length", None)
        if length is not None and len(value) > length:
            raise exception.Invalid("%s is longer than %d characters: %r"
                                    % (key, length, value[:64]))


def _int_or_invalid(key, value, maximum=None):
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise exception.Invalid("%s=%r is not an integer" % (key, value)) from None
    if maximum is not None and number > maximum:
        raise exception.Invalid("%s=%r is larger than %d" % (key, value, maximum))
    if number < 0:
        raise exception.Invalid("%s=%r must not be negative" % (key, value))
    return number


def convert_is_public(values):
    """Legacy ``is_public`` becomes ``visibility`` ('public' or 'shared'); both is Invalid."""
    if "is_public" in values:
        if "visibility" in values:
            raise exception.Invalid("Both 'is_public' and 'visibility' were given; "
                                    "use only 'visibility'.")
        values["visibility"] = "public" if values.pop("is_public") else "shared"


def check_image_values(values, creating):
    """Validate and coerce image column values in place (extra keys are left for the caller)."""
    convert_is_public(values)
    if creating:
        if not values.get("status"):
            raise exception.Invalid("Image status is required.")
        if values.get("size") is not None:
            values["size"] = _int_or_invalid("size", values["size"])
        for key in ("min_ram", "min_disk"):
            if key in values:
                values[key] = values[key] or 0
        values["protected"] = bool(values.get("protected", False))
    status = values.get("status")
    if status and status not in models.STATUSES:
        raise exception.Invalid("Invalid image status '%s' for image (one of: %s)."
                                % (status, ", ".join(models.STATUSES)))
    if "status" in values and not status:
        values.pop("status")  # a falsy status on update changes nothing, as in Glance
    if "visibility" in values and values["visibility"] not in models.VISIBILITIES:
        raise exception.Invalid("Invalid visibility %r (one of: %s)."
                                % (values["visibility"], ", ".join(models.VISIBILITIES)))
    for key in ("min_ram", "min_disk"):
        if key in values:
            values[key] = _int_or_invalid(key, values[key] or 0, MAX_INT32)
    for key in ("size", "virtual_size"):
        if values.get(key) is not None:
            values[key] = _int_or_invalid(key, values[key])
    if "owner" in values and not values["owner"]:
        values["owner"] = None
    for key in ("protected", "os_hidden"):
        if key in values:
            values[key] = to_bool(key, values[key])
    check_no_4byte(values)
    check_lengths(models.images, values)


def to_bool(key, value):
    """A boolean column's value: text must be one of config.bool_from_text's words; anything
    else (a JSON boolean, a number) counts by its truth."""
    if isinstance(value, str):
        try:
            return config.bool_from_text(value)
        except ValueError:
            raise exception.Invalid("%s=%r is not a boolean" % (key, value)) from None
    return bool(value)


def image_columns(values):
    """Only the keys that are image columns (Glance silently drops the others)."""
    return {key: value for key, value in values.items() if key in IMAGE_COLUMNS}


def check_image_id(image_id):
    """Raise ImageNotFound for ids that cannot exist (image_ids.is_glance_id: None, not text,
    over 36 characters); the DB takes any id Glance's database could hold."""
    if not image_ids.is_glance_id(image_id):
        raise exception.ImageNotFound("No image found with ID %s" % (image_id,))


def parse_datetime(param, text):
    """ISO 8601 text (or a datetime) as a naive UTC datetime; InvalidParameterValue if bad."""
    if isinstance(text, datetime.datetime):
        value = text
    else:
        try:
            value = datetime.datetime.fromisoformat(str(text).strip())
        except ValueError:
            raise exception.InvalidParameterValue(
                value=text, param=param, extra_msg="not an ISO 8601 date and time") from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def is_integer_column(name):
    column = models.images.c.get(name)
    return column is not None and isinstance(column.type, (sa.Integer, sa.BigInteger))
