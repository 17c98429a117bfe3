"""The writer of one fill: ``CacheWriter`` on ``incomplete/{id}``, published atomically.

It follows the on-disk protocol of ondisk.py: a private reservation name created with
``O_EXCL`` and locked, linked to the public name, renamed into place on commit.
"""

import contextlib
import ctypes
import fcntl
import logging
import os

from glance_cache_mw.image_cache.drivers.ondisk import (
    INCOMPLETE, INVALID, MODE_FILLING, MODE_VERIFIED, QUEUE, AlreadyBeingCached, fsync_dir,
    hold_across_fork, parse_reservation, remove_if_abandoned, reservation_name, same_file,
    unlink_quietly)

LOG = logging.getLogger(__name__)

# A fill starts the writeback of every completed range of this many bytes (CacheWriter).
WRITEBACK_BYTES = 16 * 1024 * 1024


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


def _file_id(path):
    """(st_ino, st_dev) of ``path`` itself, or None when nothing is there."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_dev


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
                # instead of leaving the image uncacheable until the cleaner runs (W13),
                # and its private name too, so that none of its bytes stay behind.
                dead = _file_id(self.path)
                if not remove_if_abandoned(self.path):
                    break
                self._remove_reservations_of(dead)
        raise AlreadyBeingCached(image_id=self.image_id)

    def _remove_reservations_of(self, file_id):
        """Unlink the reservation names of this image that name ``file_id`` ((st_ino,
        st_dev) of a dead writer's file, found unlocked); no live writer's file is one."""
        if file_id is None:
            return
        with os.scandir(os.path.dirname(self.path)) as it:
            for dirent in list(it):
                parsed = parse_reservation(dirent.name)
                if parsed is None or parsed[0] != self.image_id:
                    continue
                if dirent.path != self._reservation and _file_id(dirent.path) == file_id:
                    unlink_quietly(dirent.path)

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
