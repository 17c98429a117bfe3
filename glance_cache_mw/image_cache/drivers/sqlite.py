"""The embedded default driver: metadata in ``{image_cache_dir}/cache.db`` (SQLite, WAL).

Unlike Glance's (W9): WAL journal, a real busy timeout instead of a 2 s retry loop, errors
that propagate instead of being swallowed, an index on ``last_accessed``, hits written in
batches (one transaction per flush, not one per hit) and evictions deleted in one statement.
A connection is opened per operation, so the driver is safe across threads and forks.
"""

import contextlib
import logging
import sqlite3
import time

from glance_cache_mw import exception
from glance_cache_mw.db import wal
from glance_cache_mw.image_cache.drivers import base

LOG = logging.getLogger(__name__)

DB_NAME = "cache.db"
BUSY_TIMEOUT_S = 30.0
_BATCH = 500   # ids per IN (...) clause, well under SQLite's variable limit

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cached_images (
           image_id TEXT PRIMARY KEY,
           last_accessed REAL NOT NULL DEFAULT 0.0,
           last_modified REAL NOT NULL DEFAULT 0.0,
           size INTEGER NOT NULL DEFAULT 0,
           hits INTEGER NOT NULL DEFAULT 0,
           checksum TEXT)""",
    "CREATE INDEX IF NOT EXISTS ix_cached_images_last_accessed"
    " ON cached_images (last_accessed)",
)


class Driver(base.Driver):
    """Cache metadata in a local SQLite database next to the image files."""

    name = "sqlite"

    def __init__(self, config):
        super().__init__(config)
        self.db_path = self.get_path(DB_NAME)

    @contextlib.contextmanager
    def _transaction(self, write=False):
        """A connection for one transaction: committed on success, rolled back on error."""
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            # Writers take the lock up front: a read-to-write upgrade could fail with BUSY.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def configure_metadata(self):
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                # WAL is persistent in the file; setting it again only reads. Other processes
                # may be configuring the same fresh file right now (workers starting together).
                wal.enable_wal(conn, BUSY_TIMEOUT_S)
                conn.execute("BEGIN IMMEDIATE")   # the write lock up front, with the timeout
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise exception.BadDriverConfiguration(
                driver_name=self.name, reason="cannot open %s: %s" % (self.db_path, err))

    def load_metadata(self):
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT image_id, hits, last_accessed, last_modified FROM cached_images")
            return {row[0]: {"hits": row[1], "last_accessed": row[2], "last_modified": row[3]}
                    for row in rows}

    def get_metadata(self, image_id):
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT hits, last_accessed, last_modified FROM cached_images"
                " WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            return None
        return {"hits": row[0], "last_accessed": row[1], "last_modified": row[2]}

    def record_commit(self, image_id, size):
        now = time.time()
        with self._transaction(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cached_images"
                " (image_id, last_accessed, last_modified, size, hits) VALUES (?, ?, ?, ?, 0)",
                (image_id, now, now, size))

    def forget(self, image_ids):
        image_ids = list(image_ids)
        if not image_ids:
            return
        with self._transaction(write=True) as conn:
            for start in range(0, len(image_ids), _BATCH):
                chunk = image_ids[start:start + _BATCH]
                conn.execute("DELETE FROM cached_images WHERE image_id IN (%s)"
                             % ",".join("?" * len(chunk)), chunk)

    def forget_all(self):
        with self._transaction(write=True) as conn:
            conn.execute("DELETE FROM cached_images")

    def apply_hits(self, batch):
        with self._transaction(write=True) as conn:
            # An untracked file (crash between rename and insert) gets its row here.
            conn.executemany(
                "INSERT INTO cached_images (image_id, last_accessed, last_modified, hits)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE"
                " SET hits = hits + excluded.hits,"
                " last_accessed = MAX(last_accessed, excluded.last_accessed)",
                [(image_id, when, when, count) for image_id, (count, when) in batch.items()])
