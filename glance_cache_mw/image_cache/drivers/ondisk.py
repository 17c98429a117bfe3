"""The on-disk protocol every cache driver shares: ids, locks and the writer of one fill.

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
to a new writer.
"""

import collections
import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import stat
import weakref

from glance_cache_mw import exception
from glance_cache_mw.image_cache.drivers import safe_open

LOG = logging.getLogger(__name__)

INCOMPLETE = "incomplete"
INVALID = "invalid"
QUEUE = "queue"
MAX_ID_LENGTH = 36
RESERVED_NAMES = frozenset({INCOMPLETE, INVALID, QUEUE, "cache.db", "cache.db-wal",
                            "cache.db-shm", "cache.db-journal"})

# A fill sets these mode bits with fchmod() once size and hashes matched, just before the
# rename: a follower can then tell "verified" from "abandoned" on its own file descriptor,
# even after the final file has been evicted again.
MODE_FILLING = 0o600
MODE_VERIFIED = 0o640

# A fill starts the writeback of every completed range of this many bytes (CacheWriter).
WRITEBACK_BYTES = 16 * 1024 * 1024

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
    """Return ``image_id`` if it can safely be a file name, else raise InvalidImageId."""
    if not isinstance(image_id, str) or not image_id:
        raise InvalidImageId(image_id=image_id, reason="not a non-empty string")
    if len(image_id) > MAX_ID_LENGTH:
        raise InvalidImageId(image_id=image_id,
                             reason="longer than %d characters" % MAX_ID_LENGTH)
    if "/" in image_id or "\0" in image_id or ".." in image_id:
        raise InvalidImageId(image_id=image_id, reason="contains '/', '..' or NUL")
    if image_id.startswith(".") or image_id in RESERVED_NAMES:
        raise InvalidImageId(image_id=image_id, reason="reserved for the cache's own files")
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


def _load_sync_file_range():
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):   # not Linux/glibc
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2   # <linux/fs.h>: start writeback of dirty pages, do not wait


def start_writeback(fd, offset, length):
    """Start writing ``length`` dirty bytes at ``offset`` to disk; never waits for them.

    Only a head start for the fsync at commit, which stays the guarantee: errors are ignored
    here (the fsync reports them). sync_file_range(2) leaves the pages in the page cache,
    where followers and the first hits read them.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


class CacheWriter:
    """The file of one fill in ``incomplete/``: exclusive, locked, published atomically.

    ``write()`` raises OSError like a file; the caller decides to stop caching. ``commit()``
    publishes (fsync, mark verified, rename into place, record metadata); ``invalidate()``
    moves the bytes to ``invalid/``; ``discard()`` removes them. Exactly one of the three
    ends the writer; after that the others are no-ops. Used as a context manager it commits
    on a clean exit and invalidates on an exception (the seed's ``open_for_write``).

    It is also a writable binary file for code written against Glance's interface, which
    yields a real file: ``write``, ``flush``, ``tell``, ``writable``, ``fileno``, ``closed``,
    ``close``. Inside a ``with`` block ``close()`` only ends writing (like closing Glance's
    file): the block's exit still commits or invalidates. Outside one, ``close()`` without
    ``commit()`` discards the bytes, as nothing was ever published. Writing, flushing or
    telling once closed raises ValueError, like a file.
    """

    def __init__(self, driver, image_id, size, writeback_bytes=WRITEBACK_BYTES):
        """``writeback_bytes``: start writing back every completed range of this many bytes
        while the fill goes on, so the fsync at commit has little left to do (0: never)."""
        self.image_id = image_id
        self.size = size
        self.bytes_written = 0
        self.writeback_bytes = writeback_bytes
        self._written_back = 0    # bytes whose writeback was started
        self._entered = False     # used as a context manager: its exit publishes
        self._write_closed = False
        self._driver = driver
        incomplete_dir = driver.get_path(INCOMPLETE)
        self.path = os.path.join(incomplete_dir, image_id)
        self._reservation = os.path.join(incomplete_dir, reservation_name(image_id, size or 0))
        self._fd = os.open(self._reservation,
                           os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE_FILLING)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.fchmod(self._fd, MODE_FILLING)   # the umask must not decide what "verified" is
            self._publish_incomplete()
        except BaseException:
            unlink_quietly(self._reservation)
            os.close(self._fd)
            self._fd = None
            raise
        hold_across_fork(self)

    def forget_fds_after_fork(self):
        """In a forked child: close our copy of the fd; the parent keeps writing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _publish_incomplete(self):
        for _attempt in range(3):
            try:
                os.link(self._reservation, self.path)
                return
            except FileExistsError:
                # A writer killed by SIGKILL leaves an unlocked file: take it over at once
                # instead of leaving the image uncacheable until the cleaner runs (W13).
                if not remove_if_abandoned(self.path):
                    break
        raise AlreadyBeingCached(image_id=self.image_id)

    @property
    def ended(self):
        """True once commit(), invalidate() or discard() ended the writer."""
        return self._fd is None

    @property
    def closed(self):
        """True once no more bytes can be written (a file's ``closed``)."""
        return self._fd is None or self._write_closed

    @property
    def name(self):
        return self.path

    def fileno(self):
        self._check_open()
        return self._fd

    def writable(self):
        self._check_open()
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def isatty(self):
        return False

    def tell(self):
        """Bytes written so far (writes always append)."""
        self._check_open()
        return self.bytes_written

    def flush(self):
        """Nothing is buffered here (every write() reaches the kernel); durability comes
        with commit()'s fsync."""
        self._check_open()

    def close(self):
        """End writing. In a ``with`` block the exit then commits; outside one, a writer
        that was not committed is discarded. Closing twice is harmless."""
        if self._entered:
            self._write_closed = True
        else:
            self.discard("closed without commit")

    def _check_open(self):
        if self.closed:
            raise ValueError("I/O operation on a closed cache file (%s)" % self.image_id)

    def open_reader(self):
        """A new read-only fd on the file being written (the caller closes it): e.g. for
        hashing what was written. Its own open file description, so it never holds our lock."""
        fd = os.open(self._reservation, os.O_RDONLY | os.O_CLOEXEC)
        if not os.path.samestat(os.fstat(fd), os.fstat(self._fd)):
            os.close(fd)
            raise OSError("%s is no longer the file being written" % self._reservation)
        return fd

    def write(self, data):
        """Append ``data`` and return its length; raises OSError (ENOSPC, EFBIG, EIO) for the
        caller to handle, ValueError once closed."""
        self._check_open()
        view = memoryview(data).cast("B")
        length = view.nbytes
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
            self.bytes_written += done
        if self.writeback_bytes and (
                self.bytes_written - self._written_back >= self.writeback_bytes):
            start_writeback(self._fd, self._written_back,
                            self.bytes_written - self._written_back)
            self._written_back = self.bytes_written
        return length

    def is_cancelled(self):
        """True when ``incomplete/{id}`` no longer names our file (ImageCache.cancel_fill)."""
        return not same_file(self._fd, self.path)

    def is_abandoned(self):
        """True when our file has no name left: the fill was given up as stalled
        (image_cache/stall.py) and whatever it still writes goes nowhere."""
        return os.fstat(self._fd).st_nlink == 0

    def commit(self):
        """Make the file durable, mark it verified and rename it into place atomically.

        Returns True when the image is now cached; False if the fill was cancelled (the
        image was deleted meanwhile), publishing failed (the bytes are then in invalid/) or
        the writer had already ended. The rename uses our private reservation name, so it
        can only ever publish this writer's inode.
        """
        if self.ended:
            return False
        if self.is_cancelled():
            # Verified all the same: the requests following this fill read the file on
            # their own descriptors and may finish from it (it is removed, never served).
            with contextlib.suppress(OSError):
                os.fchmod(self._fd, MODE_VERIFIED)
            self.discard("cancelled while filling")
            return False
        try:
            os.fsync(self._fd)
            self._driver.before_publish(self._fd, self.image_id, self.bytes_written)
            os.fchmod(self._fd, MODE_VERIFIED)
            os.rename(self._reservation, self._driver.get_image_filepath(self.image_id))
            fsync_dir(self._driver.base_dir)
        except OSError:
            LOG.exception("could not publish the cached copy of %s", self.image_id)
            self.invalidate("publish failed")
            return False
        self._finish()
        unlink_quietly(self._driver.get_image_filepath(self.image_id, QUEUE))
        try:
            self._driver.record_commit(self.image_id, self.bytes_written)
        except Exception:  # the file is complete and verified: an untracked entry is fine
            LOG.exception("image %s is cached but its metadata was not recorded",
                          self.image_id)
        LOG.info("cached image %s (%d bytes)", self.image_id, self.bytes_written)
        return True

    def invalidate(self, reason):
        """Move the bytes to invalid/ where nothing serves them; clean() removes them."""
        if self.ended:
            return
        if self.is_abandoned():   # given up as stalled: nothing left to keep for debugging
            self.discard(reason)
            return
        LOG.warning("not caching image %s: %s", self.image_id, reason)
        try:
            os.rename(self._reservation,
                      self._driver.get_image_filepath(self.image_id, INVALID))
        except OSError as err:
            LOG.warning("could not move %s to invalid/: %s", self._reservation, err)
        self._finish()

    def discard(self, reason="abandoned"):
        """Remove the partial file at once (client gone, a write error, no room)."""
        if self.ended:
            return
        LOG.info("abandoning the fill of image %s: %s", self.image_id, reason)
        self._finish()

    def _finish(self):
        """Drop our names (the public one only while it is still ours) and the lock."""
        if not self.is_cancelled():
            unlink_quietly(self.path)
        unlink_quietly(self._reservation)
        fd, self._fd = self._fd, None
        os.close(fd)   # releases the flock: followers and the cleaner see the writer gone

    def __enter__(self):
        self._entered = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.invalidate("%s: %s" % (exc_type.__name__, exc))
        return False
