"""Create and upgrade the schema with alembic: ``sync`` to the newest revision, ``version``.

Our revisions live in their own version table, so a database that Glance created (which has its
own ``alembic_version``) can be synced too: existing Glance tables are kept as they are.
"""

import os

import alembic.command
import alembic.config
import alembic.migration
import alembic.script

VERSION_TABLE = "glance_cache_mw_alembic_version"
_SCRIPT_LOCATION = os.path.join(os.path.dirname(__file__), "migrations")


def _config(connection):
    cfg = alembic.config.Config()
    cfg.set_main_option("script_location", _SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


def sync(engine, revision="head"):
    """Upgrade the database behind ``engine`` to ``revision`` (default: the newest)."""
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
