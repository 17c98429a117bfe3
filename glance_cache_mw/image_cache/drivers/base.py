"""The cache driver contract: files on local disk (shared here), metadata in a subclass.

The base class implements the whole seed interface on top of the directory protocol in
``ondisk.py`` (a fill's writer: ``writer.py``). A subclass only keeps metadata (hits, last
access, commit time) by implementing the abstract hooks ``configure_metadata``,
``load_metadata``, ``record_commit``, ``forget``, ``forget_all`` and ``apply_hits`` (and,
where useful, ``before_publish``, ``get_metadata``, and with a shared database
``get_cached_nodes``, ``get_node_summaries``, ``get_stale_cached_images``). Callers use a
driver through ``ImageCache``, never directly.

What counts as cached is always the file system: ``{dir}/{id}`` exists. Metadata only orders
and annotates entries; a file without metadata (a crash between rename and insert, a driver
switch) is still listed, counted and evictable, with its mtime as last access (W2, W4).
Hits are counted in memory and written in one batch by ``flush_hits()``: by a timer at most
``hit_flush_interval_s`` after the first pending hit, before any read of the statistics, and
on ``close()`` — never on the hit path itself: a response never waits for a database write.
"""

import abc
import atexit
import contextlib
import errno
import logging
import os
import stat
import threading
import time
import weakref

from glance_cache_mw import config as cfg
from glance_cache_mw import exception
from glance_cache_mw.image_cache.drivers import ondisk, safe_open, writer

LOG = logging.getLogger(__name__)

HIT_FLUSH_INTERVAL_S = 1.0
HIT_FLUSH_MAX_PENDING = 1000


def _or_default(value, default):
    return default if value is None else value


def _flush_at_exit(driver_ref):
    """A process that exits without close() still writes its last second of hits."""
    driver = driver_ref()
    if driver is not None:
        driver.flush_hits()


class Driver(abc.ABC):
    """Keeps image files under ``image_cache_dir`` and tracks how they are used."""

    name = None

    def __init__(self, config):
        """``config``: a ``glance_cache_mw.config.Config`` or a mapping of INI keys."""
        if not isinstance(config, cfg.Config):
            config = cfg.Config.from_mapping(dict(config))
        self.config = config
        self.base_dir = os.path.abspath(config.image_cache_dir)
        self.stall_time_s = config.image_cache_stall_time
        self.hit_flush_interval_s = HIT_FLUSH_INTERVAL_S
        self._pending_hits = {}
        self._hits_lock = threading.Lock()
        self._flush_timer = None
        self._last_queued_ns = 0
        atexit.register(_flush_at_exit, weakref.ref(self))

    # -- set-up -------------------------------------------------------------------------

    def configure(self):
        """Create the directories and the metadata store; raise BadDriverConfiguration."""
        try:
            for sub in ("", ondisk.INCOMPLETE, ondisk.INVALID, ondisk.QUEUE):
                os.makedirs(os.path.join(self.base_dir, sub), exist_ok=True)
        except OSError as err:
            raise exception.BadDriverConfiguration(
                driver_name=self.name,
                reason="image_cache_dir=%r cannot be created: %s" % (self.base_dir, err))
        self.configure_metadata()
        return self

    def close(self):
        """Write pending hit statistics and release resources."""
        timer, self._flush_timer = self._flush_timer, None
        if timer is not None:
            timer.cancel()
        self.flush_hits()

    # -- paths ---------------------------------------------------------------------------

    def get_path(self, *parts):
        return os.path.join(self.base_dir, *parts)

    def get_image_filepath(self, image_id, cache_status="active"):
        """``{dir}/{id}`` for 'active', else ``{dir}/{cache_status}/{id}``; id validated."""
        ondisk.validate_image_id(image_id)
        if cache_status == "active":
            return self.get_path(image_id)
        if cache_status not in (ondisk.INCOMPLETE, ondisk.INVALID, ondisk.QUEUE):
            raise exception.Invalid("unknown cache status %r" % (cache_status,))
        return self.get_path(cache_status, image_id)

    def get_image_size(self, image_id):
        """Size in bytes of the cached file; raises FileNotFoundError if not cached."""
        path = self.get_image_filepath(image_id)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a cached image file", path)
        return st.st_size

    # -- state ---------------------------------------------------------------------------

    def is_cached(self, image_id):
        """True when ``{dir}/{id}`` is a regular file (a symlink there is not a cached image)."""
        return safe_open.is_regular_file(self.get_image_filepath(image_id))

    def is_being_cached(self, image_id):
        """True while a live writer fills ``incomplete/{id}`` (debris does not count)."""
        path = self.get_image_filepath(image_id, ondisk.INCOMPLETE)
        fd = safe_open.open_regular(path)   # a symlink or FIFO there is removed, no writer's
        if fd is None:
            return False
        try:
            return ondisk.is_writer_alive(fd)
        finally:
            os.close(fd)

    def is_cacheable(self, image_id):
        return not self.is_cached(image_id) and not self.is_being_cached(image_id)

    def is_queued(self, image_id):
        return os.path.exists(self.get_image_filepath(image_id, ondisk.QUEUE))

    # -- entries -------------------------------------------------------------------------

    def _scan_image_files(self):
        """(image_id, stat) of every regular file in the cache directory named like an id."""
        with os.scandir(self.base_dir) as it:
            for dirent in it:
                if not ondisk.is_image_id(dirent.name):
                    continue
                try:
                    st = dirent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield dirent.name, st

    def list_entries(self):
        """Every cached image as a CacheEntry, in directory order (one metadata read).

        A file without metadata gets its mtime as both times and 0 hits."""
        self.flush_hits()
        metadata = self.load_metadata()
        entries = []
        for image_id, st in self._scan_image_files():
            meta = metadata.get(image_id) or {}
            entries.append(ondisk.CacheEntry(
                image_id, st.st_size,
                _or_default(meta.get("last_accessed"), st.st_mtime),
                _or_default(meta.get("last_modified"), st.st_mtime),
                _or_default(meta.get("hits"), 0)))
        return entries

    def get_entries_by_last_accessed(self):
        """Entries least recently used first (ties: older commit, then id) for one-pass prune."""
        return sorted(self.list_entries(),
                      key=lambda e: (e.last_accessed, e.last_modified, e.image_id))

    def get_cached_images(self):
        """List of dicts image_id, hits, last_modified, last_accessed, size, ordered by id."""
        return [entry._asdict() for entry in sorted(self.list_entries())]

    def get_cache_size(self):
        """Bytes of cached images (stray and housekeeping files are not counted).

        Only the directory is read (no metadata), so admission can call it on every miss.
        """
        return sum(st.st_size for _image_id, st in self._scan_image_files())

    def get_least_recently_accessed(self):
        """(image_id, size) of the least recently used image, or None when empty."""
        entries = self.get_entries_by_last_accessed()
        return (entries[0].image_id, entries[0].size) if entries else None

    def get_hit_count(self, image_id):
        if not self.is_cached(image_id):
            return 0
        self.flush_hits()
        return (self.get_metadata(image_id) or {}).get("hits", 0)

    def get_metadata(self, image_id):
        """Metadata dict of one image or None; override when one lookup is cheaper."""
        return self.load_metadata().get(image_id)

    def get_cached_nodes(self, image_id):
        """Node URLs caching the image: only drivers with a shared database know."""
        raise NotImplementedError("driver %s has no multi-node view" % self.name)

    engine = None   # the SQLAlchemy engine of a database the nodes share (centralized_db)

    def get_filling_node(self, image_id):
        """The node reading the image from the origin for the cluster now (its fill claim,
        db/fill_claims.py), or None: only drivers with a shared database know."""
        raise NotImplementedError("driver %s has no multi-node view" % self.name)

    def get_node_summaries(self):
        """Per-node usage (images, bytes, hits): only drivers with a shared database know."""
        raise NotImplementedError("driver %s has no multi-node view" % self.name)

    def get_stale_cached_images(self):
        """Ids of rows kept for images gone elsewhere: none without a shared database."""
        return []

    # -- reading and hits ----------------------------------------------------------------

    def open_cached_file(self, image_id):
        """The cached file opened for binary reading (caller closes it), or None.

        Only a regular file is ever opened: never through a symlink, never blocking on a
        FIFO. Anything else at the image's path is evicted (logged with the path and what it
        was), so the request becomes a miss and the next fill replaces it.
        """
        fd = safe_open.open_regular(self.get_image_filepath(image_id),
                                 on_foreign=lambda _path: self.forget([image_id]))
        return None if fd is None else open(fd, "rb")   # builtin: eventlet patches os.fdopen

    @contextlib.contextmanager
    def open_for_read(self, image_id):
        """Yield the cached file opened for binary reading; the access counts as a hit.
        FileNotFoundError when it is not cached (see ``open_cached_file``)."""
        handle = self.open_cached_file(image_id)
        if handle is None:
            raise FileNotFoundError(errno.ENOENT, "image %s is not cached" % image_id,
                                    self.get_image_filepath(image_id))
        with handle:
            self.record_hit(image_id)
            yield handle

    def record_hit(self, image_id):
        """Count a hit now (in memory); written by the next flush, never on the hit path."""
        now = time.time()
        with self._hits_lock:
            count, _ = self._pending_hits.get(image_id, (0, now))
            self._pending_hits[image_id] = (count + 1, now)
            flush_now = len(self._pending_hits) >= HIT_FLUSH_MAX_PENDING
            if not flush_now and self._flush_timer is None:
                self._flush_timer = threading.Timer(self.hit_flush_interval_s,
                                                    self._timed_flush)
                self._flush_timer.daemon = True
                self._flush_timer.start()
        if flush_now:
            self.flush_hits()

    def _timed_flush(self):
        with self._hits_lock:
            self._flush_timer = None
        self.flush_hits()

    def flush_hits(self):
        """Write pending hits in one batch; on failure keep them for the next flush."""
        with self._hits_lock:
            batch, self._pending_hits = self._pending_hits, {}
        if not batch:
            return
        try:
            self.apply_hits(batch)
        except Exception:
            LOG.exception("could not record %d hit statistics; will retry", len(batch))
            with self._hits_lock:
                for image_id, (count, when) in batch.items():
                    old_count, old_when = self._pending_hits.get(image_id, (0, when))
                    self._pending_hits[image_id] = (count + old_count, max(when, old_when))

    # -- writing -------------------------------------------------------------------------

    def open_for_write(self, image_id, size=None):
        """A CacheWriter on ``incomplete/{id}``: use as a context manager (commit on clean
        exit, invalid/ on an exception), or call commit()/invalidate()/discard().

        Raises AlreadyBeingCached when a live writer holds the image (any thread or process).
        """
        ondisk.validate_image_id(image_id)
        return writer.CacheWriter(self, image_id, size)

    def before_publish(self, fd, image_id, size):
        """Hook: runs on the verified, fsynced file just before it is renamed into place."""

    # -- deleting ------------------------------------------------------------------------

    def delete_cached_image(self, image_id):
        """Remove one cached file and its metadata."""
        ondisk.unlink_quietly(self.get_image_filepath(image_id))
        self.forget([image_id])

    def delete_cached_images(self, image_ids):
        """Remove several cached files, then their metadata in one call."""
        removed = [i for i in image_ids if ondisk.unlink_quietly(self.get_image_filepath(i))]
        self.forget(list(image_ids))
        return removed

    def delete_all_cached_images(self):
        """Remove every cached image (never housekeeping files); return how many."""
        ids = [entry.image_id for entry in self.list_entries()]
        count = sum(ondisk.unlink_quietly(self.get_path(i)) for i in ids)
        self.forget_all()
        return count

    # -- queue ---------------------------------------------------------------------------

    def queue_image(self, image_id):
        """Queue for prefetching; False when cached, being cached or already queued."""
        if self.is_cached(image_id) or self.is_being_cached(image_id):
            LOG.debug("not queueing %s: cached or being cached", image_id)
            return False
        path = self.get_image_filepath(image_id, ondisk.QUEUE)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            LOG.debug("not queueing %s: already queued", image_id)
            return False
        # Kernel timestamps are jiffy-coarse: stamp a strictly increasing time ourselves so
        # that get_queued_images() is oldest first even for entries queued in one tick.
        now_ns = max(time.time_ns(), self._last_queued_ns + 1)
        self._last_queued_ns = now_ns
        os.utime(path, ns=(now_ns, now_ns))
        return True

    def get_queued_images(self):
        """Queued image ids, oldest first (ties by id)."""
        queued = []
        with os.scandir(self.get_path(ondisk.QUEUE)) as it:
            for dirent in it:
                if not ondisk.is_image_id(dirent.name):
                    continue
                try:
                    queued.append((dirent.stat().st_mtime_ns, dirent.name))
                except FileNotFoundError:
                    continue
        return [image_id for _, image_id in sorted(queued)]

    def delete_queued_image(self, image_id):
        ondisk.unlink_quietly(self.get_image_filepath(image_id, ondisk.QUEUE))

    def delete_all_queued_images(self):
        """Remove every queue entry; return how many."""
        return sum(ondisk.unlink_quietly(self.get_path(ondisk.QUEUE, i))
                   for i in self.get_queued_images())

    # -- maintenance ---------------------------------------------------------------------

    def clean(self, stall_time=None):
        """Remove invalid/ files, and incomplete/ files older than ``stall_time`` seconds
        whose writer is gone (lock test: a live fill is never touched). Return the count."""
        stall_time = self.stall_time_s if stall_time is None else stall_time
        removed = 0
        with os.scandir(self.get_path(ondisk.INVALID)) as it:
            for dirent in list(it):
                removed += ondisk.unlink_quietly(dirent.path)
        cutoff = time.time() - stall_time
        with os.scandir(self.get_path(ondisk.INCOMPLETE)) as it:
            for dirent in list(it):
                try:
                    if dirent.stat(follow_symlinks=False).st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                try:
                    removed += ondisk.remove_if_abandoned(dirent.path)
                except OSError as err:
                    LOG.warning("could not clean %s: %s", dirent.path, err)
        self._forget_missing()
        LOG.info("cleaned %d files from %s", removed, self.base_dir)
        return removed

    def _forget_missing(self):
        """Drop metadata of images whose file is gone (deleted by hand, or a crash)."""
        missing = [i for i in self.load_metadata() if not os.path.exists(self.get_path(i))]
        if missing:
            self.forget(missing)

    # -- metadata hooks for subclasses ---------------------------------------------------

    @abc.abstractmethod
    def configure_metadata(self):
        """Open or create the metadata store; raise BadDriverConfiguration."""

    @abc.abstractmethod
    def load_metadata(self):
        """{image_id: {"hits", "last_accessed", "last_modified"}} for this node, one read."""

    @abc.abstractmethod
    def record_commit(self, image_id, size):
        """A new image was renamed into place: start its metadata (hits 0, times now)."""

    @abc.abstractmethod
    def forget(self, image_ids):
        """Drop the metadata of these images (a list; ids without metadata are ignored)."""

    @abc.abstractmethod
    def forget_all(self):
        """Drop the metadata of every image on this node."""

    @abc.abstractmethod
    def apply_hits(self, batch):
        """Add hits: ``batch`` is {image_id: (count, last_accessed epoch seconds)}."""
