"""Throw-away databases for tests: SQLite in a temp dir, PostgreSQL and MariaDB from env URLs.

GLANCE_CACHE_MW_TEST_POSTGRES_URL / GLANCE_CACHE_MW_TEST_MYSQL_URL name a server (any database
on it); each test session creates its own uniquely named database there and drops it at the end.
"""

import os
import uuid

import pytest
import sqlalchemy as sa

from glance_cache_mw.db import engine as db_engine, migration, models

ENV_URLS = {
    "postgresql": "GLANCE_CACHE_MW_TEST_POSTGRES_URL",
    "mysql": "GLANCE_CACHE_MW_TEST_MYSQL_URL",
}
BACKENDS = ("sqlite", "postgresql", "mysql")


def backend_params():
    """pytest params for every backend; the real servers carry the realdb mark."""
    return [pytest.param("sqlite", id="sqlite")] + [
        pytest.param(name, id=name, marks=pytest.mark.realdb) for name in ENV_URLS]


def server_url(backend):
    """The configured server URL for a real backend, or skip saying which variable is unset."""
    var = ENV_URLS[backend]
    url = os.environ.get(var)
    if not url:
        pytest.skip("%s is not set: no %s server to test against" % (var, backend))
    return db_engine.normalize_url(url)


class ScratchDatabase:
    """Create a uniquely named database on a server, migrate it, and drop it on close()."""

    def __init__(self, backend, tmp_dir):
        self.backend = backend
        if backend == "sqlite":
            self.url = "sqlite:///" + os.path.join(str(tmp_dir), "images.sqlite")
            self._admin_url = None
        else:
            self._admin_url = server_url(backend)
            self.name = "gcm_test_%s" % uuid.uuid4().hex[:12]
            self._admin(lambda conn: conn.exec_driver_sql("CREATE DATABASE %s" % self.name))
            self.url = self._admin_url.set(database=self.name).render_as_string(
                hide_password=False)
        self.engine = db_engine.create_engine(self.url)
        migration.sync(self.engine)

    def _admin(self, action):
        engine = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                action(conn)
        finally:
            engine.dispose()

    def empty(self):
        """Delete every row, children first (faster than re-creating the schema)."""
        with self.engine.begin() as conn:
            for table in reversed(models.metadata.sorted_tables):
                conn.execute(table.delete())

    def close(self):
        self.engine.dispose()
        if self._admin_url is not None:
            drop = "DROP DATABASE IF EXISTS %s" % self.name
            if self.backend == "postgresql":
                drop += " WITH (FORCE)"
            self._admin(lambda conn: conn.exec_driver_sql(drop))
