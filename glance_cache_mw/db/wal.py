"""Switch a SQLite database to WAL mode when other processes may be opening it too.

``PRAGMA journal_mode=WAL`` on a database still in rollback mode needs an exclusive lock, and
while another connection holds the write lock SQLite answers "database is locked" at once: its
busy handler (the connection's timeout) is not consulted for that lock. Workers that start
together on a fresh database (uWSGI or gunicorn workers each building the application, the
cache driver's ``cache.db``) hit exactly that. Once the database is in WAL mode the pragma only
reads, so retrying costs nothing in the common case.
"""

import sqlite3
import time

MAX_DELAY_S = 0.2
_BUSY_CODES = {getattr(sqlite3, "SQLITE_BUSY", 5), getattr(sqlite3, "SQLITE_LOCKED", 6)}


def enable_wal(conn, timeout_s):
    """Put the database of the sqlite3 connection ``conn`` (no open transaction) in WAL mode;
    returns the journal mode SQLite reports ("wal", or e.g. "memory" where WAL cannot be).
    "Database is locked" is retried for up to ``timeout_s`` seconds, then raised; any other
    error at once."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as err:
            if not is_busy(err) or time.monotonic() + delay_s > deadline:
                raise
        time.sleep(delay_s)
        delay_s = min(2 * delay_s, MAX_DELAY_S)


def is_busy(err):
    """True for SQLite's "database is locked" / "database table is locked" errors."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES   # extended codes, e.g. SQLITE_BUSY_RECOVERY
    return "locked" in str(err)
