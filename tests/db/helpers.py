"""Small builders shared by the DB API tests: contexts, images with fixed times, id lists.

Every time handed to the database is a whole second: MySQL/MariaDB DATETIME columns keep no
fractions, so equality on created_at/updated_at only holds across backends for whole seconds.
"""

import datetime
import threading
import uuid

from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import api

BASE_TIME = datetime.datetime(2024, 1, 1, 12, 0, 0)

IMAGE_KEYS = {
    "id", "name", "disk_format", "container_format", "size", "virtual_size", "status",
    "visibility", "checksum", "os_hash_algo", "os_hash_value", "min_disk", "min_ram", "owner",
    "protected", "os_hidden", "created_at", "updated_at", "deleted_at", "deleted",
    "properties", "locations",
}
PROPERTY_KEYS = {"id", "image_id", "name", "value", "created_at", "updated_at", "deleted_at",
                 "deleted"}
LOCATION_KEYS = {"id", "url", "metadata", "status"}
MEMBER_KEYS = {"id", "image_id", "member", "can_share", "status", "created_at", "updated_at",
               "deleted"}

HANG_GUARD_S = 120  # only so that a deadlocked race fails instead of hanging

# U+1F600 (an emoji): 4 bytes in UTF-8, refused everywhere (MySQL's utf8 is 3-byte).
FOUR_BYTE = "\U0001f600"


def at(seconds):
    """BASE_TIME plus a number of seconds: a deterministic created_at/updated_at."""
    return BASE_TIME + datetime.timedelta(seconds=seconds)


def new_id():
    return str(uuid.uuid4())


def admin_context(project_id=None, **kwargs):
    return RequestContext(is_admin=True, roles=["admin"], project_id=project_id, **kwargs)


def user_context(project_id=None, **kwargs):
    return RequestContext(user_id="user-%s" % project_id, project_id=project_id,
                          roles=["member"], **kwargs)


def create_image(context=None, **values):
    """image_create as an admin (unless told otherwise), status 'active' unless given."""
    values.setdefault("status", "active")
    return api.image_create(context or admin_context(), values)


def ids(images):
    return [image["id"] for image in images]


def live_properties(image):
    """{name: value} of the image's non-deleted property records."""
    return {p["name"]: p["value"] for p in image["properties"] if not p["deleted"]}


def all_properties(image):
    """{name: (value, deleted)} of every property record, soft-deleted ones included."""
    return {p["name"]: (p["value"], p["deleted"]) for p in image["properties"]}


def sorted_ids(images, keys, dirs):
    """The ids of ``images`` (dicts) ordered by ``keys`` with per-key directions ('asc'/'desc').

    None must not appear in a sort key (NULL order is engine-dependent, spec 5.1).
    """
    ordered = list(images)
    for key, direction in reversed(list(zip(keys, dirs))):
        ordered.sort(key=lambda image: image[key], reverse=(direction == "desc"))
    return ids(ordered)


def insert_rows(db, table, *rows):
    """Write child rows straight into ``table`` (a models table), bypassing the DB API.

    For states a Glance-created database may hold but our API would not create, such as
    duplicate live tag or member rows (spec §1, §4.8, §4.9).
    """
    with db.engine.begin() as conn:
        for row in rows:
            conn.execute(table.insert().values(
                **{"created_at": BASE_TIME, "updated_at": BASE_TIME, "deleted": False, **row}))


def race(calls):
    """Run every zero-argument callable in its own thread, released together (a Barrier).

    Returns a list of ("ok", result) or ("error", exception) in call order.
    """
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=HANG_GUARD_S)
            outcomes[index] = ("ok", call())
        except Exception as err:  # recorded and asserted on by the test
            outcomes[index] = ("error", err)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    assert not any(thread.is_alive() for thread in threads), "a racing thread never finished"
    return outcomes
