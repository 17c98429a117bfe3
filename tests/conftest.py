"""Shared fixtures: a configured image database on every backend, and the CI skip guard."""

import os

import pytest

from glance_cache_mw.db import engine as db_engine
from tests import dbfixtures

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
