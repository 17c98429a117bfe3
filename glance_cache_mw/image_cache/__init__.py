"""The image cache: the one door to cached images, and the policies that span files and metadata.

``ImageCache`` is what every caller uses: the CacheFilter, the management API, the
maintenance tasks, the prefetcher, ``glance-cache-mw-manage cache`` and the metrics. Nobody
calls its driver (``drivers.load_driver``: files and usage metadata) directly, so each rule
holds whichever way in: admission (make room before a fill, within ``image_cache_max_size``
and leaving ``image_cache_min_free`` bytes on the disk, space.py), eviction that cancels the
image's fill in flight, one-pass LRU pruning under a lock file, and the follower bookkeeping
that lets a fill outlive its client while others read it (followers.py). The fill itself is
in fill.py (tee, followers' iterator), pump.py (at the origin's pace), verify.py and stall.py.

A server process keeps one ImageCache per cache directory: ``shared(config)`` (registry.py).
"""

import logging
import os
import threading

from glance_cache_mw import config as cfg, metrics as metrics_mod
from glance_cache_mw.image_cache import drivers, followers as followers_mod, registry, space
from glance_cache_mw.image_cache import fill as fill_mod, follow as follow_mod, pump as pump_mod
from glance_cache_mw.image_cache import stall, verify
from glance_cache_mw.image_cache.drivers import ondisk, safe_open

LOG = logging.getLogger(__name__)

ADMIT = object()   # fill(writer=ADMIT): the fill asks for admission itself

FOLLOW_IDLE_TIMEOUT_S = 300   # image_cache_follow_idle_timeout: a bound on origin stalls


class ImageCache:
    """A driver plus the size policy: the one object callers need."""

    def __init__(self, driver, max_size, min_free=0, chunk_size=65536,
                 complete_fill_on_disconnect=False, follow_idle_timeout_s=FOLLOW_IDLE_TIMEOUT_S,
                 verify_all_hashes=False, hold_last_chunk=False, metrics=metrics_mod.NULL):
        """``verify_all_hashes``: fills check MD5 too when there is a multihash;
        ``hold_last_chunk``: a fill's last chunk waits for the verdict (see fill.py);
        ``follow_idle_timeout_s``: a fill whose file did not grow for that long is stalled
        (stall.py): its clients read from the origin and the next request fills afresh;
        ``metrics``: a glance_cache_mw.metrics.Metrics (fills, evictions, followers)."""
        self.driver = driver
        self.metrics = metrics
        self.verify_all_hashes = verify_all_hashes
        self.hold_last_chunk = hold_last_chunk
        self.max_size = max_size
        self.min_free = min_free
        self.chunk_size = chunk_size
        self.complete_fill_on_disconnect = complete_fill_on_disconnect
        self.follow_idle_timeout_s = follow_idle_timeout_s
        self._mutex = threading.Lock()   # one contender per process for the lock file
        self._followers = followers_mod.Followers(driver)

    @classmethod
    def from_config(cls, config, **kwargs):
        """Build from a Config or a mapping of INI keys (image_cache_driver, ...)."""
        if not isinstance(config, cfg.Config):
            config = cfg.Config.from_mapping(dict(config))
        driver = drivers.load_driver(config.image_cache_driver, config)
        kwargs.setdefault("verify_all_hashes", config.image_cache_verify_hashes == "all")
        kwargs.setdefault("hold_last_chunk", config.image_cache_verify_before_last_byte)
        kwargs.setdefault("metrics", metrics_mod.shared())
        kwargs.setdefault("follow_idle_timeout_s", config.image_cache_follow_idle_timeout)
        return cls(driver, config.image_cache_max_size, config.image_cache_min_free,
                   chunk_size=config.chunk_size, **kwargs)

    def close(self):
        """Flush pending hit statistics; call when the process stops using the cache (a
        closed cache is no longer ``shared``: the next user builds a new one)."""
        _REGISTRY.forget(self)
        self.driver.close()

    @property
    def base_dir(self):
        """The cache directory (``image_cache_dir``, absolute)."""
        return self.driver.base_dir

    def free_bytes(self):
        """Bytes free for unprivileged users on the cache's file system."""
        return space.free_bytes(self.driver.base_dir)

    # -- lookups (the driver's, for the callers that need them) ---------------------------

    def is_cached(self, image_id):
        return self.driver.is_cached(image_id)

    def is_being_cached(self, image_id):
        return self.driver.is_being_cached(image_id)

    def is_queued(self, image_id):
        return self.driver.is_queued(image_id)

    def list_entries(self):
        """Every cached image as an ondisk.CacheEntry (one metadata read)."""
        return self.driver.list_entries()

    def get_cached_images(self):
        """Dicts image_id, hits, last_modified, last_accessed, size, ordered by id."""
        return self.driver.get_cached_images()

    def get_filling_images(self):
        """Ids of the images being cached now (their writer is alive), in any process."""
        return sorted({image_id for image_id, _size, _written in space.live_fills(self.driver)})

    def get_fill_size(self, image_id):
        """The size a live fill of ``image_id`` in any process was admitted for, or None
        (its reservation file's name carries it: drivers/ondisk.py; no database read)."""
        for filling_id, size, _written in space.live_fills(self.driver):
            if filling_id == image_id:
                return size
        return None

    @property
    def shared_engine(self):
        """The engine of the database the nodes share (centralized_db), or None."""
        return self.driver.engine

    def get_stale_cached_images(self):
        """Ids this node's shared-database rows hold for images deleted or deactivated
        through another node (centralized_db); [] with a driver that has no such rows."""
        return self.driver.get_stale_cached_images()

    def get_cache_size(self):
        return self.driver.get_cache_size()

    def get_cached_nodes(self, image_id):
        """Node URLs caching the image; NotImplementedError without a shared database."""
        return self.driver.get_cached_nodes(image_id)

    def get_filling_node(self, image_id):
        """The node filling the image from the origin for the cluster now, or None;
        NotImplementedError without a shared database."""
        return self.driver.get_filling_node(image_id)

    def get_node_summaries(self):
        """Per-node usage of a shared-database cache (centralized_db), else None."""
        try:
            return self.driver.get_node_summaries()
        except NotImplementedError:
            return None

    # -- the prefetch queue --------------------------------------------------------------

    def get_queued_images(self):
        return self.driver.get_queued_images()

    def queue_image(self, image_id):
        """Queue for prefetching; False when cached, being cached or already queued."""
        return self.driver.queue_image(image_id)

    def delete_queued_image(self, image_id):
        self.driver.delete_queued_image(image_id)

    def delete_all_queued_images(self):
        return self.driver.delete_all_queued_images()

    # -- eviction ------------------------------------------------------------------------

    def evict(self, image_ids, reason):
        """Evict ``image_ids`` and cancel their fills in flight, so that none commits a copy
        of an image that was just deleted, deactivated or evicted (W11); the ids removed.
        ``reason``: the evictions' label in the metrics (files removed are counted)."""
        for image_id in image_ids:
            self.cancel_fill(image_id)
        removed = self.driver.delete_cached_images(list(image_ids))
        self.metrics.evicted(reason, len(removed))
        return removed

    def delete_cached_image(self, image_id, reason="manual"):
        """Evict one image (``evict``); ``reason`` as there."""
        self.evict([image_id], reason)

    def cancel_fill(self, image_id):
        """Make a live fill of ``image_id`` end uncommitted (its client still gets the body);
        True if there was one. The writer notices at commit time that its name is gone."""
        return ondisk.unlink_quietly(
            self.driver.get_image_filepath(image_id, ondisk.INCOMPLETE))

    def delete_all_cached_images(self):
        count = self.driver.delete_all_cached_images()
        self.metrics.evicted("manual", count)
        return count

    # -- hits ----------------------------------------------------------------------------

    def open_hit(self, image_id):
        """The cached file opened for reading (caller closes it), or None on a miss.

        Opening is the test: a file evicted after a separate is_cached() can't break the
        response half-way (W5). The hit is counted in memory, written in batches. Only a
        regular file is served: a symlink, FIFO or directory at the image's path is evicted
        and logged, and the request is a miss (drivers.base.Driver.open_cached_file).
        """
        handle = self.driver.open_cached_file(image_id)
        if handle is None:
            return None
        self.driver.record_hit(image_id)
        return handle

    # -- fills ---------------------------------------------------------------------------

    def fill(self, image_id, source, size, checksum=None, os_hash_algo=None,
             os_hash_value=None, complete_in_background=None, writer=ADMIT,
             hold_last_chunk=None, pumped=False):
        """Wrap the origin's body ``source``: returns a TeeIterator to hand to the server.

        It caches when admitted (``.caching``); else it only verifies. Either way the
        caller gets every byte, and the iterator owns ``close()``. ``writer``: a CacheWriter
        from an earlier ``admit()`` (or None: verify only); by default the fill admits itself.
        ``hold_last_chunk`` (default: the cache's setting): a mismatch raises ImageDataMismatch
        instead of the last chunk. ``pumped``: the tee is for a FillPump (``start_fill``),
        which decides itself whether the fill goes on without a client.
        """
        try:
            verifier = verify.Verifier(size, checksum, os_hash_algo, os_hash_value,
                                       all_hashes=self.verify_all_hashes)
        except ValueError as err:
            LOG.warning("not caching image %s: %s", image_id, err)
            if writer is not ADMIT and writer is not None:
                writer.discard("cannot verify: %s" % err)
            return fill_mod.TeeIterator(image_id, source, None, None, size=size,
                                        metrics=self.metrics)
        if writer is ADMIT:
            writer = self.admit(image_id, size)
        if hold_last_chunk is None:
            hold_last_chunk = self.hold_last_chunk
        if complete_in_background is None:
            complete_in_background = self.complete_fill_on_disconnect
        if pumped:
            complete_in_background = False
        if writer is not None and not hold_last_chunk and verifier.algorithms:
            self._read_back(verifier, writer)
        return fill_mod.TeeIterator(
            image_id, source, writer, verifier, complete_in_background=complete_in_background,
            has_followers=None if pumped else lambda: self._followers.has_followers(image_id),
            hold_last_chunk=hold_last_chunk, metrics=self.metrics)

    def start_fill(self, tee, fallback=None):
        """Run the fill ``tee`` (from ``fill(..., pumped=True)``, caching) at the origin's
        pace in a thread of its own (a FillPump) and return a FollowIterator on its growing
        file for the client that caused it; ``fallback`` as for ``follow()``.

        That client releases the last bytes without waiting for the verdict unless
        ``hold_last_chunk`` (image_cache_verify_before_last_byte); other followers always
        wait for it. The pump wakes it after each chunk (``pump.Progress``), so it reads
        with no polling delay, as when it read the origin itself; followers that joined
        poll the file every ``follow.POLL_INTERVAL_S`` (a wake-up per chunk for each of them
        cost 1.5x the server CPU at 16 concurrent cold downloads). Its follower mark is
        taken before the pump starts, so the pump never sees a fill without a client at its
        start.
        """
        writer = tee.writer
        fd = writer.open_reader()
        try:
            mark = self._followers.register(tee.image_id)
        except BaseException:
            os.close(fd)
            raise
        progress = pump_mod.Progress()
        follower = follow_mod.FollowIterator(
            tee.image_id, fd, tee.size, fallback=fallback, chunk_size=self.chunk_size,
            idle_timeout_s=self.follow_idle_timeout_s, mark_fd=mark,
            on_close=lambda: self._followers.remove_mark(tee.image_id),
            await_verdict=self.hold_last_chunk, progress=progress,
            on_stall=lambda fd: self.abandon_if_stalled(tee.image_id, tee.size, fd))
        try:
            pump_mod.FillPump(tee, lambda: self.is_worth_finishing(writer),
                              progress=progress).start()
        except BaseException:
            follower.close()
            tee.close()
            raise
        return follower

    def is_worth_finishing(self, writer, prefetch=False):
        """The rule for a fill whose clients may have left (asked while it runs): go on
        while someone follows it; without followers, go on if it is a prefetch, if
        ``complete_fill_on_disconnect``, or once more than half of it is written; else stop
        (the partial file is removed). A cancelled fill (its image evicted or deleted) can
        never be cached: it goes on only for its followers."""
        if writer.closed or writer.is_abandoned():   # abandoned: given up as stalled
            return False
        if writer.is_cancelled():
            return self._followers.has_followers(writer.image_id)
        if prefetch or self.complete_fill_on_disconnect:
            return True
        if writer.size and 2 * writer.bytes_written > writer.size:
            return True
        return self._followers.has_followers(writer.image_id)

    @staticmethod
    def _read_back(verifier, writer):
        """Let ``verifier`` hash the fill's bytes back from its cache file (when caching and
        not holding the last chunk): the stream then need not wait for the digests (slower
        than sending) nor buffer what they have not read. Else it hashes the chunks."""
        try:
            verifier.read_back_from(writer.open_reader())
        except OSError as err:
            LOG.warning("hashing image %s from its chunks: %s", writer.image_id, err)

    def cache_image_iter(self, image_id, source, size, **hashes):
        """Drain ``source`` into the cache (the prefetcher's fill); True if now cached."""
        tee = self.fill(image_id, source, size, hold_last_chunk=True, pumped=True,
                        **hashes)
        try:
            if not tee.caching:
                return False
            # At the origin's pace, in this thread; clients follow the file meanwhile.
            pump = pump_mod.FillPump(
                tee, lambda: self.is_worth_finishing(tee.writer, prefetch=True))
            return pump.run(raise_errors=True)
        finally:
            tee.close()

    def follow(self, image_id, size, fallback=None, poll_interval_s=follow_mod.POLL_INTERVAL_S,
               offset=0):
        """A FollowIterator on the live fill of ``image_id``, or None if there is none.

        ``fallback(offset)`` returns the origin's bytes from ``offset`` and is used if the
        fill is abandoned; without it the iterator raises FillAbandoned then. A fill whose
        file has not grown for ``follow_idle_timeout_s`` (its origin stalled) is not joined:
        it is abandoned (stall.py) and None returned, so that the caller fills afresh.
        ``offset``: where the iterator starts (FollowIterator).
        """
        path = self.driver.get_image_filepath(image_id, ondisk.INCOMPLETE)
        mark = self._followers.register(image_id)
        try:
            fd = safe_open.open_regular(path)
        except BaseException:
            self._followers.unregister(image_id, mark)
            raise
        if fd is None:
            self._followers.unregister(image_id, mark)
            return None
        stalled = stall.is_stalled(fd, size, self.follow_idle_timeout_s)
        if stalled or stall.is_given_up(fd) or (
                not ondisk.is_writer_alive(fd) and not ondisk.is_verified(fd)):
            if stalled:
                self.abandon_if_stalled(image_id, size, fd)
            os.close(fd)
            self._followers.unregister(image_id, mark)
            return None
        self.metrics.follower()
        return follow_mod.FollowIterator(
            image_id, fd, size, fallback=fallback, chunk_size=self.chunk_size,
            poll_interval_s=poll_interval_s, idle_timeout_s=self.follow_idle_timeout_s,
            mark_fd=mark, on_close=lambda: self._followers.remove_mark(image_id),
            on_stall=lambda stalled_fd: self.abandon_if_stalled(image_id, size, stalled_fd),
            offset=offset)

    def abandon_if_stalled(self, image_id, size, fd=None):
        """Abandon the fill of ``image_id`` if its file has not grown for
        ``follow_idle_timeout_s`` (and, given ``fd``, it is the file open as ``fd``); True if
        it was. Its thread may be stuck in the origin's read: it is not interrupted (it
        cannot be, in an OS thread), it just can never commit (stall.py)."""
        try:
            with space.maintenance_lock(self.driver, self._mutex):
                return stall.abandon_if_stalled(self.driver, image_id, size,
                                                self.follow_idle_timeout_s, fd)
        except OSError as err:
            LOG.warning("could not abandon the stalled fill of image %s: %s", image_id, err)
            return False

    # -- admission and pruning -----------------------------------------------------------

    def admit(self, image_id, size):
        """Reserve the right to cache ``size`` bytes of ``image_id``: a CacheWriter, or None
        when it is cached, being cached, of unknown size or when room cannot be made."""
        if size is None or size > self.max_size:
            LOG.info("not caching image %s: size %s does not fit image_cache_max_size=%d",
                     image_id, size, self.max_size)
            self.metrics.fill_failed("admission")
            return None
        if self.driver.is_cached(image_id):
            return None
        try:
            return self._admit(image_id, size)
        except Exception:
            # Caching trouble (a file system without hard links, a database outage) never
            # stops the download: it is served uncached.
            LOG.exception("not caching image %s: admission failed", image_id)
            self.metrics.fill_failed("admission")
            return None

    def _admit(self, image_id, size):
        with space.maintenance_lock(self.driver, self._mutex):
            try:
                writer = self.driver.open_for_write(image_id, size)
            except ondisk.AlreadyBeingCached:
                return None
            try:
                if self.driver.is_cached(image_id):   # committed by a writer that just left
                    writer.discard("already cached")
                    return None
                to_free = space.bytes_to_free(   # this fill's reservation included
                    self.driver, self.driver.get_cache_size(), self.max_size, self.min_free)
                if to_free:   # only now read the metadata: most misses need no eviction
                    entries = self.driver.get_entries_by_last_accessed()
                    if to_free > sum(entry.size for entry in entries):
                        writer.discard("no room for %d bytes" % size)
                        self.metrics.fill_failed("admission")
                        return None
                    space.evict_lru(entries, to_free, self.evict, "admission")
            except BaseException:
                writer.discard("admission failed")
                raise
        return writer

    def prune(self):
        """Evict least recently used images until the cache fits image_cache_max_size and
        leaves image_cache_min_free bytes on the disk; one ordered pass, under the lock.
        Returns (files removed, bytes freed)."""
        with space.maintenance_lock(self.driver, self._mutex):
            entries = self.driver.get_entries_by_last_accessed()
            to_free = space.bytes_to_free(self.driver, sum(entry.size for entry in entries),
                                          self.max_size, self.min_free, count_reserved=False)
            if to_free == 0:
                return 0, 0
            return space.evict_lru(entries, to_free, self.evict, "prune")

    def clean(self, stall_time=None):
        """Remove invalid/ files and abandoned incomplete/ files older than ``stall_time``
        seconds (default image_cache_stall_time); a live fill is never touched."""
        return self.driver.clean(stall_time)


# One ImageCache per process and cache directory, shared by its users (registry.py).
_REGISTRY = registry.Registry(ImageCache.from_config)
shared = _REGISTRY.get
is_shared = _REGISTRY.has
