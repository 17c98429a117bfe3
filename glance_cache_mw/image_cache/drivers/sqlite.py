"""The embedded default driver: metadata in ``{image_cache_dir}/cache.db`` (SQLite, WAL).

Unlike Glance's (W9): WAL journal, a real busy timeout instead of a 2 s retry loop, errors
that propagate instead of being swallowed, an index on ``last_accessed``, hits written in
batches (one transaction per flush, not one per hit) and evictions deleted in one statement.

A full cache disk must not stop the tools that free it (prune, clean, the management API).
In WAL mode every connection needs the WAL index ``cache.db-shm``; SQLite deletes it when the
last connection closes, and creating it again fails on a full disk ("disk I/O error"). So each
process keeps one connection open for its lifetime (shared by its threads under a lock, opened
again in a forked child): while a server runs, the index exists and every other process can
open the database too. A process that finds no index and cannot create one (no process has
the database open, and the disk is full) runs each operation on its own connection in
``locking_mode=EXCLUSIVE``, where SQLite keeps the index in memory, and closes it right after
(so the exclusive lock is held only for that operation).
"""

import contextlib
import logging
import os
import sqlite3
import threading
import time

from glance_cache_mw import exception
from glance_cache_mw.db import wal
from glance_cache_mw.image_cache.drivers import base, ondisk

LOG = logging.getLogger(__name__)

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


# Connections a forked child inherited: never used nor closed there (closing could checkpoint
# or unlock on the parent's behalf); kept referenced so that garbage collection does not.
_INHERITED = []


def _is_io_error(err):
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
                               sqlite3.SQLITE_CANTOPEN)
    return "disk I/O error" in str(err)


class Driver(base.Driver):
    """Cache metadata in a local SQLite database next to the image files."""

    name = "sqlite"

    def __init__(self, config):
        super().__init__(config)
        self.db_path = self.get_path(ondisk.SQLITE_DB_NAME)
        self._conn = None          # this process's connection (WAL index shared)
        self._conn_pid = None
        self._conn_file = None     # (st_dev, st_ino) of the file it has open
        self._conn_lock = threading.Lock()

    def _open(self, exclusive=False):
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
        try:
            if exclusive:   # before the first access: the WAL index then lives in memory
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            # WAL is persistent in the file; setting it again only reads. Other processes may
            # be configuring the same fresh file right now (workers starting together).
            wal.enable_wal(conn, BUSY_TIMEOUT_S)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()   # maps the index
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _connection(self):
        """This process's connection (under its lock), or an exclusive one for this
        operation when the WAL index cannot be created (see the module docstring)."""
        with self._conn_lock:
            if self._conn is not None and self._conn_pid != os.getpid():
                _INHERITED.append(self._conn)   # a forked child: open our own
                self._conn = None
            if self._conn is not None and self._file_id() != self._conn_file:
                LOG.warning("%s was replaced or removed; opening it again", self.db_path)
                self._conn.close()
                self._conn = None
            if self._conn is None:
                try:
                    self._conn, self._conn_pid = self._open(), os.getpid()
                    self._conn_file = self._file_id()
                except sqlite3.OperationalError as err:
                    if not _is_io_error(err):
                        raise
                    LOG.warning("%s: %s (a full disk?); using an exclusive connection for "
                                "this operation", self.db_path, err)
                    conn = self._open(exclusive=True)
                    try:
                        yield conn
                    finally:
                        conn.close()
                    return
            yield self._conn

    def _file_id(self):
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    @contextlib.contextmanager
    def _transaction(self, write=False):
        """A transaction on this process's connection: committed on success, rolled back on
        error."""
        with self._connection() as conn:
            # Writers take the lock up front: a read-to-write upgrade could fail with BUSY.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (a full disk): the kept connection must not stay
                # inside a transaction.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def close(self):
        super().close()
        with self._conn_lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._conn_pid == os.getpid():
                conn.close()
            elif conn is not None:
                _INHERITED.append(conn)

    def configure_metadata(self):
        try:
            with self._transaction(write=True) as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
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
