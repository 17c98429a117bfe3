"""Shared-cache bookkeeping in the main database: which node caches which image, and how it is used.

These are Glance's centralized_db functions (glance/db/sqlalchemy/api.py) with Glance's names,
keyed by ``(image_id, node_url)``, minus Glance's defects:

* ``get_least_recently_accessed`` returns ``None`` when the node has no rows (W2);
* ``get_cached_images`` is ordered by image id and reads naive UTC as UTC, not local time (W19);
* ``get_least_recently_accessed_entries`` gives a pruner every entry in LRU order in one query,
  and ``delete_cached_images`` removes its victims in one transaction (W3);
* ``update_hit_counts`` records a batch of hits in one transaction, so a driver can buffer hits
  and the hit path never waits on a write lock.

Every function takes ``engine=`` (default ``engine.get_engine()``) and no request context (these
rows are the cache's own, not the caller's). Arguments are ``image_id`` then ``node_url``
everywhere; Glance put the node first in ``insert_cache_details`` and
``is_image_cached_for_node``, so call those by keyword when porting code. Times go in as naive
UTC datetimes, aware datetimes or epoch seconds, and come out as epoch seconds (floats).
"""

import datetime
import itertools
import logging

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from glance_cache_mw import exception
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import models

LOG = logging.getLogger(__name__)

_NODES = models.node_reference
_CACHED = models.cached_images
_BATCH_ROWS = 500  # rows per IN list / executemany chunk: well under every backend's limits

_EPOCH = datetime.datetime(1970, 1, 1)  # naive UTC in, epoch out: never local time (W19)
_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def _to_db_time(value):
    """Naive UTC datetime for the DB from None (now), epoch seconds or a datetime."""
    if value is None:
        return models.utcnow()
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def _node_id_of(node_url):
    return (sa.select(_NODES.c.node_reference_id)
            .where(_NODES.c.node_reference_url == node_url)
            .scalar_subquery())


def _insert_ignoring_duplicates(conn, table):
    """An INSERT that skips rows violating a unique key (and only those) on every backend."""
    dialect = conn.dialect.name
    if dialect in _DIALECT_INSERTS:
        return _DIALECT_INSERTS[dialect](table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        # Not INSERT IGNORE: that would also turn bad data and FK failures into warnings.
        key = table.primary_key.columns.values()[0]
        return mysql.insert(table).on_duplicate_key_update({key.name: key})
    raise exception.InvalidConfiguration(reason="unsupported database %r" % dialect)


def _insert_replacing(conn):
    """An INSERT into cached_images that overwrites the node's existing row for the image."""
    dialect = conn.dialect.name
    columns = ("size", "checksum", "hits", "last_accessed", "last_modified")
    if dialect in _DIALECT_INSERTS:
        stmt = _DIALECT_INSERTS[dialect](_CACHED)
        return stmt.on_conflict_do_update(
            index_elements=[_CACHED.c.image_id, _CACHED.c.node_reference_id],
            set_={name: stmt.excluded[name] for name in columns})
    stmt = mysql.insert(_CACHED)
    return stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in columns})


def _chunks(items, size=_BATCH_ROWS):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


_ENTRY_COLUMNS = (_CACHED.c.id, _CACHED.c.image_id, _CACHED.c.last_accessed,
                  _CACHED.c.last_modified, _CACHED.c.size, _CACHED.c.hits, _CACHED.c.checksum)


def _entries(rows):
    """Dicts with Glance's keys from rows of _ENTRY_COLUMNS (tuple unpacking: 100k rows)."""
    epoch = _EPOCH
    return [{"id": row_id, "image_id": image_id,
             "last_accessed": (accessed - epoch).total_seconds(),
             "last_modified": (modified - epoch).total_seconds(),
             "size": size, "hits": hits, "checksum": checksum}
            for row_id, image_id, accessed, modified, size, hits, checksum in rows]


@db_engine.retry_on_deadlock
def node_reference_create(node_url, *, engine=None):
    """Register a node and return its row; an existing node is returned as it is (no Duplicate)."""
    with db_engine.writer(engine) as conn:
        conn.execute(_insert_ignoring_duplicates(conn, _NODES),
                     {"node_reference_url": node_url})
        row = conn.execute(sa.select(_NODES).where(
            _NODES.c.node_reference_url == node_url)).one()
    return dict(row._mapping)


def node_reference_get_by_url(node_url, *, engine=None):
    """The node's row as a dict; NotFound if no node has this URL."""
    with db_engine.reader(engine) as conn:
        row = conn.execute(sa.select(_NODES).where(
            _NODES.c.node_reference_url == node_url)).one_or_none()
    if row is None:
        raise exception.NotFound("No node reference with URL %s" % node_url)
    return dict(row._mapping)


@db_engine.retry_on_deadlock
def node_reference_delete(node_url, *, engine=None):
    """Forget a decommissioned node and all its cache rows; returns how many rows went."""
    with db_engine.writer(engine) as conn:
        removed = conn.execute(_CACHED.delete().where(
            _CACHED.c.node_reference_id == _node_id_of(node_url))).rowcount
        conn.execute(_NODES.delete().where(_NODES.c.node_reference_url == node_url))
    return removed


def _require_node_id(conn, node_url):
    node_id = conn.execute(sa.select(_node_id_of(node_url))).scalar()
    if node_id is None:
        raise exception.NotFound("No node reference with URL %s" % node_url)
    return node_id


def _cache_row(node_id, entry, now):
    return {
        "image_id": entry["image_id"],
        "node_reference_id": node_id,
        "size": entry["size"],
        "checksum": entry.get("checksum"),
        "hits": entry.get("hits") or 0,
        "last_accessed": _to_db_time(entry.get("last_accessed") or now),
        "last_modified": _to_db_time(entry.get("last_modified") or now),
    }


@db_engine.retry_on_deadlock
def insert_cache_details(image_id, node_url, size, checksum=None, last_accessed=None, *,
                         last_modified=None, hits=0, replace=False, engine=None):
    """Record that ``node_url`` caches ``image_id``; NotFound for an unknown node.

    A row that already exists is left as it is (Glance ignores the duplicate too), unless
    ``replace``: then it takes the new values (a fresh copy of the image was committed).
    """
    entry = {"image_id": image_id, "size": size, "checksum": checksum, "hits": hits,
             "last_accessed": last_accessed, "last_modified": last_modified}
    with db_engine.writer(engine) as conn:
        node_id = _require_node_id(conn, node_url)
        stmt = (_insert_replacing(conn) if replace
                else _insert_ignoring_duplicates(conn, _CACHED))
        conn.execute(stmt, _cache_row(node_id, entry, models.utcnow()))


@db_engine.retry_on_deadlock
def insert_many_cache_details(node_url, entries, *, engine=None):
    """Bulk :func:`insert_cache_details` in one transaction (migrations, benchmarks).

    ``entries`` are dicts with ``image_id`` and ``size``, optionally ``checksum``, ``hits``,
    ``last_accessed`` and ``last_modified``. Existing rows are left as they are.
    """
    now = models.utcnow()
    with db_engine.writer(engine) as conn:
        node_id = _require_node_id(conn, node_url)
        stmt = _insert_ignoring_duplicates(conn, _CACHED)
        for chunk in _chunks(entries, 5000):
            conn.execute(stmt, [_cache_row(node_id, entry, now) for entry in chunk])


def update_hit_count(image_id, node_url, *, accessed_at=None, engine=None):
    """One more hit and a fresh last_accessed; False if the node has no row for the image."""
    return update_hit_counts(node_url, {image_id: (1, accessed_at)}, engine=engine) > 0


@db_engine.retry_on_deadlock
def update_hit_counts(node_url, hits, *, engine=None):
    """Record a batch of hits in one transaction; returns how many rows were updated.

    ``hits`` maps image_id to ``(count, last_accessed)`` (the drivers' batch format;
    ``last_accessed`` may be None for now). last_accessed only moves forward, so batches may
    arrive out of order. Rows are updated in image-id order so that concurrent batches cannot
    deadlock. Images without a row are skipped.
    """
    now = models.utcnow()
    totals = {image_id: (count, _to_db_time(accessed_at or now))
              for image_id, (count, accessed_at) in hits.items()}
    if not totals:
        return 0
    at = sa.bindparam("b_at", type_=sa.DateTime)
    stmt = (_CACHED.update()
            .where(_CACHED.c.node_reference_id == sa.bindparam("b_node"),
                   _CACHED.c.image_id == sa.bindparam("b_image_id"))
            .values(hits=_CACHED.c.hits + sa.bindparam("b_hits", type_=sa.Integer),
                    last_accessed=sa.case((_CACHED.c.last_accessed < at, at),
                                          else_=_CACHED.c.last_accessed)))
    updated = 0
    with db_engine.writer(engine) as conn:
        node_id = conn.execute(sa.select(_node_id_of(node_url))).scalar()
        if node_id is None:
            LOG.debug("dropping %d hits: no node reference %s", len(totals), node_url)
            return 0
        for chunk in _chunks(sorted(totals.items())):
            params = [{"b_node": node_id, "b_image_id": image_id, "b_hits": count, "b_at": latest}
                      for image_id, (count, latest) in chunk]
            result = conn.execute(stmt, params)
            updated += result.rowcount if result.rowcount >= 0 else len(params)
    return updated


def delete_cached_image(image_id, node_url, *, engine=None):
    """Forget this node's row for the image; returns True if there was one."""
    return delete_cached_images([image_id], node_url, engine=engine) > 0


@db_engine.retry_on_deadlock
def delete_cached_images(image_ids, node_url, *, engine=None):
    """Forget this node's rows for many images in one transaction; returns how many went."""
    removed = 0
    with db_engine.writer(engine) as conn:
        node_id = conn.execute(sa.select(_node_id_of(node_url))).scalar()
        if node_id is None:
            return 0
        for chunk in _chunks(sorted(set(image_ids))):
            removed += conn.execute(_CACHED.delete().where(
                _CACHED.c.node_reference_id == node_id,
                _CACHED.c.image_id.in_(chunk))).rowcount
    return removed


@db_engine.retry_on_deadlock
def delete_all_cached_images(node_url, *, engine=None):
    """Forget every row of this node (other nodes keep theirs); returns how many went."""
    with db_engine.writer(engine) as conn:
        return conn.execute(_CACHED.delete().where(
            _CACHED.c.node_reference_id == _node_id_of(node_url))).rowcount


def get_cached_images(node_url, *, engine=None):
    """This node's entries ordered by image id: dicts with Glance's keys, epoch-second times."""
    with db_engine.reader(engine) as conn:
        rows = conn.execute(sa.select(*_ENTRY_COLUMNS)
                            .where(_CACHED.c.node_reference_id == _node_id_of(node_url))
                            .order_by(_CACHED.c.image_id)).all()
    return _entries(rows)


def get_cached_image(image_id, node_url, *, engine=None):
    """This node's entry for the image (as in get_cached_images), or None."""
    with db_engine.reader(engine) as conn:
        row = conn.execute(sa.select(*_ENTRY_COLUMNS).where(
            _CACHED.c.node_reference_id == _node_id_of(node_url),
            _CACHED.c.image_id == image_id)).one_or_none()
    return None if row is None else _entries([row])[0]


def get_least_recently_accessed_entries(node_url, *, limit=None, engine=None):
    """This node's entries, least recently accessed first, in one query (for one-pass pruning).

    Ties on last_accessed (MySQL DATETIME has whole seconds) go to the older row.
    """
    query = (sa.select(*_ENTRY_COLUMNS)
             .where(_CACHED.c.node_reference_id == _node_id_of(node_url))
             .order_by(_CACHED.c.last_accessed, _CACHED.c.id))
    if limit is not None:
        query = query.limit(limit)
    with db_engine.reader(engine) as conn:
        rows = conn.execute(query).all()
    return _entries(rows)


def get_least_recently_accessed(node_url, *, engine=None):
    """The image id this node used least recently, or None when it has no entries."""
    entries = get_least_recently_accessed_entries(node_url, limit=1, engine=engine)
    return entries[0]["image_id"] if entries else None


def get_hit_count(image_id, node_url, *, engine=None):
    """Hits this node recorded for the image; 0 when it has no row."""
    with db_engine.reader(engine) as conn:
        hits = conn.execute(sa.select(_CACHED.c.hits).where(
            _CACHED.c.node_reference_id == _node_id_of(node_url),
            _CACHED.c.image_id == image_id)).scalar()
    return hits or 0


def get_cached_nodes(image_id, *, engine=None):
    """URLs of every node that has the image cached, sorted."""
    query = (sa.select(_NODES.c.node_reference_url)
             .join(_CACHED, _CACHED.c.node_reference_id == _NODES.c.node_reference_id)
             .where(_CACHED.c.image_id == image_id)
             .order_by(_NODES.c.node_reference_url))
    with db_engine.reader(engine) as conn:
        return list(conn.execute(query).scalars())


def is_image_cached_for_node(image_id, node_url, *, engine=None):
    """True if this node has a row for the image (arguments in this module's usual order)."""
    with db_engine.reader(engine) as conn:
        found = conn.execute(sa.select(_CACHED.c.id).where(
            _CACHED.c.node_reference_id == _node_id_of(node_url),
            _CACHED.c.image_id == image_id)).first()
    return found is not None


def get_stale_cached_images(node_url, *, engine=None):
    """Ids this node caches whose image is gone, deleted or not active (to evict them), sorted."""
    images = models.images
    usable = sa.select(images.c.id).where(
        images.c.id == _CACHED.c.image_id,
        images.c.deleted == sa.false(),
        images.c.status == "active")
    query = (sa.select(_CACHED.c.image_id)
             .where(_CACHED.c.node_reference_id == _node_id_of(node_url), ~usable.exists())
             .order_by(_CACHED.c.image_id))
    with db_engine.reader(engine) as conn:
        return list(conn.execute(query).scalars())


def get_node_summaries(*, engine=None):
    """Per node (every registered one, ordered by URL): node_url, entries, size, hits,
    bytes_saved (sum of hits x size) and oldest (epoch seconds of the oldest commit, or None)."""
    hits = sa.func.coalesce(sa.func.sum(_CACHED.c.hits), 0)
    query = (sa.select(_NODES.c.node_reference_url, sa.func.count(_CACHED.c.id),
                       sa.func.coalesce(sa.func.sum(_CACHED.c.size), 0), hits,
                       sa.func.coalesce(sa.func.sum(_CACHED.c.hits * _CACHED.c.size), 0),
                       sa.func.min(_CACHED.c.last_modified))
             .select_from(_NODES.outerjoin(
                 _CACHED, _CACHED.c.node_reference_id == _NODES.c.node_reference_id))
             .group_by(_NODES.c.node_reference_url)
             .order_by(_NODES.c.node_reference_url))
    with db_engine.reader(engine) as conn:
        rows = conn.execute(query).all()
    return [{"node_url": url, "entries": int(entries), "size": int(size), "hits": int(hits),
             "bytes_saved": int(saved),
             "oldest": None if oldest is None else (oldest - _EPOCH).total_seconds()}
            for url, entries, size, hits, saved, oldest in rows]
