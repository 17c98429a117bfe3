"""Processes that open a fresh SQLite database at the same moment: nobody fails to start.

``PRAGMA journal_mode=WAL`` on a database still in rollback mode needs an exclusive lock, and
SQLite answers "database is locked" at once, without its busy handler, while another process
holds the write lock (it happened in CI: two uWSGI workers built the app at the same time and
one failed on the sqlite cache driver's cache.db). Here a real second process holds that lock.
"""

import os
import sqlite3
import time

import pytest

from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import wal
from glance_cache_mw.image_cache import drivers
from tests.unit import cache_helpers as helpers

HOLD_S = 0.5


def _hold_write_lock(path, ready, hold_s):
    """Child process: a rollback-mode database with a write transaction open for ``hold_s``."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS other_table (x)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO other_table VALUES (1)")
    ready.set()
    time.sleep(hold_s)
    conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def locked_database(tmp_path):
    """Start a process holding the write lock of a fresh database; yields its path."""

    def start(path, hold_s=HOLD_S):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ready = helpers.MP.Event()
        child = helpers.MP.Process(target=_hold_write_lock, args=(str(path), ready, hold_s))
        child.start()
        children.append(child)
        assert ready.wait(helpers.WAIT_S), "the lock holder did not start"
        return path

    children = []
    yield start
    for child in children:
        child.join(helpers.WAIT_S)
        assert child.exitcode == 0


def _journal_mode(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_plain_sqlite_fails_at_once_which_is_why_we_retry(tmp_path, locked_database):
    """The behaviour we work around; if a future SQLite waits here, this says so."""
    path = locked_database(tmp_path / "plain.db")
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.execute("PRAGMA journal_mode=WAL")
        assert time.monotonic() - started < HOLD_S
    finally:
        conn.close()


def test_enable_wal_waits_for_the_lock(tmp_path, locked_database):
    path = locked_database(tmp_path / "w.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert wal.enable_wal(conn, timeout_s=30) == "wal"
    finally:
        conn.close()
    assert _journal_mode(path) == "wal"


def test_enable_wal_gives_up_after_its_timeout(tmp_path, locked_database):
    path = locked_database(tmp_path / "t.db", hold_s=3)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            wal.enable_wal(conn, timeout_s=0.3)
        assert time.monotonic() - started < 3
    finally:
        conn.close()


def test_the_sqlite_cache_driver_starts_while_another_process_writes(tmp_path,
                                                                     locked_database):
    settings = helpers.settings(tmp_path, "sqlite")
    locked_database(os.path.join(settings["image_cache_dir"], "cache.db"))
    driver = drivers.load_driver("sqlite", settings)   # configure(): was BadDriverConfiguration
    assert _journal_mode(driver.db_path) == "wal"
    assert driver.load_metadata() == {}


def test_the_image_database_connects_while_another_process_writes(tmp_path, locked_database):
    path = locked_database(tmp_path / "glance.sqlite")
    engine = db_engine.create_engine("sqlite:///%s" % path)
    try:
        with engine.connect() as conn:   # the connect hook switches to WAL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("SELECT count(*) FROM other_table").scalar() == 1
    finally:
        engine.dispose()
