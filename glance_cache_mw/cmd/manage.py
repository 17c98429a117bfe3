"""Administer the image database and the local image cache.

    glance-cache-mw-manage db sync | version
    glance-cache-mw-manage cache list [--format table|json]
    glance-cache-mw-manage cache queue ID | delete ID | nodes ID [--format table|json]
    glance-cache-mw-manage cache clear [--target cache|queue] [--format table|json]
    glance-cache-mw-manage cache stats [--format table|json]

The cache commands work on this node's cache directory (``image_cache_dir``) and database
directly, with or without the server running. ``queue`` accepts only images that exist and
are active; ``nodes`` (the nodes that cache an image, and the one filling it from the origin
now) needs the centralized_db driver. Exit status: 0 done, 1 an image that is
unknown or cannot be queued or deleted, 2 a malformed image id or bad configuration.

``stats`` shows the hit ratio and the bytes served from the cache and read from the origin (from
the server's metric files in ``metrics_dir``, counted since the server started), the cache's
fullness, its oldest entry and the top images by hits and by bytes saved (from the cache
metadata); with centralized_db also every node's entries, hits and bytes saved.
"""

import argparse
import datetime
import json
import os
import sys

import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.cmd import common
from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import engine as db_engine, migration
from glance_cache_mw.image_cache.drivers import ondisk

CLEAR_TARGETS = ("cache", "queue")


def build_parser():
    parser = common.build_parser(__doc__, prog="glance-cache-mw-manage")
    groups = parser.add_subparsers(dest="group", required=True, metavar="{db,cache}")
    db = groups.add_parser("db", help="image database schema")
    db_cmds = db.add_subparsers(dest="command", required=True, metavar="{sync,version}")
    db_cmds.add_parser("sync", help="create or upgrade the schema to the newest revision")
    db_cmds.add_parser("version", help="print the schema revision of the database")

    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--format", choices=("table", "json"), default="table",
                        help="human-readable table (default) or JSON for scripts")
    cache = groups.add_parser("cache", help="this node's image cache")
    cache_cmds = cache.add_subparsers(dest="command", required=True,
                                      metavar="{list,queue,delete,clear,nodes,stats}")
    cache_cmds.add_parser("list", parents=[output], help="list cached and queued images")
    for name, text in (("queue", "queue an active image for the prefetcher"),
                       ("delete", "remove an image from the cache and the queue"),
                       ("nodes", "list the nodes caching an image and the one filling it now "
                                 "(centralized_db driver)")):
        sub = cache_cmds.add_parser(name, parents=[output], help=text)
        sub.add_argument("image_id", metavar="ID")
    cache_cmds.add_parser("stats", parents=[output],
                          help="hit ratio, bytes saved, fullness and the top images")
    clear = cache_cmds.add_parser("clear", parents=[output],
                                  help="remove every cached and/or queued image")
    clear.add_argument("--target", choices=CLEAR_TARGETS,
                       help="only the cached images or only the queue (default: both)")
    return parser


@common.exits_cleanly
def main(argv=None):
    args = build_parser().parse_args(argv)
    conf = common.load_config(args)
    if args.group == "cache":
        return _cache(args, conf)
    return _db(args, conf)


def _db(args, conf):
    engine = db_engine.create_engine(conf.sql_connection)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.command == "sync":
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


def _is_missing_sqlite_file(engine):
    path = migration.sqlite_path(engine)
    return path is not None and not os.path.exists(path)


# -- cache ---------------------------------------------------------------------------------

def _cache(args, conf):
    from glance_cache_mw.image_cache import ImageCache

    if args.command in ("queue", "delete", "nodes"):
        try:
            ondisk.validate_image_id(args.image_id)
        except ondisk.InvalidImageId as err:
            sys.stderr.write("error: %s\n" % err)
            return 2
    cache = ImageCache.from_config(conf)   # an unusable driver: exit 2 (common.exit_status)
    try:
        return CACHE_COMMANDS[args.command](args, conf, cache)
    finally:
        cache.close()
        db_engine.dispose()


def _cache_list(args, conf, cache):
    cached, queued = cache.get_cached_images(), cache.get_queued_images()
    if args.format == "json":
        return _json({"cached_images": cached, "queued_images": queued})
    rows = [(e["image_id"], str(e["size"]), str(e["hits"]), _when(e["last_accessed"]),
             _when(e["last_modified"])) for e in cached]
    print("Cached images (%d, %d bytes):" % (len(cached), sum(e["size"] for e in cached)))
    _table(("ID", "SIZE", "HITS", "LAST ACCESSED (UTC)", "CACHED AT (UTC)"), rows)
    print("Queued images (%d, oldest first):" % len(queued))
    _table(("ID",), [(image_id,) for image_id in queued])
    return 0


def _cache_queue(args, conf, cache):
    from glance_cache_mw.db import api as db_api

    image_id = args.image_id
    try:
        image = db_api.configured(conf.sql_connection).image_get(RequestContext.admin(),
                                                                image_id)
    except exception.NotFound:
        return _fail("image %s does not exist" % image_id)
    except sa.exc.SQLAlchemyError as err:
        return _fail("cannot read image %s from the database: %s"
                     % (image_id, getattr(err, "orig", None) or err))
    if image["deleted"] or image["status"] != "active":
        return _fail("image %s is %s; only active images can be queued"
                     % (image_id, "deleted" if image["deleted"] else image["status"]))
    queued = cache.queue_image(image_id)
    if queued:
        state = "queued"
    elif cache.is_cached(image_id):
        state = "already cached"
    elif cache.is_being_cached(image_id):
        state = "being cached"
    else:
        state = "already queued"
    if args.format == "json":
        return _json({"image_id": image_id, "queued": queued, "state": state})
    print("image %s: %s" % (image_id, state))
    return 0


def _cache_delete(args, conf, cache):
    image_id = args.image_id
    was_cached, was_queued = cache.is_cached(image_id), cache.is_queued(image_id)
    if not (was_cached or was_queued):
        return _fail("image %s is neither cached nor queued on this node" % image_id)
    cache.delete_cached_image(image_id)
    cache.delete_queued_image(image_id)
    if args.format == "json":
        return _json({"image_id": image_id, "deleted_cached": was_cached,
                      "deleted_queued": was_queued})
    print("image %s: removed from the %s" % (
        image_id, " and the ".join(what for what, was in (("cache", was_cached),
                                                          ("queue", was_queued)) if was)))
    return 0


def _cache_clear(args, conf, cache):
    targets = (args.target,) if args.target else CLEAR_TARGETS
    cached = cache.delete_all_cached_images() if "cache" in targets else 0
    queued = cache.delete_all_queued_images() if "queue" in targets else 0
    if args.format == "json":
        return _json({"cached_images_deleted": cached, "queued_images_deleted": queued})
    print("removed %d cached and %d queued images" % (cached, queued))
    return 0


def _cache_nodes(args, conf, cache):
    try:
        nodes = cache.get_cached_nodes(args.image_id)
    except NotImplementedError:
        sys.stderr.write("error: 'cache nodes' needs image_cache_driver = centralized_db (the "
                         "%s driver only knows this node's cache)\n" % conf.image_cache_driver)
        return 2
    filling = cache.get_filling_node(args.image_id)
    if args.format == "json":
        return _json({"image_id": args.image_id, "nodes": nodes, "filling": filling})
    if not nodes:
        print("image %s is not cached on any node" % args.image_id)
    rows = [(node, "cached") for node in nodes]
    if filling is not None:
        rows.append((filling, "filling from the origin"))
    _table(("NODE", "STATE"), rows)
    return 0


def _cache_stats(args, conf, cache):
    from glance_cache_mw import stats

    result = stats.collect(cache, conf.metrics_dir, cache.get_node_summaries())
    result["node"] = conf.worker_self_reference_url
    if args.format == "json":
        return _json(result)
    _print_stats(result)
    return 0


def _print_stats(result):
    local, downloads = result["cache"], result["downloads"]
    ratio = result["hit_ratio"]
    print("Downloads since the server started (%s): %s; hit ratio %s"
          % (result["metrics_dir"], ", ".join("%s %d" % item for item in downloads.items()),
             "-" if ratio is None else "%.1f%%" % (100 * ratio)))
    print("Bytes served from the cache: %d; read from the origin: %d"
          % (result["bytes_served_from_cache"], result["bytes_read_from_origin"]))
    if result["evictions"]:
        print("Evictions: %s" % ", ".join("%s %d" % item for item in result["evictions"].items()))
    fullness = local["fullness"]
    print("Cache: %d images, %d of %d bytes (%s full), %d bytes free on disk, %d queued"
          % (local["entries"], local["size"], local["max_size"],
             "-" if fullness is None else "%.1f%%" % (100 * fullness), local["free_bytes"],
             local["queued_images"]))
    for label, key in (("Oldest entry", "oldest_entry"),
                       ("Least recently used", "least_recently_used")):
        entry = local[key]
        if entry:
            print("%s: %s (cached %s, last used %s)" % (label, entry["image_id"],
                  _when(entry["last_modified"]), _when(entry["last_accessed"])))
    for title, key in (("Top images by hits", "top_by_hits"),
                       ("Top images by bytes saved", "top_by_bytes_saved")):
        print("%s:" % title)
        _table(("ID", "HITS", "SIZE", "BYTES SAVED"),
               [(e["image_id"], str(e["hits"]), str(e["size"]), str(e["bytes_saved"]))
                for e in local[key]])
    if "cluster" in result:
        cluster = result["cluster"]
        print("Cluster (centralized_db): %d images, %d bytes, %d hits, %d bytes saved"
              % (cluster["entries"], cluster["size"], cluster["hits"], cluster["bytes_saved"]))
        _table(("NODE", "IMAGES", "SIZE", "HITS", "BYTES SAVED", "OLDEST (UTC)"),
               [(n["node_url"], str(n["entries"]), str(n["size"]), str(n["hits"]),
                 str(n["bytes_saved"]), _when(n["oldest"])) for n in cluster["nodes"]])


CACHE_COMMANDS = {"list": _cache_list, "queue": _cache_queue, "delete": _cache_delete,
                  "clear": _cache_clear, "nodes": _cache_nodes, "stats": _cache_stats}


def _fail(message):
    sys.stderr.write("error: %s\n" % message)
    return 1


def _json(value):
    print(json.dumps(value, indent=2, sort_keys=True))
    return 0


def _when(epoch):
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(header, rows):
    """Print ``rows`` under ``header`` in aligned columns (nothing but the header if empty)."""
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(len(header))]
    for row in [header] + list(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
