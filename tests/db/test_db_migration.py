"""The alembic migrations: they create exactly models.py, are idempotent, and keep a Glance DB."""

import os
import re
import uuid

import alembic.autogenerate
import alembic.migration
import pytest
import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import engine as db_engine, migration, models
from tests import dbfixtures


def test_migrated_schema_matches_models(scratch_db):
    with scratch_db.engine.connect() as conn:
        context = alembic.migration.MigrationContext.configure(
            conn, opts={"version_table": migration.VERSION_TABLE,
                        "compare_type": True})
        diffs = alembic.autogenerate.compare_metadata(context, models.metadata)
    # Ignore only our own version table, which is not part of the models.
    diffs = [d for d in diffs if not (d[0] == "remove_table"
                                      and d[1].name == migration.VERSION_TABLE)]
    assert diffs == []


def test_version_is_head_and_sync_is_idempotent(scratch_db):
    assert migration.version(scratch_db.engine) == migration.head()
    migration.sync(scratch_db.engine)
    assert migration.version(scratch_db.engine) == migration.head()


def test_sync_adopts_a_glance_database_and_keeps_its_rows(tmp_path):
    """A database created by Glance (image tables, its own alembic_version) keeps its data."""
    engine = sa.create_engine("sqlite:///%s" % (tmp_path / "glance.sqlite"))
    try:
        image_tables = [models.images, models.image_properties]
        models.metadata.create_all(engine, tables=image_tables)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32))")
            conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('2024_1_contract01')")
            conn.execute(models.images.insert().values(
                id="11111111-1111-1111-1111-111111111111", status="active",
                visibility="public", created_at=models.utcnow(), deleted=False))
        migration.sync(engine)
        names = set(sa.inspect(engine).get_table_names())
        assert {"node_reference", "cached_images", "image_tags"} <= names
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(models.images)).scalar() == 1
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() \
                == "2024_1_contract01"
        assert migration.version(engine) == migration.head()
    finally:
        engine.dispose()


def test_sqlite_gets_planner_statistics_and_analyze_keeps_working(tmp_path):
    """Without sqlite_stat1, SQLite takes the boolean `deleted` indexes as selective."""
    engine = db_engine.create_engine("sqlite:///%s" % (tmp_path / "stats.sqlite"))
    try:
        migration.sync(engine)
        with engine.begin() as conn:
            seeded = dict(conn.exec_driver_sql("SELECT idx, stat FROM sqlite_stat1").all())
            assert seeded["ix_images_deleted"] == "100000 50000"
            plan = " ".join(row[-1] for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM images WHERE deleted = 0 "
                "ORDER BY created_at DESC LIMIT 25"))
            assert "ix_images_deleted" not in plan
            conn.exec_driver_sql("ANALYZE")   # real statistics replace the seeded ones
    finally:
        engine.dispose()


def test_a_forked_child_never_uses_the_parents_connections(db):
    """The child gets connections of its own; the parent's session keeps working."""
    if db.backend == "sqlite":
        query = "SELECT 1"
    elif db.backend == "postgresql":
        query = "SELECT pg_backend_pid()"
    else:
        query = "SELECT CONNECTION_ID()"
    engine = db_engine.get_engine()
    with engine.connect() as conn:
        parent_session = conn.exec_driver_sql(query).scalar()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: report its session id, then leave without running atexit hooks
        try:
            with db_engine.get_engine().connect() as conn:
                os.write(write, str(conn.exec_driver_sql(query).scalar()).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_session = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    with engine.connect() as conn:
        assert conn.exec_driver_sql(query).scalar() == parent_session
    if db.backend != "sqlite":
        assert child_session and child_session != str(parent_session)


# -- prepare_database: the server's schema policy -----------------------------------------

def test_prepare_database_creates_a_sqlite_file_and_its_directories(tmp_path):
    path = tmp_path / "not" / "yet" / "images.sqlite"
    migration.prepare_database("sqlite:///%s" % path)
    engine = db_engine.create_engine("sqlite:///%s" % path)
    try:
        assert migration.version(engine) == migration.head()
    finally:
        engine.dispose()


def test_prepare_database_accepts_a_synced_database(scratch_db):
    migration.prepare_database(scratch_db.url)


def test_prepare_database_names_the_database_it_cannot_create(tmp_path):
    (tmp_path / "a-file").write_text("in the way of the directory")
    url = "sqlite:///%s" % (tmp_path / "a-file" / "images.sqlite")
    with pytest.raises(exception.GlanceException, match="database %s: " % re.escape(url)):
        migration.prepare_database(url)


@pytest.mark.realdb
def test_prepare_database_refuses_an_unsynced_server_database():
    admin_url = dbfixtures.server_url("postgresql")
    name = "gcm_test_%s" % uuid.uuid4().hex[:12]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE %s" % name)
        url = admin_url.set(database=name)
        with pytest.raises(exception.GlanceException) as caught:
            migration.prepare_database(url.render_as_string(hide_password=False))
        message = str(caught.value)
        assert message == ("database %s is at revision None, this version needs %s: run "
                           "glance-cache-mw-manage --config FILE db sync"
                           % (url.render_as_string(hide_password=True), migration.head()))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        admin.dispose()
