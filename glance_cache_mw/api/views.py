"""How images and members look in API responses (the DB API's dicts → Glance's v2 JSON)."""

IMAGE_ATTRIBUTES = ("id", "name", "status", "visibility", "protected", "os_hidden", "checksum",
                    "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size",
                    "container_format", "disk_format", "min_ram", "min_disk")


def isotime(value):
    """Naive UTC datetime → '2026-01-02T03:04:05Z' (Glance drops the microseconds)."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_href(image_id):
    return "/v2/images/%s" % image_id


def live_properties(image):
    """{name: value} of the image's properties that are not soft-deleted."""
    return {prop["name"]: prop["value"] for prop in image.get("properties", ())
            if not prop.get("deleted")}


def image_view(image, tags=None):
    """The v2 representation: extra properties first, then the base attributes over them."""
    view = live_properties(image)
    for name in IMAGE_ATTRIBUTES:
        view[name] = image.get(name)
    view["protected"] = bool(view["protected"])
    view["os_hidden"] = bool(view["os_hidden"])
    view["tags"] = list(tags if tags is not None else image.get("tags", []))
    view["created_at"] = isotime(image.get("created_at"))
    view["updated_at"] = isotime(image.get("updated_at"))
    view["self"] = image_href(image["id"])
    view["file"] = image_href(image["id"]) + "/file"
    view["schema"] = "/v2/schemas/image"
    return view


def member_view(member):
    return {"image_id": member["image_id"], "member_id": member["member"],
            "status": member["status"], "created_at": isotime(member.get("created_at")),
            "updated_at": isotime(member.get("updated_at")), "schema": "/v2/schemas/member"}
