"""Notice a fill whose origin stalled and give it up, so that it stops costing new clients.

A fill's thread (pump.FillPump) reads the origin; when the origin stalls (a dead TCP peer, a
store that hangs), that thread sits in the origin's read. Under gunicorn and uWSGI it is an OS
thread that nothing can interrupt, so the fill is not stopped: it is *abandoned* on disk, from
whichever thread or process notices the stall first. Its file loses its names
(``incomplete/{id}`` and its reservation name), which

- lets the next request start a fresh fill: one writer per image is decided by the public
  name, and the stalled writer's lock no longer guards it;
- tells the clients following it (follow.FollowIterator) to read the rest from the origin at
  once: a file with no name left that is not verified will never be completed;
- tells the fill itself, should its origin wake up, that it can never commit
  (``CacheWriter.is_abandoned``, ``is_cancelled``): it stops at its next chunk, and if those
  were its last bytes, ``commit()`` finds its public name gone and discards them. It never
  touches the names of the fill that replaced it (they are not its own; see drivers/ondisk.py).

A fill is *stalled* when its file has not grown for ``stall_s`` seconds (the file's mtime,
which only writes change) while its writer is alive, the file is short of the image's size
and not verified. How long a client takes between two reads never counts: the fill does not
wait for its clients. A file that is complete (being hashed or made durable) never stalls.
"""

import logging
import os
import time

from glance_cache_mw.image_cache.drivers import ondisk, safe_open

LOG = logging.getLogger(__name__)


def is_stalled(fd, size, stall_s):
    """True when the fill writing the file open as ``fd`` has not grown it for ``stall_s``
    seconds, with its writer still there and the file short of ``size`` bytes."""
    if stall_s is None:
        return False
    st = os.fstat(fd)
    if st.st_size >= size or st.st_nlink == 0 or ondisk.is_verified(fd):
        return False
    return time.time() - st.st_mtime > stall_s and ondisk.is_writer_alive(fd)


def is_given_up(fd):
    """True when the file open as ``fd`` was abandoned (no name left) before being verified:
    nothing will ever complete it."""
    return os.fstat(fd).st_nlink == 0 and not ondisk.is_verified(fd)


def abandon_if_stalled(driver, image_id, size, stall_s, fd=None):
    """Abandon the fill that ``incomplete/{image_id}`` names if it is stalled (and, given
    ``fd``, only if that is still the file open as ``fd``); True if it was abandoned.

    Call it under the cache's maintenance lock: every new writer takes it before it links the
    public name, so the name cannot change hands between the check and the unlinks.
    """
    path = driver.get_image_filepath(image_id, ondisk.INCOMPLETE)
    own = safe_open.open_regular(path)
    if own is None:
        return False
    try:
        mine = os.fstat(own)
        if fd is not None and not os.path.samestat(os.fstat(fd), mine):
            return False
        if not is_stalled(own, size, stall_s):
            return False
        # The public name first: from then on the writer sees itself cancelled and can
        # never publish; then its reservation, so nothing counts it as a live fill.
        ondisk.unlink_quietly(path)
        with os.scandir(driver.get_path(ondisk.INCOMPLETE)) as entries:
            for entry in entries:
                parsed = ondisk.parse_reservation(entry.name)
                if parsed is None or parsed[0] != image_id:
                    continue
                try:
                    if os.path.samestat(entry.stat(follow_symlinks=False), mine):
                        ondisk.unlink_quietly(entry.path)
                except FileNotFoundError:
                    continue
        LOG.warning("fill of image %s abandoned at %d of %d bytes: its file did not grow for "
                    "%ss (the origin stalled); its clients read the rest from the origin and "
                    "the next request fills it afresh", image_id, mine.st_size, size, stall_s)
        return True
    finally:
        os.close(own)
