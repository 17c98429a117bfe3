"""Driver keeping metadata in user extended attributes of the cached files themselves.

No database: deleting a file deletes its metadata. Unlike Glance's (W10) the last access time
is an attribute we write (batched, like every driver's hits), so LRU does not depend on the
``atime``/``relatime``/``noatime`` mount options; hit counts are incremented under a flock so
concurrent processes do not lose updates; the configure probe never leaves a file behind.
"""

import errno
import fcntl
import logging
import os
import secrets
import time

from glance_cache_mw import exception
from glance_cache_mw.image_cache.drivers import base, safe_open

LOG = logging.getLogger(__name__)

PREFIX = "user.glance_cache."
# Glance's xattr driver keeps its hit count in "user.hits" (and increments it on every read of
# a file it finds cached, failing when the attribute is missing): one attribute for both.
HITS = "user.hits"
LEGACY_HITS = PREFIX + "hits"   # written by earlier versions of this driver
LAST_ACCESSED = PREFIX + "last_accessed"
LAST_MODIFIED = PREFIX + "last_modified"

_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


def xattrs_supported(directory):
    """True when files in ``directory`` accept user extended attributes."""
    probe = os.path.join(directory, ".xattr-probe-%s" % secrets.token_hex(6))
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.setxattr(fd, HITS, b"0")
        return True
    except OSError as err:
        if err.errno in _UNSUPPORTED:
            return False
        raise
    finally:
        os.close(fd)
        os.unlink(probe)


def _read_float(target, name, default):
    try:
        return float(os.getxattr(target, name))
    except (OSError, ValueError):
        return default


def _read_int(target, name):
    try:
        return int(os.getxattr(target, name))
    except (OSError, ValueError):
        return 0


class Driver(base.Driver):
    """Cache metadata in extended attributes: ``user.hits`` (Glance's xattr driver's, shared
    with it) and ``user.glance_cache.last_accessed|last_modified``."""

    name = "xattr"

    def configure_metadata(self):
        try:
            supported = xattrs_supported(self.base_dir)
        except OSError as err:
            raise exception.BadDriverConfiguration(
                driver_name=self.name,
                reason="cannot probe extended attributes in %s: %s" % (self.base_dir, err))
        if not supported:
            raise exception.BadDriverConfiguration(
                driver_name=self.name,
                reason="the filesystem of image_cache_dir=%r has no user extended attributes"
                       " (mount it with user_xattr, or use the sqlite driver)" % self.base_dir)

    def _read(self, target, st):
        # A file cached by Glance's driver has only user.hits: its access and modification
        # times are the file's, as Glance's driver reads them.
        return {"hits": _read_int(target, HITS) or _read_int(target, LEGACY_HITS),
                "last_accessed": _read_float(target, LAST_ACCESSED, st.st_atime),
                "last_modified": _read_float(target, LAST_MODIFIED, st.st_mtime)}

    def load_metadata(self):
        metadata = {}
        for image_id, st in self._scan_image_files():
            try:
                metadata[image_id] = self._read(self.get_path(image_id), st)
            except FileNotFoundError:
                continue   # evicted meanwhile
        return metadata

    def get_metadata(self, image_id):
        path = self.get_image_filepath(image_id)
        try:
            return self._read(path, os.stat(path))
        except FileNotFoundError:
            return None

    def before_publish(self, fd, image_id, size):
        # Set on the incomplete file, so the metadata is published by the same atomic rename.
        now = ("%.6f" % time.time()).encode()
        os.setxattr(fd, LAST_MODIFIED, now)
        os.setxattr(fd, LAST_ACCESSED, now)
        os.setxattr(fd, HITS, b"0")

    def record_commit(self, image_id, size):
        """Nothing to do: before_publish() already wrote the attributes."""

    def forget(self, image_ids):
        """Nothing to do: the attributes went with the deleted files."""

    def forget_all(self):
        """Nothing to do: the attributes went with the deleted files."""

    def apply_hits(self, batch):
        for image_id, (count, when) in batch.items():
            fd = safe_open.open_regular(self.get_image_filepath(image_id))
            if fd is None:
                continue   # evicted since the hit (or not a regular file: removed)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)   # read-modify-write across processes
                hits = (_read_int(fd, HITS) or _read_int(fd, LEGACY_HITS)) + count
                last = max(when, _read_float(fd, LAST_ACCESSED, 0.0))
                os.setxattr(fd, HITS, str(hits).encode())
                os.setxattr(fd, LAST_ACCESSED, ("%.6f" % last).encode())
            finally:
                os.close(fd)
