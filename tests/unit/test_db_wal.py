"""db/wal.py in one process: enable_wal does not retry errors other than a held lock, and the
sqlite cache driver still names a database it cannot open. Processes that open a fresh SQLite
database while another holds the write lock are in tests/functional/test_db_wal.py."""

import os
import sqlite3

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import wal
from glance_cache_mw.image_cache import drivers
from tests.unit import cache_helpers as helpers


def test_enable_wal_does_not_hide_other_errors(tmp_path):
    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        wal.enable_wal(conn, timeout_s=30)   # a closed connection: no retrying that


def test_the_sqlite_cache_driver_still_names_a_database_it_cannot_open(tmp_path):
    settings = helpers.settings(tmp_path, "sqlite")
    os.makedirs(os.path.join(settings["image_cache_dir"], "cache.db"))   # a directory
    with pytest.raises(exception.BadDriverConfiguration, match="cache.db"):
        drivers.load_driver("sqlite", settings)
