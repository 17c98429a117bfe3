"""Create and upgrade the schema with alembic: ``sync`` to the newest revision, ``version``.

Our revisions live in their own version table, so a database that Glance created (which has its
own ``alembic_version``) can be synced too: existing Glance tables are kept as they are.

The schema policy of the server (``prepare_database``): a SQLite file is created or upgraded in
place; a database server must have been synced with ``glance-cache-mw-manage db sync``.
"""

import os

import alembic.command
import alembic.config
import alembic.migration
import alembic.script
import alembic.util
import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import engine as db_engine

VERSION_TABLE = "glance_cache_mw_alembic_version"
_SCRIPT_LOCATION = os.path.join(os.path.dirname(__file__), "migrations")


def _config(connection):
    cfg = alembic.config.Config()
    cfg.set_main_option("script_location", _SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


def sqlite_path(engine):
    """The absolute path of ``engine``'s SQLite file, or None (an in-memory or server database)."""
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "",
                                                                               ":memory:"):
        return os.path.abspath(engine.url.database)
    return None


def sync(engine, revision="head"):
    """Upgrade the database behind ``engine`` to ``revision`` (default: the newest); a SQLite
    file's directory is created first."""
    path = sqlite_path(engine)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with engine.begin() as conn:
        alembic.command.upgrade(_config(conn), revision)


def version(engine):
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        context = alembic.migration.MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head():
    """The newest revision this package knows."""
    script = alembic.script.ScriptDirectory(_SCRIPT_LOCATION)
    return script.get_current_head()


def prepare_database(url):
    """Create/upgrade a SQLite schema in place; require a synced schema on a database server.

    Errors are GlanceExceptions that name the database (without its password).
    """
    engine = db_engine.create_engine(url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if engine.url.get_backend_name() == "sqlite":
            sync(engine)
            return
        current, newest = version(engine), head()
        if current != newest:
            raise exception.GlanceException(
                "database %s is at revision %s, this version needs %s: run "
                "glance-cache-mw-manage --config FILE db sync" % (where, current, newest))
    except sa.exc.DBAPIError as err:
        reason = " ".join(str(err.orig).split())   # drivers' messages span lines
        raise exception.GlanceException("database %s: %s" % (where, reason)) from None
    except (OSError, alembic.util.CommandError) as err:
        # e.g. a revision from a newer release of this package
        raise exception.GlanceException("database %s: %s" % (where, err)) from None
    finally:
        engine.dispose()
