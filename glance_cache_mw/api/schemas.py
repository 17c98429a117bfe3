"""JSON schemas of the images API (``/v2/schemas/...``) and the checks that enforce them.

python-glanceclient builds its models from these documents (warlock validates what a user sets
against them and diffs them into JSON patches), so the image schema keeps Glance's property
names, types and ``additionalProperties: {"type": "string"}``. The server checks request values
with ``check_attribute`` from the same table, so the document and the checks cannot drift.
"""

import copy
import re

from glance_cache_mw import exception
from glance_cache_mw.api import common

UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$")
STATUSES = ["queued", "saving", "active", "killed", "deleted", "uploading", "importing",
            "pending_delete", "deactivated"]
VISIBILITIES = ["community", "public", "private", "shared"]
DISK_FORMATS = [None, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop"]
CONTAINER_FORMATS = [None, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
MEMBER_STATUSES = ["pending", "accepted", "rejected"]
MAX_INT32 = 2 ** 31 - 1


def _text(description, max_length=255, nullable=True, **extra):
    kind = ["null", "string"] if nullable else "string"
    return {"type": kind, "maxLength": max_length, "description": description, **extra}


IMAGE_PROPERTIES = {
    "id": {"type": "string", "pattern": UUID_PATTERN,
           "description": "An identifier for the image"},
    "name": _text("Descriptive name for the image"),
    "status": {"type": "string", "readOnly": True, "enum": STATUSES,
               "description": "Status of the image"},
    "visibility": {"type": "string", "enum": VISIBILITIES,
                   "description": "Scope of image accessibility"},
    "protected": {"type": "boolean",
                  "description": "If true, image will not be deletable."},
    "os_hidden": {"type": "boolean",
                  "description": "If true, image will not appear in default image list "
                                 "response."},
    "checksum": _text("md5 hash of image contents.", 32, readOnly=True),
    "os_hash_algo": _text("Algorithm to calculate the os_hash_value", 64, readOnly=True),
    "os_hash_value": _text("Hexdigest of the image contents using the algorithm specified by "
                           "the os_hash_algo", 128, readOnly=True),
    "owner": _text("Owner of the image"),
    "size": {"type": ["null", "integer"], "readOnly": True,
             "description": "Size of image file in bytes"},
    "virtual_size": {"type": ["null", "integer"], "readOnly": True,
                     "description": "Virtual size of image in bytes"},
    "container_format": {"type": ["null", "string"], "enum": CONTAINER_FORMATS,
                         "description": "Format of the container"},
    "disk_format": {"type": ["null", "string"], "enum": DISK_FORMATS,
                    "description": "Format of the disk"},
    "created_at": {"type": "string", "readOnly": True,
                   "description": "Date and time of image registration"},
    "updated_at": {"type": "string", "readOnly": True,
                   "description": "Date and time of the last image modification"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 255},
             "description": "List of strings related to the image"},
    "direct_url": {"type": "string", "readOnly": True,
                   "description": "URL to access the image file kept in external store"},
    "min_ram": {"type": "integer", "minimum": 0, "maximum": MAX_INT32,
                "description": "Amount of ram (in MB) required to boot image."},
    "min_disk": {"type": "integer", "minimum": 0, "maximum": MAX_INT32,
                 "description": "Amount of disk space (in GB) required to boot image."},
    "self": {"type": "string", "readOnly": True,
             "description": "An image self url"},
    "file": {"type": "string", "readOnly": True,
             "description": "An image file url"},
    "stores": {"type": "string", "readOnly": True,
               "description": "Store in which image data resides."},
    "schema": {"type": "string", "readOnly": True,
               "description": "An image schema url"},
}

# Common Glance image properties: documented, but stored as extra (string) properties.
_EXTRA_PROPERTIES = {
    "kernel_id": {"type": ["null", "string"], "pattern": UUID_PATTERN,
                  "description": "ID of image stored in Glance that should be used as the "
                                 "kernel when booting an AMI-style image.", "is_base": False},
    "ramdisk_id": {"type": ["null", "string"], "pattern": UUID_PATTERN,
                   "description": "ID of image stored in Glance that should be used as the "
                                  "ramdisk when booting an AMI-style image.", "is_base": False},
    "instance_uuid": {"type": "string", "is_base": False,
                      "description": "Metadata which can be used to record which instance "
                                     "this image is associated with."},
    "architecture": {"type": "string", "is_base": False,
                     "description": "Operating system architecture."},
    "os_distro": {"type": "string", "is_base": False,
                  "description": "Common name of operating system distribution."},
    "os_version": {"type": "string", "is_base": False,
                   "description": "Operating system version as specified by the distributor."},
    "description": {"type": "string", "is_base": False,
                    "description": "A human-readable string describing this image."},
}

BASE_ATTRIBUTES = frozenset(IMAGE_PROPERTIES) - {"self", "file", "schema", "direct_url",
                                                 "stores"}
READ_ONLY = frozenset(name for name, spec in IMAGE_PROPERTIES.items() if spec.get("readOnly"))
RESERVED = frozenset({"location", "deleted", "deleted_at", "locations"})
# Settable on create only (Glance: a PATCH of id is refused as read-only).
CREATE_ONLY = frozenset({"id"})

_LINKS = [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
          {"rel": "describedby", "href": "{schema}"}]


def image_schema():
    properties = copy.deepcopy(IMAGE_PROPERTIES)
    properties.update(copy.deepcopy(_EXTRA_PROPERTIES))
    return {"name": "image", "properties": properties,
            "additionalProperties": {"type": "string"}, "links": copy.deepcopy(_LINKS)}


def images_schema():
    return {"name": "images",
            "properties": {"images": {"type": "array", "items": image_schema()},
                           "schema": {"type": "string"}, "first": {"type": "string"},
                           "next": {"type": "string"}},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                      {"rel": "describedby", "href": "{schema}"}]}


MEMBER_PROPERTIES = {
    "member_id": {"type": "string", "description": "An identifier for the image member "
                                                   "(tenantId)"},
    "image_id": {"type": "string", "pattern": UUID_PATTERN,
                 "description": "An identifier for the image"},
    "created_at": {"type": "string", "description": "Date and time of image member creation"},
    "updated_at": {"type": "string",
                   "description": "Date and time of last modification of image member"},
    "status": {"type": "string", "enum": MEMBER_STATUSES,
               "description": "The status of this image member"},
    "schema": {"type": "string", "readOnly": True},
}


def member_schema():
    return {"name": "member", "properties": copy.deepcopy(MEMBER_PROPERTIES)}


def members_schema():
    return {"name": "members",
            "properties": {"members": {"type": "array", "items": member_schema()},
                           "schema": {"type": "string"}},
            "links": [{"rel": "self", "href": "{self}"},
                      {"rel": "describedby", "href": "{schema}"}]}


SCHEMAS = {"image": image_schema, "images": images_schema, "member": member_schema,
           "members": members_schema}


# --- checks ---------------------------------------------------------------------------------

_TYPES = {"null": lambda v: v is None, "string": lambda v: isinstance(v, str),
          "boolean": lambda v: isinstance(v, bool),
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "array": lambda v: isinstance(v, list)}


def check_value(name, value, spec):
    """Raise Invalid unless ``value`` satisfies ``spec`` (the subset of JSON schema used here)."""
    kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if not any(_TYPES[kind](value) for kind in kinds):
        raise exception.Invalid("Invalid value %s for '%s': expected %s."
                                % (_short(value), name, " or ".join(kinds)))
    if "enum" in spec and value not in spec["enum"]:
        choices = ", ".join(str(choice) for choice in spec["enum"] if choice is not None)
        raise exception.Invalid("Invalid value %s for '%s': must be one of %s."
                                % (_short(value), name, choices))
    if isinstance(value, str):
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            raise exception.Invalid("Value of '%s' is longer than %d characters."
                                    % (name, spec["maxLength"]))
        if "pattern" in spec and not re.search(spec["pattern"], value):
            raise exception.Invalid("Invalid value %s for '%s': it does not match %s."
                                    % (_short(value), name, spec["pattern"]))
    if _TYPES["integer"](value):
        if "minimum" in spec and value < spec["minimum"]:
            raise exception.Invalid("Value of '%s' must be at least %d." % (name, spec["minimum"]))
        if "maximum" in spec and value > spec["maximum"]:
            raise exception.Invalid("Value of '%s' must be at most %d." % (name, spec["maximum"]))
    if isinstance(value, list) and "items" in spec:
        for item in value:
            check_value(name, item, spec["items"])


def check_attribute(name, value):
    """Check a base attribute's value against the image schema."""
    check_value(name, value, IMAGE_PROPERTIES[name])


def check_extra_property(name, value):
    """Extra properties are strings (additionalProperties), with a sane name."""
    if not name or len(name) > 255:
        raise exception.Invalid("Property names must be 1 to 255 characters long.")
    if name.startswith("os_glance"):
        raise exception.Forbidden("Attribute '%s' is reserved." % name)
    spec = _EXTRA_PROPERTIES.get(name, {"type": "string"})
    check_value(name, value, spec)


def _short(value):
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def show(req, context, name):
    """GET /v2/schemas/{name}: one of image, images, member, members (404 otherwise)."""
    factory = SCHEMAS.get(name)
    if factory is None:
        raise common.HTTPError(404, "Unknown schema %r." % name)
    return common.json_response(factory())
