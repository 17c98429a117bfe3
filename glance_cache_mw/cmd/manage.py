"""Administer the image database and the cache: glance-cache-mw-manage db sync|version."""

import sys

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
    try:
        if args.command == "sync":
            _ensure_sqlite_dir(engine)
            migration.sync(engine)
            print("database at revision %s (%s)"
                  % (migration.version(engine), engine.url.render_as_string(hide_password=True)))
        else:
            print(migration.version(engine) or "empty (run: glance-cache-mw-manage db sync)")
    finally:
        engine.dispose()
    return 0


def _ensure_sqlite_dir(engine):
    import os
    if engine.url.get_backend_name() == "sqlite" and engine.url.database:
        os.makedirs(os.path.dirname(os.path.abspath(engine.url.database)), exist_ok=True)


if __name__ == "__main__":
    sys.exit(main())
