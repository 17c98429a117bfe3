"""Shared fixtures: a configured image database on every backend, a cache in a temporary
directory (``settings``, ``cache``: a test module may override them with its own), and the CI skip
guard."""

import os

import pytest

from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.image_cache import ImageCache
from tests import dbfixtures
from tests.unit import cache_helpers

REQUIRE_REAL_DB = "GLANCE_CACHE_MW_REQUIRE_REAL_DB"


@pytest.fixture(scope="session", params=dbfixtures.backend_params())
def scratch_db(request, tmp_path_factory):
    """One migrated database per backend for the whole session."""
    database = dbfixtures.ScratchDatabase(request.param, tmp_path_factory.mktemp(request.param))
    yield database
    database.close()


@pytest.fixture
def db(scratch_db):
    """The DB API configured on an empty database; yields the ScratchDatabase."""
    scratch_db.empty()
    db_engine.configure(scratch_db.url)
    yield scratch_db
    db_engine.dispose()



@pytest.fixture
def settings(tmp_path):
    """Cache settings in a temporary directory (the sqlite driver)."""
    return cache_helpers.settings(tmp_path)


@pytest.fixture
def cache(settings):
    """An ImageCache on ``settings``, closed after the test."""
    instance = ImageCache.from_config(settings)
    yield instance
    instance.close()

_skipped_real_db = []


def pytest_runtest_logreport(report):
    if report.skipped and ("realdb" in report.keywords or "realservice" in report.keywords):
        _skipped_real_db.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped real-database (or real-service) test is a failure: the run must prove
    it ran on them."""
    if os.environ.get(REQUIRE_REAL_DB) == "1" and _skipped_real_db:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "FAIL: %d real-database/service tests were skipped (%s=1), e.g. %s"
            % (len(_skipped_real_db), REQUIRE_REAL_DB, _skipped_real_db[0]), red=True)
        session.exitstatus = 1
