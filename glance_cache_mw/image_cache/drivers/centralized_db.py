"""The shared-database driver: cache metadata in the main image database, one set per node.

Each API node keeps its image files on its own disk, like the other drivers, and records them
in ``cached_images`` under its ``worker_self_reference_url`` (a ``node_reference`` row), so
that operators see every node's cache in one place (``get_cached_nodes``). The files decide
what is cached (base class); the rows only order and annotate them.

Unlike Glance's driver (its differences are listed in docs/glance-differences.md):

* configure() fails with BadDriverConfiguration, naming the cause, when
  worker_self_reference_url or sql_connection is missing or the database cannot be used;
  Glance went on without a node row and failed every later insert (W2);
* a file without a row (crash between rename and insert, a driver switch) is still listed and
  evictable, and gets its row on its next hit; an empty cache has no LRU entry (never
  ``(None, 0)``, W2);
* hits are batched in memory and written in one transaction per flush, not one per read;
* a re-committed image replaces its stale row instead of keeping the old size and hits;
* switching from the sqlite driver keeps its hits and access times (read from ``cache.db``
  once, when the node has no rows), as Glance's start-up migration does;
* naive UTC times are read as UTC (W19), via ``db.cache_api``.
"""

import logging
import os
import sqlite3

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import cache_api, fill_claims
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.image_cache.drivers import base, ondisk

LOG = logging.getLogger(__name__)



class CentralizedDbDriver(base.Driver):
    """Cache metadata as this node's rows of ``cached_images`` in the main database."""

    name = "centralized_db"

    def __init__(self, config):
        super().__init__(config)
        self.node_url = self.config.worker_self_reference_url
        self.engine = None
        self._owns_engine = False

    # -- set-up --------------------------------------------------------------------------

    def _bad(self, reason):
        return exception.BadDriverConfiguration(driver_name=self.name, reason=reason)

    def configure_metadata(self):
        if not self.node_url:
            raise self._bad("worker_self_reference_url is not set: this driver keys the "
                            "node's cache rows by it (set it to this node's API URL)")
        url = self.config.sql_connection
        if not url:
            raise self._bad("sql_connection is not set: this driver keeps its rows in the "
                            "main image database")
        self.engine, self._owns_engine = self._engine_for(url)
        if self._owns_engine:
            ondisk.hold_across_fork(self)
        try:
            node = cache_api.node_reference_create(self.node_url, engine=self.engine)
        except sa.exc.SQLAlchemyError as err:
            self._dispose_engine()
            raise self._bad("cannot register node %s in %s: %s (is the database reachable "
                            "and synced with 'glance-cache-mw-manage db sync'?)"
                            % (self.node_url, _safe_url(url), _first_line(err))) from err
        LOG.debug("node %s is node_reference %s", self.node_url, node["node_reference_id"])
        self._import_sqlite_metadata()

    def _import_sqlite_metadata(self):
        """Switching from the sqlite driver (Glance's sqlite_migration, §3.8): when this node
        has no rows yet, carry the hits and times of ``cache.db`` over for the files that are
        still here, so the LRU order survives. The sqlite file is only read, never changed."""
        path = self.get_path(ondisk.SQLITE_DB_NAME)
        if not os.path.isfile(path) or cache_api.get_least_recently_accessed(
                self.node_url, engine=self.engine) is not None:
            return 0
        try:
            conn = sqlite3.connect(path, timeout=30)
            try:
                rows = conn.execute("SELECT image_id, hits, last_accessed, last_modified"
                                    " FROM cached_images").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as err:
            LOG.warning("not importing %s: %s", path, err)
            return 0
        entries = []
        for image_id, hits, last_accessed, last_modified in rows:
            if not ondisk.is_image_id(image_id):
                continue
            try:
                size = os.stat(self.get_image_filepath(image_id)).st_size
            except FileNotFoundError:
                continue
            entries.append({"image_id": image_id, "size": size, "hits": hits or 0,
                            "last_accessed": last_accessed or None,
                            "last_modified": last_modified or None})
        cache_api.insert_many_cache_details(self.node_url, entries, engine=self.engine)
        LOG.info("imported %d entries of %s for node %s", len(entries), path, self.node_url)
        return len(entries)

    def _engine_for(self, url):
        """The process's configured engine when it is for the same database, else our own."""
        try:
            wanted = db_engine.normalize_url(url)
            if db_engine.is_configured() and db_engine.get_engine().url == wanted:
                return db_engine.get_engine(), False
            return db_engine.create_engine(url), True
        except (sa.exc.ArgumentError, ImportError, exception.InvalidConfiguration) as err:
            raise self._bad("sql_connection=%s cannot be used: %s"
                            % (_safe_url(url), _first_line(err))) from err

    def _dispose_engine(self):
        engine, self.engine = self.engine, None
        if engine is not None and self._owns_engine:
            engine.dispose()

    def forget_fds_after_fork(self):
        """In a forked child: never touch the parent's pooled connections (their sockets are
        shared with it); the child opens its own on first use."""
        if self.engine is not None and self._owns_engine:
            self.engine.dispose(close=False)

    def close(self):
        """Write pending hits, then release our database connections."""
        try:
            super().close()
        finally:
            self._dispose_engine()

    # -- metadata hooks ------------------------------------------------------------------

    def load_metadata(self):
        return {entry["image_id"]: entry
                for entry in cache_api.get_cached_images(self.node_url, engine=self.engine)}

    def get_metadata(self, image_id):
        return cache_api.get_cached_image(image_id, self.node_url, engine=self.engine)

    def record_commit(self, image_id, size):
        try:
            self._insert(image_id, size)
        except exception.NotFound:
            # Our node row was removed (node_reference_delete) while we ran: register again.
            LOG.warning("node %s was not registered any more; registering it again",
                        self.node_url)
            cache_api.node_reference_create(self.node_url, engine=self.engine)
            self._insert(image_id, size)

    def _insert(self, image_id, size):
        cache_api.insert_cache_details(image_id, self.node_url, size, replace=True,
                                       engine=self.engine)

    def forget(self, image_ids):
        if image_ids:
            cache_api.delete_cached_images(image_ids, self.node_url, engine=self.engine)

    def forget_all(self):
        cache_api.delete_all_cached_images(self.node_url, engine=self.engine)

    def apply_hits(self, batch):
        updated = cache_api.update_hit_counts(self.node_url, batch, engine=self.engine)
        if updated < len(batch):
            self._adopt_untracked(batch)

    def _adopt_untracked(self, batch):
        """Give files that were hit but have no row one, carrying the hits (duplicates of
        rows that do exist are ignored: their hits were just counted)."""
        entries = []
        for image_id, (count, when) in batch.items():
            try:
                st = os.stat(self.get_image_filepath(image_id))
            except FileNotFoundError:
                continue   # evicted meanwhile: nothing to track
            entries.append({"image_id": image_id, "size": st.st_size, "hits": count,
                            "last_accessed": when, "last_modified": st.st_mtime})
        if entries:
            LOG.info("tracking %d cached files that had no row for node %s",
                     len(entries), self.node_url)
            cache_api.insert_many_cache_details(self.node_url, entries, engine=self.engine)

    # -- shared view ---------------------------------------------------------------------

    def get_cached_nodes(self, image_id):
        """URLs of every node that has the image cached (sorted), this one included."""
        return cache_api.get_cached_nodes(image_id, engine=self.engine)

    def get_filling_node(self, image_id):
        """The node holding the cluster-wide fill claim of the image (unexpired), or None."""
        return fill_claims.filler(image_id, engine=self.engine)

    def get_node_summaries(self):
        """Every node's images, bytes, hits, bytes saved and oldest entry."""
        return cache_api.get_node_summaries(engine=self.engine)

    def get_stale_cached_images(self):
        """Ids this node caches whose image is deleted, not active or gone from the database
        (deleted or deactivated through another node): the next maintenance pass evicts them."""
        return cache_api.get_stale_cached_images(self.node_url, engine=self.engine)


def _safe_url(url):
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return repr(url)


def _first_line(err):
    text = str(getattr(err, "orig", None) or err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
