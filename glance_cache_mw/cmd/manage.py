"""Administer the image database and the cache: glance-cache-mw-manage db sync|version."""

import os
import sys

import sqlalchemy as sa

from glance_cache_mw.cmd import common
from glance_cache_mw.db import engine as db_engine, migration


def build_parser():
    parser = common.build_parser(__doc__, prog="glance-cache-mw-manage")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{db}")
    db = groups.add_parser("db", help="image database schema")
    db_cmds = db.add_subparsers(dest="command", required=True, metavar="{sync,version}")
    db_cmds.add_parser("sync", help="create or upgrade the schema to the newest revision")
    db_cmds.add_parser("version", help="print the schema revision of the database")
    return parser


@common.exits_cleanly
def main(argv=None):
    args = build_parser().parse_args(argv)
    conf = common.load_config(args)
    engine = db_engine.create_engine(conf.sql_connection)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.command == "sync":
            _ensure_sqlite_dir(engine)
            migration.sync(engine)
            print("database at revision %s (%s)" % (migration.version(engine), where))
        elif _is_missing_sqlite_file(engine):
            print("empty (no database file yet; run: glance-cache-mw-manage db sync)")
        else:
            print(migration.version(engine) or "empty (run: glance-cache-mw-manage db sync)")
    except sa.exc.DBAPIError as err:
        sys.stderr.write("error: database %s: %s\n" % (where, err.orig))
        return 1
    finally:
        engine.dispose()
    return 0


def _sqlite_path(engine):
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "",
                                                                               ":memory:"):
        return os.path.abspath(engine.url.database)
    return None


def _ensure_sqlite_dir(engine):
    path = _sqlite_path(engine)
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)


def _is_missing_sqlite_file(engine):
    path = _sqlite_path(engine)
    return path is not None and not os.path.exists(path)


if __name__ == "__main__":
    sys.exit(main())
