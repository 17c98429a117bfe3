"""The on-disk protocol every cache driver shares: layout, ids, locks, reservations.

Layout under ``image_cache_dir``::

    {id}                  a complete, verified image (the only thing ever served)
    incomplete/{id}       a fill in progress; its writer holds an exclusive flock on it
    incomplete/.{size}.{token}.{id}
                          the same inode under a reservation name: it carries the bytes the
                          fill was admitted for, so admission can count fills in flight
    invalid/{id}          a failed fill, kept for debugging until the next clean()
    queue/{id}            an empty "please prefetch" marker; its mtime orders the queue

Names starting with a dot and the names in ``RESERVED_NAMES`` are never image ids, so
housekeeping files (the sqlite DB, lock files) can never be mistaken for (or clash with) an
image. Every id is validated before it becomes part of a path.

One writer per image, across threads and processes: a fill creates its reservation file with
``O_CREAT|O_EXCL``, takes ``flock(LOCK_EX)`` on it, and only then links it to
``incomplete/{id}`` (``link`` fails with EEXIST when another writer got there first). So the
public name is locked from the moment it exists, and "unlocked" always means "writer gone":
the cleaner, a follower and the next writer can all test it without guessing from timestamps.
Commit and invalidation rename the private reservation name, never the public one, so a
writer can only ever publish its own inode, even after ``cancel_fill`` handed the public name
to a new writer. The writer of one fill is ``writer.CacheWriter``.
"""

import collections
import fcntl
import logging
import os
import secrets
import stat
import weakref

from glance_cache_mw import exception, image_ids
from glance_cache_mw.image_cache.drivers import safe_open

LOG = logging.getLogger(__name__)

INCOMPLETE = "incomplete"
INVALID = "invalid"
QUEUE = "queue"
SQLITE_DB_NAME = "cache.db"   # the sqlite driver's metadata file (Glance's name for it)
RESERVED_NAMES = frozenset({INCOMPLETE, INVALID, QUEUE, SQLITE_DB_NAME}
                           | {SQLITE_DB_NAME + suffix for suffix in ("-wal", "-shm", "-journal")})

# A fill sets these mode bits with fchmod() once size and hashes matched, just before the
# rename: a follower can then tell "verified" from "abandoned" on its own file descriptor,
# even after the final file has been evicted again.
MODE_FILLING = 0o600
MODE_VERIFIED = 0o640

CacheEntry = collections.namedtuple(
    "CacheEntry", "image_id size last_accessed last_modified hits")
CacheEntry.__doc__ = "One cached image: its bytes on disk and its usage statistics."


# Objects holding fill locks. A forked child inherits their file descriptors, and with them
# the flock (it belongs to the shared open file description): the child drops its copies at
# once, so "unlocked" keeps meaning "the writer is gone" (see the module docstring).
_FORK_HOLDERS = weakref.WeakSet()


def hold_across_fork(holder):
    """Register an object whose ``forget_fds_after_fork()`` runs in every forked child."""
    _FORK_HOLDERS.add(holder)


def _after_fork_in_child():
    for holder in list(_FORK_HOLDERS):
        holder.forget_fds_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class InvalidImageId(exception.Invalid):
    message = "Invalid image id %(image_id)r: %(reason)s"


class AlreadyBeingCached(exception.Conflict):
    message = "Image %(image_id)s is already being cached by another writer."


def validate_image_id(image_id):
    """Return ``image_id`` if it can safely be a file name here (the rule:
    image_ids.file_name_problem), else raise InvalidImageId."""
    problem = image_ids.file_name_problem(image_id, RESERVED_NAMES)
    if problem is not None:
        raise InvalidImageId(image_id=image_id, reason=problem)
    return image_id


def is_image_id(name):
    """True when a directory entry's name is a valid image id (not a housekeeping file)."""
    try:
        validate_image_id(name)
    except InvalidImageId:
        return False
    return True


def try_lock(fd, shared=False):
    """Take a non-blocking flock on ``fd``; True if we got it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def is_writer_alive(fd):
    """True while some writer holds the exclusive lock on the file open as ``fd``."""
    if try_lock(fd, shared=True):
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    return True


def remove_if_abandoned(path):
    """Unlink ``path`` if no writer holds its lock; True if it was removed.

    The lock is held while unlinking and the inode is re-checked, so a writer that starts in
    between never loses its file. Anything but a regular file there is no writer's: it is
    removed at once (True).
    """
    foreign = []
    fd = safe_open.open_regular(path, on_foreign=foreign.append)
    if fd is None:
        return bool(foreign)
    try:
        if not try_lock(fd):
            return False
        if not same_file(fd, path):
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def same_file(fd, path):
    """True when ``path`` still names the inode open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)


def is_verified(fd):
    """True when the fill writing this file verified it (see MODE_VERIFIED)."""
    return stat.S_IMODE(os.fstat(fd).st_mode) == MODE_VERIFIED


def reservation_name(image_id, size):
    return ".%d.%s.%s" % (size, secrets.token_hex(6), image_id)


def parse_reservation(name):
    """(image_id, size) for a reservation file name, else None."""
    parts = name.split(".", 3)
    if len(parts) != 4 or parts[0] or not parts[1].isdigit():
        return None
    return parts[3], int(parts[1])


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path):
    """Unlink, ignoring a file that is already gone (LP #1229823); a directory someone put
    there is removed too (``remove_foreign``)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return safe_open.remove_foreign(path)
