"""The one engine of the image database: configure it once, then read and write in transactions.

This is the only module-level state of the DB layer (STYLE.md): ``configure(url)`` sets it,
``get_engine()`` returns it, tests reset it with ``dispose()``.

* SQLite: WAL journal (switched to even while other processes open the file: db/wal.py), a
  busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for writers so two writers queue on
  the lock instead of failing on a read-to-write upgrade.
* PostgreSQL and MariaDB/MySQL: pooled, pre-pinged connections.
* Every writer is retried on deadlocks and serialization failures (``retry_on_deadlock``).
"""

import contextlib
import functools
import logging
import os
import random
import time

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import wal

LOG = logging.getLogger(__name__)

_ENGINE = None

SQLITE_BUSY_TIMEOUT_MS = 30000
DEADLOCK_RETRIES = 20

# PostgreSQL SQLSTATEs and MySQL error numbers that mean "try the transaction again".
_PG_RETRY_CODES = {"40P01", "40001"}
_MYSQL_RETRY_CODES = {1213, 1205}


def normalize_url(url):
    """Pick the drivers we ship (psycopg 3, PyMySQL) when the URL names none."""
    url = sa.engine.make_url(url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    elif url.drivername in ("mysql", "mariadb"):
        url = url.set(drivername=url.drivername + "+pymysql")
    return url


def create_engine(url):
    """A new engine for ``url`` with the per-database settings described above."""
    url = normalize_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _setup_sqlite(engine)
        return engine
    if backend not in ("postgresql", "mysql", "mariadb"):
        raise exception.InvalidConfiguration(
            reason="sql_connection=%r: unsupported database %r (use sqlite, postgresql or mysql)"
            % (url.render_as_string(hide_password=True), backend))
    kwargs = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_recycle": 3600}
    if backend in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"charset": "utf8mb4"}
    return sa.create_engine(url, **kwargs)


def _setup_sqlite(engine):
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            wal.enable_wal(dbapi_conn, SQLITE_BUSY_TIMEOUT_MS / 1000)   # see db/wal.py
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=%d" % SQLITE_BUSY_TIMEOUT_MS)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        write = conn.get_execution_options().get("glance_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def configure(url):
    """Select the database; replaces (and disposes) any engine configured before."""
    global _ENGINE
    engine = create_engine(url)
    dispose()
    _ENGINE = engine
    LOG.debug("image database: %s", engine.url.render_as_string(hide_password=True))
    return engine


def _drop_inherited_pool():
    """In a forked child: forget (never close) the parent's pooled connections, which the
    parent keeps using; the child opens its own on first use."""
    if _ENGINE is not None:
        _ENGINE.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_pool)


def get_engine():
    if _ENGINE is None:
        raise exception.DBNotConfigured()
    return _ENGINE


def is_configured():
    return _ENGINE is not None


def dispose():
    """Close every pooled connection and forget the engine."""
    global _ENGINE
    if _ENGINE is not None:
        _ENGINE.dispose()
    _ENGINE = None


@contextlib.contextmanager
def reader(engine=None):
    """A connection in a read transaction."""
    with (engine or get_engine()).connect() as conn:
        with conn.begin():
            yield conn


@contextlib.contextmanager
def writer(engine=None):
    """A connection in a write transaction (committed on clean exit, rolled back on error)."""
    engine = engine or get_engine()
    with engine.connect() as conn:
        conn = conn.execution_options(glance_write=True)
        with conn.begin():
            yield conn


def is_retryable(err):
    """True for deadlocks, lock-wait timeouts, serialization failures and a busy SQLite."""
    if not isinstance(err, sa.exc.DBAPIError):
        return False
    orig = err.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY_CODES:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _MYSQL_RETRY_CODES:
        return True
    return "database is locked" in str(orig)


def retry_on_deadlock(func):
    """Run ``func`` again (with jittered backoff) when its transaction lost a deadlock."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                return func(*args, **kwargs)
            except sa.exc.DBAPIError as err:
                if not is_retryable(err) or attempt == DEADLOCK_RETRIES:
                    raise
                LOG.debug("%s: retrying after %s (attempt %d)", func.__name__, err.orig, attempt)
                time.sleep(min(0.5, 0.01 * 2 ** attempt) * random.random())
        raise AssertionError("unreachable")
    return wrapper
