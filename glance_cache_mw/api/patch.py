"""Image updates as JSON patches (``application/openstack-images-v2.1-json-patch``).

``parse_changes`` turns the request body into ``Change`` tuples, refusing what Glance refuses
(400 for malformed patches, 403 for read-only and reserved attributes); ``apply_changes`` plays
them on a copy of the image with Glance's rules: ``add`` sets (and overwrites), ``replace``
needs an existing property (409), ``remove`` of a base attribute is 403 and of a missing
property 409.
"""

import typing

from glance_cache_mw.api import common, schemas

PATCH_MEDIA_TYPE = "application/openstack-images-v2.1-json-patch"
OPERATIONS = ("add", "replace", "remove")
_LINK_ATTRIBUTES = frozenset({"self", "file", "schema", "direct_url", "stores"})


class Change(typing.NamedTuple):
    op: str
    name: str
    value: object


class Draft(typing.NamedTuple):
    """The image as the patch leaves it: changed base attributes, all properties, tags."""

    attributes: dict
    properties: dict
    tags: list


def decode_pointer(path):
    """'/name' → 'name' (RFC 6901 escapes); only one level, as images have no nesting."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) < 2:
        raise common.HTTPError(400, "Invalid JSON pointer for this resource: %r." % (path,))
    raw = path[1:]
    if "/" in raw:
        root = raw.split("/", 1)[0]
        if root == "locations":
            raise common.HTTPError(403, "It's not allowed to update locations if locations "
                                        "are invisible.")
        raise common.HTTPError(400, "Nested paths are not allowed: %r." % path)
    if "~" in raw.replace("~0", "").replace("~1", ""):
        raise common.HTTPError(400, "Invalid JSON pointer for this resource: %r." % path)
    return raw.replace("~1", "/").replace("~0", "~")


def parse_changes(body):
    """Validate the shape of each operation of a JSON patch document (a list)."""
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise common.HTTPError(400, "Each change must be a JSON object.")
        op = raw.get("op")
        if op not in OPERATIONS:
            raise common.HTTPError(400, "Invalid operation %r: must be one of %s."
                                   % (op, ", ".join(OPERATIONS)))
        unknown = set(raw) - {"op", "path", "value"}
        if unknown:
            raise common.HTTPError(400, "Unknown keys in a change: %s."
                                   % ", ".join(sorted(unknown)))
        name = decode_pointer(raw.get("path"))
        if op != "remove" and "value" not in raw:
            raise common.HTTPError(400, "Operation %r needs a 'value'." % op)
        if op == "remove" and "value" in raw:
            raise common.HTTPError(400, "Operation 'remove' takes no 'value'.")
        _check_writable(name)
        changes.append(Change(op, name, raw.get("value")))
    return changes


def _check_writable(name):
    if name in schemas.RESERVED:
        raise common.HTTPError(403, "Attribute '%s' is reserved." % name)
    if name in schemas.READ_ONLY or name in schemas.CREATE_ONLY or name in _LINK_ATTRIBUTES:
        raise common.HTTPError(403, "Attribute '%s' is read-only." % name)


def apply_changes(image, properties, changes):
    """Play ``changes`` on ``image`` (a DB dict with tags) and its live ``properties``."""
    attributes = {}
    properties = dict(properties)
    tags = list(image.get("tags", []))
    for change in changes:
        name, value = change.name, change.value
        is_base = name in schemas.BASE_ATTRIBUTES
        if change.op == "remove":
            if is_base:
                raise common.HTTPError(403, "Property %s may not be removed." % name)
            if name not in properties:
                raise common.HTTPError(409, "Property %s does not exist." % name)
            del properties[name]
            continue
        if change.op == "replace" and not is_base and name not in properties:
            raise common.HTTPError(409, "Property %s does not exist." % name)
        if not is_base:
            schemas.check_extra_property(name, value)
            properties[name] = value
        elif name == "tags":
            schemas.check_attribute(name, value)
            tags = list(dict.fromkeys(value))
        else:
            schemas.check_attribute(name, value)
            attributes[name] = value
    return Draft(attributes, properties, tags)


def check_policy(context, image, draft):
    """Glance's rules for who may change what (403)."""
    attributes = draft.attributes
    if (attributes.get("visibility") == "public" and image["visibility"] != "public"
            and not context.is_admin):
        raise common.HTTPError(403, "You are not authorized to publicize images.")
    if "owner" in attributes and attributes["owner"] != image["owner"] and not context.is_admin:
        raise common.HTTPError(403, "You are not permitted to change the owner of an image.")
    for name in ("container_format", "disk_format"):
        if (name in attributes and attributes[name] != image[name]
                and image["status"] != "queued"):
            raise common.HTTPError(403, "Attribute %s can be only replaced for a queued image."
                                   % name)
