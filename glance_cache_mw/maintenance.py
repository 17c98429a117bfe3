"""Cache maintenance: evict images gone from the database, prune, clean and prefetch.

``Maintenance`` runs each task once (``evict_gone``, ``prune_once``, ``clean_once``,
``prefetch_once``), a whole pass of them (``run_pass``), or passes in a loop
(``run_loop`` / ``start`` + ``stop``) — the same code behind the cron commands, the daemons
and the server's in-process loop (``image_cache_maintenance_interval``)::

    maintenance = Maintenance(cache, db_api, store, workers=4)
    maintenance.start(interval_s=300)      # a (green) thread; passes until stop()
    ...
    maintenance.stop(timeout=30)           # finishes or abandons the current pass

Concurrent runs of one task on one cache (two cron jobs, a daemon and the server, several
worker processes) are safe: each task holds a non-blocking ``flock`` on
``{image_cache_dir}/.{task}.lock``; the second one logs that it is skipping and returns None
(Glance's CLIs took no lock at all, W14). The lock files start with a dot, so they are never
taken for images, counted or deleted with them (W21).

``evict_gone`` is how a node learns that images were deleted or deactivated through another
node (W11): every cached image whose database record is missing, deleted or not ``active`` is
evicted, with any driver, and a fill of such an image in flight is cancelled (it never
commits; ``ImageCache.evict``); with ``centralized_db`` the node's rows for such images are
evicted as well, even where the file is already gone. A database
that knows fewer than half of the cached images is taken for a misconfiguration (a cron
job's config without sql_connection gets the embedded SQLite default): nothing is evicted
and the task fails (the command exits 1), naming the database URL without its password.
"""

import contextlib
import logging
import os
import threading
import time

import sqlalchemy as sa

from glance_cache_mw import exception, glance_origin, image_cache, metrics as metrics_mod
from glance_cache_mw import prefetcher as prefetcher_mod
from glance_cache_mw import store as store_mod
from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import api as db_api_mod
from glance_cache_mw.image_cache.drivers import ondisk, safe_open

LOG = logging.getLogger(__name__)

EVICT, PRUNE, CLEAN, PREFETCH = "evict", "prune", "clean", "prefetch"
TASKS = (EVICT, PRUNE, CLEAN, PREFETCH)   # the order of a pass: free space, then fill it
LOCK_TEMPLATE = ".%s.lock"
ID_BATCH = 100
WAIT_STEP_S = 1.0
# evict_gone refuses to act when the database knows fewer of the cached images than this.
MIN_KNOWN_FRACTION = 0.5
USABLE = "usable"


class WrongImageDatabase(exception.GlanceException):
    message = ("the image database %(url)s knows %(known)d of the %(cached)d images cached "
               "in %(cache_dir)s: evicting nothing (is sql_connection the image database?)")


def _state(image):
    """USABLE for an active, not deleted image; else the reason it must not stay cached."""
    if image["deleted"]:
        return "deleted"
    if image["status"] != "active":
        return image["status"]
    return USABLE


class _LockFile:
    """An open lock file; a forked child drops its copy at once, so that a server forking
    workers during a pass never keeps the lock held after the pass ended."""

    def __init__(self, path):
        self.fd = safe_open.open_housekeeping(path, os.O_RDWR)
        ondisk.hold_across_fork(self)

    def forget_fds_after_fork(self):
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def close(self):
        self.forget_fds_after_fork()   # closing releases the flock


@contextlib.contextmanager
def task_lock(directory, task):
    """Yield True while holding the task's lock file, False if another run holds it."""
    lock = _LockFile(os.path.join(directory, LOCK_TEMPLATE % task))
    try:
        yield ondisk.try_lock(lock.fd)
    finally:
        lock.close()


class Maintenance:
    """The maintenance tasks of one image cache; every collaborator is passed in."""

    def __init__(self, cache, db_api, store, *, stall_time_s=None, workers=4, context=None,
                 progress=None, owns_cache=False, db_url=None, metrics=metrics_mod.NULL):
        """``cache``: ImageCache; ``db_api``: glance_cache_mw.db.api (configured);
        ``store``: FileStore or glance_origin.GlanceStoreOrigin; ``stall_time_s``: clean's
        age limit (None: the cache's image_cache_stall_time); ``workers``: images prefetched
        at once; ``progress``: a cmd.progress.Progress; ``owns_cache``: close() also closes the
        cache; ``db_url``: the image database's URL, for error messages (password hidden);
        ``metrics``: a glance_cache_mw.metrics.Metrics (task runs, prefetch outcomes)."""
        self.db_url = db_url
        self.cache = cache
        self.db_api = db_api
        self.store = store
        self.stall_time_s = stall_time_s
        self.context = context or RequestContext.admin()
        self.metrics = metrics
        self.prefetcher = prefetcher_mod.Prefetcher(cache, db_api, store, workers=workers,
                                                    context=self.context, progress=progress,
                                                    metrics=metrics)
        self.lock_dir = cache.base_dir
        self._owns_cache = owns_cache
        self._thread = None
        self._stop_event = None

    @classmethod
    def from_config(cls, config, cache=None, db_api=None, store=None, progress=None,
                    config_file=None):
        """Build from a Config; what is not passed in is created. The cache is this
        process's shared one (``image_cache.shared``: the server's pipeline's); it is owned,
        closed by close(), only when nothing else in the process used it (a command).

        ``config_file``: the file ``config`` was read from; when it is Glance's glance-api.conf
        (it configures glance_store), images are prefetched through Glance's stores, else from
        ``filesystem_store_datadir``."""
        owns_cache = cache is None and not image_cache.is_shared(config)
        if db_api is None:
            db_api = db_api_mod.configured(config.sql_connection)
        if store is None:
            if glance_origin.has_glance_stores(config_file):
                store = glance_origin.from_glance_config(config_file, db_api)
            else:
                store = store_mod.FileStore.from_config(config)
        if cache is None:
            cache = image_cache.shared(config)
        return cls(cache, db_api, store, stall_time_s=config.image_cache_stall_time,
                   workers=config.cache_prefetcher_workers, progress=progress,
                   owns_cache=owns_cache, db_url=config.sql_connection, metrics=cache.metrics)

    def close(self):
        """Stop the loop if it runs; close the cache if this object created it."""
        self.stop()
        if self._owns_cache:
            self.cache.close()

    # -- one task ------------------------------------------------------------------------

    def _locked(self, task, action):
        with task_lock(self.lock_dir, task) as held:
            if not held:
                LOG.info("skipping %s: another %s of %s is running", task, task,
                         self.lock_dir)
                return None
            return action()

    def prune_once(self):
        """Evict least recently used images until the cache fits; (files, bytes) or None
        when another prune is running."""
        def prune():
            files, size = self.cache.prune()
            LOG.info("pruned %d files, %d bytes from %s (now %d of %d bytes)", files, size,
                     self.lock_dir, self.cache.get_cache_size(), self.cache.max_size)
            return files, size
        return self._locked(PRUNE, prune)

    def clean_once(self):
        """Remove invalid/ files and abandoned incomplete/ files older than the stall time;
        the count, or None when another clean is running. A live fill is never touched."""
        return self._locked(CLEAN, lambda: self.cache.clean(self.stall_time_s))

    def prefetch_once(self, stop_event=None):
        """Cache every queued image: a prefetcher.PrefetchResult (fetched, failed, dropped,
        skipped, interrupted), or None when another prefetch is running."""
        return self._locked(PREFETCH, lambda: self.prefetcher.run(stop_event))

    def evict_gone(self):
        """Evict cached images that are deleted, not active or missing in the database;
        how many, or None when another eviction is running. A database error evicts nothing,
        and so does a database that knows fewer than MIN_KNOWN_FRACTION of the cached images
        (the wrong database, an empty default one): that raises WrongImageDatabase."""
        return self._locked(EVICT, self._evict_gone)

    def _evict_gone(self):
        held = sorted({entry["image_id"] for entry in self.cache.get_cached_images()}
                      | set(self.cache.get_filling_images()))
        states = self._database_states(held)
        if len(states) < len(held) * MIN_KNOWN_FRACTION:
            raise WrongImageDatabase(known=len(states), cached=len(held),
                                     cache_dir=self.lock_dir, url=self._safe_db_url())
        gone = {image_id for image_id in held
                if image_id not in states or states[image_id] != USABLE}
        # centralized_db: this node's rows whose image went away through another node.
        gone.update(self.cache.get_stale_cached_images())
        if gone:
            self.cache.evict(sorted(gone), "gone")
        LOG.info("evicted %d cached images deleted, deactivated or gone from the database%s",
                 len(gone), (": " + ", ".join(sorted(gone))) if gone else "")
        return len(gone)

    def _database_states(self, image_ids):
        """{image_id: USABLE or why not} for the ``image_ids`` the database knows (deleted
        rows included); a query per batch, plus one per id that an ``in:`` list cannot
        hold (Glance's quoting keeps backslashes, so ids with '"' or '\\' go alone)."""
        plain = [i for i in image_ids if not set(i) & set(',"\\')]
        odd = [i for i in image_ids if set(i) & set('"\\')]
        commas = [i for i in image_ids if "," in i and i not in odd]
        filters = ["in:" + ",".join(plain[start:start + ID_BATCH])
                   for start in range(0, len(plain), ID_BATCH)]
        filters += ["in:" + ",".join('"%s"' % i for i in commas[start:start + ID_BATCH])
                    for start in range(0, len(commas), ID_BATCH)]
        filters += ["eq:" + i for i in odd]
        states = {}
        for id_filter in filters:
            # No "deleted" filter: an admin context then lists deleted images as well.
            for image in self.db_api.image_get_all(self.context, filters={"id": id_filter}):
                states[image["id"]] = _state(image)
        return states

    def _safe_db_url(self):
        url = self.db_url
        if url is None:
            try:
                url = self.db_api.engine.get_engine().url
            except Exception:   # not our db.api module, or not configured
                return "(unknown)"
        try:
            return sa.engine.make_url(url).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            return "(unparsable URL)"

    # -- passes and the loop ---------------------------------------------------------------

    def run_pass(self, stop_event=None, tasks=TASKS):
        """Run ``tasks`` in order; {task: result, None if skipped, or the exception raised}.

        One failing task is logged and does not stop the others.
        """
        actions = {EVICT: self.evict_gone, PRUNE: self.prune_once, CLEAN: self.clean_once,
                   PREFETCH: lambda: self.prefetch_once(stop_event)}
        results = {}
        for task in tasks:
            if stop_event is not None and stop_event.is_set():
                break
            try:
                results[task] = actions[task]()
            except Exception as err:
                # Expected failures (database down, disk errors) in one line; bugs in full.
                expected = isinstance(err, (exception.GlanceException, OSError,
                                            sa.exc.SQLAlchemyError))
                LOG.error("cache maintenance task %s failed on %s: %s", task, self.lock_dir,
                          _first_line(err), exc_info=not expected or LOG.isEnabledFor(
                              logging.DEBUG))
                results[task] = err
            self.metrics.maintenance(task, _outcome(results[task]))
        return results

    def run_loop(self, interval_s, stop_event, tasks=TASKS, on_pass=None):
        """Run a pass every ``interval_s`` seconds until ``stop_event`` is set.

        ``stop_event`` is a threading.Event (green under eventlet's monkey patching). The loop
        waits on ``stop_event`` in steps of at most a second, so a stop is seen at once on any
        hub. A stop during a prefetch abandons the image being fetched (nothing partial is ever
        servable) and leaves it queued. ``on_pass(results)`` is called after every pass.
        """
        LOG.info("cache maintenance of %s every %s s: %s", self.lock_dir, interval_s,
                 ", ".join(tasks))
        next_pass = time.monotonic()
        while not stop_event.is_set():
            now = time.monotonic()
            if now < next_pass:
                stop_event.wait(min(next_pass - now, WAIT_STEP_S))
                continue
            results = self.run_pass(stop_event, tasks)
            next_pass = time.monotonic() + interval_s
            if on_pass is not None:
                on_pass(results)
        LOG.info("cache maintenance of %s stopped", self.lock_dir)

    def start(self, interval_s, tasks=TASKS):
        """Run ``run_loop`` in a daemon thread (a green thread in a monkey-patched server)."""
        if self.running:
            raise RuntimeError("cache maintenance is already running")
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self.run_loop, name="cache-maintenance",
                                        args=(interval_s, self._stop_event, tasks),
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout=None):
        """Ask the loop to stop and wait up to ``timeout`` seconds; True once it stopped."""
        if self._stop_event is not None:
            self._stop_event.set()   # also cuts the loop's wait short
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        return True


def _outcome(result):
    """The maintenance_runs outcome label of a task's result."""
    if result is None:
        return "skipped"
    return "failed" if isinstance(result, Exception) else "ok"


def _first_line(err):
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__
