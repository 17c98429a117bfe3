"""Who follows a fill: a shared flock per follower on ``incomplete/.f.{id}``, in any process.

A fill whose client left goes on while someone follows it (``ImageCache.is_worth_finishing``).
Each follower holds a shared flock on the image's mark file for as long as it reads the
growing file; "someone follows" is "an exclusive flock on the mark would fail". The mark's
name starts with a dot, so it is never taken for an image or a fill (ondisk.py).
"""

import fcntl
import logging
import os
import time

from glance_cache_mw.image_cache.drivers import ondisk, safe_open

LOG = logging.getLogger(__name__)

LOCK_POLL_S = 0.01


class Followers:
    """The follower marks of one cache directory (``driver``: its cache driver)."""

    def __init__(self, driver):
        self._driver = driver

    def _mark_path(self, image_id):
        return self._driver.get_path(ondisk.INCOMPLETE, ".f.%s" % image_id)

    def register(self, image_id):
        """Hold a shared flock on the mark of ``image_id``: the fd (close it to leave)."""
        path = self._mark_path(image_id)
        while True:
            fd = safe_open.open_housekeeping(path)
            while not ondisk.try_lock(fd, shared=True):   # held only for an instant
                time.sleep(LOCK_POLL_S)
            if ondisk.same_file(fd, path):
                return fd
            os.close(fd)   # removed by a leaving follower meanwhile: take the new one

    def unregister(self, image_id, mark_fd):
        """Leave: close ``mark_fd`` (from ``register``) and remove the mark if nobody is left."""
        os.close(mark_fd)
        self.remove_mark(image_id)

    def remove_mark(self, image_id):
        """Remove the mark of ``image_id`` unless someone still follows (after the last
        follower closed its fd)."""
        try:
            ondisk.remove_if_abandoned(self._mark_path(image_id))
        except OSError as err:
            LOG.debug("follower mark of %s not removed: %s", image_id, err)

    def has_followers(self, image_id):
        """True while some process follows the fill of ``image_id``."""
        fd = safe_open.open_regular(self._mark_path(image_id))
        if fd is None:
            return False
        try:
            if ondisk.try_lock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)
