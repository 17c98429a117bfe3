"""What an image id may be: the one home of the rules, one per kind of caller.

The rules differ on purpose, because the callers need different things:

* ``is_glance_id`` (the DB API, db/values.py): what Glance's database accepts, the width of
  the ``images.id`` column: any non-empty text of at most 36 characters. Anything else can
  never name an image, so a lookup is ImageNotFound before any SQL runs.
* ``file_name_problem`` (the cache, image_cache/drivers/ondisk.py): a Glance id that is also a
  safe name in the cache directory: no ``/``, NUL or ``..``, no leading ``.`` and none of the
  cache's own names (the caller's ``reserved``). Any other character is allowed: inside Glance
  the cache must take every id Glance's database holds, as Glance's own cache does.
* ``is_store_id`` (the file store, store.py): the strict rule, ASCII letters, digits, ``_``,
  ``-`` and ``.`` only, never a leading ``.`` (which keeps the store's upload temp files
  apart). The store is our own origin, and our images API creates UUIDs only
  (api/schemas.py), so it can refuse everything else before touching the filesystem.
"""

import re

MAX_LENGTH = 36   # images.id is VARCHAR(36) in Glance's schema (db/models.py)

_STORE_ID = re.compile(r"\A[A-Za-z0-9_-][A-Za-z0-9_.-]{0,%d}\Z" % (MAX_LENGTH - 1))


def is_glance_id(image_id):
    """True when Glance's database could hold ``image_id`` (non-empty text, <= 36 chars)."""
    return isinstance(image_id, str) and 0 < len(image_id) <= MAX_LENGTH


def file_name_problem(image_id, reserved=frozenset()):
    """Why ``image_id`` cannot be a file name in the cache directory, or None when it can;
    ``reserved``: names the directory keeps for itself."""
    if not isinstance(image_id, str) or not image_id:
        return "not a non-empty string"
    if len(image_id) > MAX_LENGTH:
        return "longer than %d characters" % MAX_LENGTH
    if "/" in image_id or "\0" in image_id or ".." in image_id:
        return "contains '/', '..' or NUL"
    if image_id.startswith(".") or image_id in reserved:
        return "reserved for the cache's own files"
    return None


def is_store_id(image_id):
    """True when the file store may use ``image_id`` as a file name (the strict rule)."""
    return isinstance(image_id, str) and _STORE_ID.match(image_id) is not None
