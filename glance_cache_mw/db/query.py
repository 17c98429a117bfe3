"""image_get_all's query parts: filters, sort order and keyset pagination, as SQL conditions.

Differences from Glance, on purpose: bad sort directions are InvalidSortDir (not KeyError), the
caller's lists are not mutated, and NULLs sort the same on every database (first in ascending
order) with a marker comparison that agrees with that order, so paging across NULLs works.
"""

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import models, values

images = models.images
props = models.image_properties
tags = models.image_tags

DEFAULT_SORT_KEY = "created_at"
DEFAULT_SORT_DIR = "desc"
SORT_DIRS = ("asc", "desc")
RANGE_OPS = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__",
             "eq": "__eq__", "neq": "__ne__"}
LIST_FILTER_KEYS = ("name", "id", "status", "container_format", "disk_format")


def sort_order(sort_key=None, sort_dir=None):
    """Validated (keys, dirs) with created_at and id appended for a total order."""
    keys = _as_list(sort_key) or [DEFAULT_SORT_KEY]
    dirs = _as_list(sort_dir) or [DEFAULT_SORT_DIR]
    for key in keys:
        if key not in values.IMAGE_COLUMNS:
            raise exception.InvalidSortKey("Sort key %r is not an image attribute." % (key,))
    for direction in dirs:
        if direction not in SORT_DIRS:
            raise exception.InvalidSortDir("Sort direction %r is not asc or desc." % (direction,))
    default_dir = dirs[0] if len(dirs) == 1 else DEFAULT_SORT_DIR
    if len(dirs) == 1:
        dirs = dirs * len(keys)
    elif len(dirs) != len(keys):
        raise exception.InvalidSortDir("%d sort directions for %d sort keys."
                                       % (len(dirs), len(keys)))
    for key in (DEFAULT_SORT_KEY, "id"):
        if key not in keys:
            keys.append(key)
            dirs.append(default_dir)
    return keys, dirs


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def order_by(keys, dirs, dialect_name, columns=images.c):
    """ORDER BY clauses, NULLs first when ascending and last when descending on every engine.

    ``columns``: the images table's columns, or those of a subquery selecting them.
    """
    clauses = []
    for key, direction in zip(keys, dirs):
        column = columns[key]
        clause = column.asc() if direction == "asc" else column.desc()
        # MySQL and SQLite already order NULLs this way (and MySQL has no NULLS FIRST).
        if images.c[key].nullable and dialect_name == "postgresql":
            clause = clause.nulls_first() if direction == "asc" else clause.nulls_last()
        clauses.append(clause)
    return clauses


def after_marker(keys, dirs, marker):
    """Rows strictly after ``marker`` (a dict of the marker image) in the (keys, dirs) order."""
    branches = []
    equal_so_far = []
    for key, direction in zip(keys, dirs):
        column, value = images.c[key], marker[key]
        branches.append(sa.and_(*equal_so_far, _past(column, value, direction)))
        equal_so_far.append(column.is_(None) if value is None else column == value)
    condition = sa.or_(*branches)
    # A redundant bound on the first key lets the database range-scan its index.
    first, first_value = images.c[keys[0]], marker[keys[0]]
    if first_value is not None and not first.nullable:
        bound = first >= first_value if dirs[0] == "asc" else first <= first_value
        condition = sa.and_(bound, condition)
    return condition


def _past(column, value, direction):
    if direction == "asc":           # NULL is the smallest value
        if value is None:
            return column.is_not(None)
        return column > value
    if value is None:                # descending: nothing comes after NULL
        return sa.false()
    return sa.or_(column < value, column.is_(None)) if column.nullable else column < value


def filter_conditions(filters):
    """Translate Glance's filters into (conditions, showing_deleted, visibility).

    ``visibility`` is returned separately because it is applied after the visibility union.
    """
    filters = {key: value for key, value in (filters or {}).items() if value is not None}
    visibility = filters.pop("visibility", None)
    showing_deleted = False
    conds = []
    if "changes-since" in filters:
        since = values.parse_datetime("changes-since", filters.pop("changes-since"))
        conds.append(images.c.updated_at > since)
        showing_deleted = True
    if "deleted" in filters:
        deleted = values.to_bool("deleted", filters.pop("deleted"))
        conds.append(images.c.deleted == deleted)
        if deleted:
            showing_deleted = True
        else:
            conds.append(images.c.status != "killed")
    for name, value in (filters.pop("properties", None) or {}).items():
        conds.append(property_condition(name, value))
    for tag in _as_list(filters.pop("tags", None)):
        conds.append(sa.exists().where(tags.c.image_id == images.c.id, tags.c.value == tag,
                                       tags.c.deleted == sa.false()))
    for key, value in filters.items():
        conds.append(_one_filter(key, value))
    return conds, showing_deleted, visibility


def property_condition(name, value):
    return sa.exists().where(props.c.image_id == images.c.id, props.c.name == name,
                             props.c.value == str(value), props.c.deleted == sa.false())


def _one_filter(key, value):
    if key.endswith("_min") or key.endswith("_max"):
        column = key[:-4]
        if not values.is_integer_column(column):
            raise exception.InvalidFilterRangeValue(
                "Range filter %s needs an integer image attribute, %r is not one."
                % (key, column))
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise exception.InvalidFilterRangeValue(
                "Unable to filter on a range with a non-numeric value: %s=%r."
                % (key, value)) from None
        col = images.c[column]
        return col >= number if key.endswith("_min") else col <= number
    if key in ("created_at", "updated_at"):
        op, when = split_time_filter(key, value)
        return getattr(images.c[key], RANGE_OPS[op])(when)
    if key in LIST_FILTER_KEYS:
        op, operand = split_list_filter(key, value)
        column = images.c[key]
        return column.in_(operand) if op == "in" else column == operand
    if key in values.IMAGE_COLUMNS:
        column = images.c[key]
        if isinstance(column.type, sa.Boolean):
            value = values.to_bool(key, value)
        return column == value
    return property_condition(key, value)


def split_time_filter(key, text):
    """'op:ISO8601' or a bare ISO8601 (meaning eq) into (op, naive UTC datetime)."""
    text = str(text)
    try:
        return "eq", values.parse_datetime(key, text)
    except exception.InvalidParameterValue:
        pass
    if ":" not in text:
        raise exception.InvalidParameterValue(
            value=text, param=key, extra_msg="not an ISO 8601 date and time")
    op, when = text.split(":", 1)
    if op not in RANGE_OPS:
        raise exception.InvalidFilterOperatorValue(
            "Invalid operator %r for %s (one of: %s)." % (op, key, ", ".join(RANGE_OPS)))
    return op, values.parse_datetime(key, when)


def split_list_filter(key, text):
    """'in:a,b,"c,d"' → ('in', [...]); 'eq:x' or 'x' → ('eq', 'x'); other ops are invalid."""
    text = str(text)
    if ":" not in text:
        return "eq", text
    op, operand = text.split(":", 1)
    if op == "eq":
        return "eq", operand
    if op == "in":
        return "in", split_quoted_list(key, operand)
    raise exception.InvalidFilterOperatorValue(
        "Invalid operator %r for %s (use in: or eq:, or eq:%s for a value with ':')."
        % (op, key, text))


def split_quoted_list(key, text):
    """Split an ``in:`` operand the way Glance does (api-wg quoting).

    Items are separated by commas; an item in double quotes may hold commas. A backslash
    keeps the next character inside a quoted item, and a quote right after a backslash is
    no delimiter; the backslash itself stays in the value (Glance does not unescape:
    ``"a\\"b"`` matches the name ``a\\"b``). An opening quote must start the operand or
    follow a comma, a closing one must end it or precede a comma, and every quote must be
    closed; anything else is InvalidParameterValue. ``a,,b`` has an empty middle item and a
    trailing comma adds none.
    """
    _check_quotes(key, text)
    items, pos, end = [], 0, len(text)
    while pos < end:
        if text[pos] == '"':
            closing = _closing_quote(text, pos + 1)
            if closing is not None:
                items.append(text[pos + 1:closing])
                pos = closing + 1
                if pos < end and text[pos] == ",":
                    pos += 1
                continue
        comma = text.find(",", pos)
        comma = end if comma == -1 else comma
        items.append(text[pos:comma])
        pos = comma + 1
    return items


def _closing_quote(text, pos):
    """Index of the quote closing an item that starts at ``pos`` (a backslash takes the
    character after it along), or None."""
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
        elif text[pos] == '"':
            return pos
        else:
            pos += 1
    return None


def _check_quotes(key, text):
    """Quotes come in pairs, opened after a comma (or first) and closed before one (or last);
    a quote preceded by a backslash does not count."""
    opening = True
    for pos, char in enumerate(text):
        if char != '"' or (pos and text[pos - 1] == "\\"):
            continue
        if opening and pos and text[pos - 1] != ",":
            raise _bad_quotes(key, text, "no comma before an opening quote")
        if not opening and pos + 1 < len(text) and text[pos + 1] != ",":
            raise _bad_quotes(key, text, "no comma after a closing quote")
        opening = not opening
    if not opening:
        raise _bad_quotes(key, text, "a quote is not closed")


def _bad_quotes(key, text, reason):
    return exception.InvalidParameterValue(value=text, param=key, extra_msg=reason)
