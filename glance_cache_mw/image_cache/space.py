"""Room on the cache's disk: the maintenance lock, free bytes, fills in flight, LRU eviction.

``ImageCache.admit`` and ``ImageCache.prune`` make room with these, under the lock: how many
bytes must go, then the least recently used images until they are gone. A fill in flight
reserved the bytes it was admitted for under a reservation name in ``incomplete/``
(ondisk.py): it counts while its writer holds the lock.
"""

import contextlib
import logging
import os
import time

from glance_cache_mw.image_cache.drivers import ondisk, safe_open

LOG = logging.getLogger(__name__)

LOCK_NAME = ".maintenance.lock"
LOCK_POLL_S = 0.01


@contextlib.contextmanager
def maintenance_lock(driver, mutex):
    """Exclusive across threads (``mutex``, one contender per process) and processes (a
    flock on ``{image_cache_dir}/.maintenance.lock``); polls so an eventlet hub never
    blocks."""
    with mutex:
        fd = safe_open.open_housekeeping(driver.get_path(LOCK_NAME), os.O_RDWR)
        try:
            while not ondisk.try_lock(fd):
                time.sleep(LOCK_POLL_S)
            yield
        finally:
            os.close(fd)


def free_bytes(directory):
    """Bytes free for unprivileged users on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def live_fills(driver):
    """(image_id, bytes reserved, bytes written) of every fill whose writer is alive."""
    fills = []
    with os.scandir(driver.get_path(ondisk.INCOMPLETE)) as it:
        for dirent in it:
            parsed = ondisk.parse_reservation(dirent.name)
            if parsed is None:
                continue
            fd = safe_open.open_regular(dirent.path)
            if fd is None:
                continue
            try:
                if ondisk.is_writer_alive(fd):
                    fills.append((parsed[0], parsed[1], os.fstat(fd).st_size))
            finally:
                os.close(fd)
    return fills


def bytes_to_free(driver, used, max_size, min_free, count_reserved=True):
    """Bytes to evict so that ``used`` bytes of cached images, plus what the live fills
    reserved (``count_reserved``: admission; a prune counts only what is cached), fit in
    ``max_size``, and ``min_free`` bytes stay free once those fills wrote the rest."""
    fills = live_fills(driver)
    reserved = sum(size for _id, size, _written in fills) if count_reserved else 0
    pending = sum(max(size - written, 0) for _id, size, written in fills)
    return max(used + reserved - max_size,
               min_free + pending - free_bytes(driver.base_dir), 0)


def evict_lru(entries, to_free, evict, reason):
    """Evict the first ``entries`` (least recently used first) until ``to_free`` bytes are
    gone, with ``evict(image_ids, reason)`` (ImageCache.evict); (files, bytes) removed."""
    victims, planned = {}, 0
    for entry in entries:
        if planned >= to_free:
            break
        victims[entry.image_id] = entry.size
        planned += entry.size
    if not victims:
        return 0, 0
    # Count only what this pass removed (a file deleted meanwhile is not ours to count).
    removed = evict(list(victims), reason)
    freed = sum(victims[image_id] for image_id in removed)
    LOG.info("evicted %d images (%d bytes) for %s", len(removed), freed, reason)
    return len(removed), freed
