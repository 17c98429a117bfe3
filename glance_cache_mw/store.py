"""The file store: image data as one file per image under ``filesystem_store_datadir``.

This is the origin the cache sits in front of. ``add`` streams an upload into a hidden temp
file in the same directory while counting the bytes and computing the MD5 ``checksum`` and the
SHA-512 ``os_hash_value``; only a complete, fsynced file is renamed into place, so a failed or
aborted upload leaves nothing behind. ``open_for_read`` returns a ``bodies.FileReader``, which
owns the file (``close()``) and offers its ``path`` for sendfile.

Image ids become file names, so every id is checked (image_ids.is_store_id, the strict rule)
before the filesystem is touched.
"""

import errno
import hashlib
import logging
import os
import tempfile
import time
import typing

from glance_cache_mw import bodies, exception, image_ids

LOG = logging.getLogger(__name__)

HASH_ALGO = "sha512"
_TEMP_PREFIX = ".upload-"


class StorageFull(exception.GlanceException):
    message = "There is not enough disk space on the image storage media."


class ImageSizeLimitExceeded(exception.LimitExceeded):
    message = "The provided image is too large."


class UploadIncomplete(exception.Invalid):
    """The request body broke off or ended short: the client's fault, not the store's."""

    message = "The image data ended before the announced size was reached."


class StoredData(typing.NamedTuple):
    """What ``FileStore.add`` wrote: the values the image record needs."""

    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    path: str


def check_image_id(image_id):
    """Raise ImageNotFound for an id that can never name a stored file (the strict rule,
    image_ids.is_store_id)."""
    if not image_ids.is_store_id(image_id):
        raise exception.ImageNotFound("No image found with ID %r" % (image_id,))


class FileStore:
    """Keeps image data as ``{datadir}/{image_id}``."""

    def __init__(self, datadir, chunk_size=bodies.DEFAULT_CHUNK_SIZE):
        self.datadir = os.path.abspath(datadir)
        self.chunk_size = chunk_size

    @classmethod
    def from_config(cls, config):
        return cls(config.filesystem_store_datadir, config.chunk_size)

    def path_for(self, image_id):
        """The data file of ``image_id`` (which may not exist); ImageNotFound for a bad id."""
        check_image_id(image_id)
        return os.path.join(self.datadir, image_id)

    def location_url(self, image_id):
        """The ``file://`` URL recorded as the image's location."""
        return "file://" + self.path_for(image_id)

    def exists(self, image_id):
        return os.path.isfile(self.path_for(image_id))

    def get_size(self, image_id):
        """Size in bytes of the stored data; ImageNotFound if there is none."""
        try:
            return os.stat(self.path_for(image_id)).st_size
        except FileNotFoundError:
            raise exception.ImageNotFound("No data stored for image %s" % image_id) from None

    def add(self, image_id, stream, expected_size=None, max_size=None):
        """Store everything ``stream.read()`` yields as the data of ``image_id``.

        Raises UploadIncomplete when reading ``stream`` fails or ``expected_size`` is given and
        not met, ImageSizeLimitExceeded past ``max_size``, StorageFull on ENOSPC/EDQUOT, and
        other OSErrors of the filesystem as they are; in every failure the partial file is
        removed.
        """
        final_path = self.path_for(image_id)
        fd, temp_path = self._open_temp(image_id)
        try:
            with os.fdopen(fd, "wb") as out:
                size, md5, sha = self._copy(stream, out, expected_size, max_size)
                out.flush()
                os.fsync(out.fileno())
            if expected_size is not None and size != expected_size:
                raise UploadIncomplete("Expected %d bytes of image data, received %d."
                                       % (expected_size, size))
            os.replace(temp_path, final_path)
        except BaseException as err:
            _remove_quietly(temp_path)
            if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull() from err
            raise
        _fsync_dir(self.datadir)
        LOG.info("stored %d bytes for image %s", size, image_id)
        return StoredData(size, md5.hexdigest(), HASH_ALGO, sha.hexdigest(), final_path)

    def _open_temp(self, image_id):
        """A new hidden temp file next to the final one: (fd open for writing, path)."""
        os.makedirs(self.datadir, exist_ok=True)
        return tempfile.mkstemp(prefix=_TEMP_PREFIX + image_id + ".", dir=self.datadir)

    def _copy(self, stream, out, expected_size, max_size):
        md5 = hashlib.md5(usedforsecurity=False)
        sha = hashlib.new(HASH_ALGO)
        size = 0
        limit = expected_size if expected_size is not None else max_size
        while True:
            want = self.chunk_size
            if limit is not None:
                # Read one byte past the limit, so that "too much" is noticed.
                want = max(1, min(want, limit - size + 1))
            try:
                chunk = stream.read(want)
            except (OSError, ValueError) as err:
                # The client's side: a dropped connection or broken chunked framing.
                raise UploadIncomplete("Error reading the image data: %s" % err) from err
            if not chunk:
                return size, md5, sha
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise ImageSizeLimitExceeded("Image data exceeds the limit of %d bytes."
                                             % max_size)
            if expected_size is not None and size > expected_size:
                raise exception.Invalid("Received more than the announced %d bytes of image "
                                        "data." % expected_size)
            md5.update(chunk)
            sha.update(chunk)
            out.write(chunk)

    def open_for_read(self, image_id, offset=0, length=None):
        """A FileReader over the data of ``image_id``; ImageNotFound when there is none."""
        path = self.path_for(image_id)
        try:
            return bodies.FileReader.open(path, offset, length, self.chunk_size)
        except FileNotFoundError:
            raise exception.ImageNotFound("No data stored for image %s" % image_id) from None

    def delete(self, image_id):
        """Remove the data of ``image_id``; True if there was a file."""
        path = self.path_for(image_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        LOG.info("deleted data of image %s", image_id)
        return True

    def remove_stale_uploads(self, older_than_s, now=None):
        """Remove temp files of uploads whose process died (no write for ``older_than_s``).

        A live upload rewrites its temp file at least once per chunk, so its mtime stays recent.
        Returns the number of files removed.
        """
        now = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.datadir)
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.startswith(_TEMP_PREFIX):
                continue
            path = os.path.join(self.datadir, name)
            try:
                if now - os.stat(path).st_mtime < older_than_s:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed += 1
            LOG.info("removed stale partial upload %s", path)
        return removed


def _remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        LOG.warning("could not remove partial upload %s", path, exc_info=True)


def _fsync_dir(path):
    """Make the rename durable (POSIX: the directory entry lives in the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
