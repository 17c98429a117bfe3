"""Cluster-wide fill claims: which node reads an image from the origin right now.

One row per image in ``glance_cache_mw_fills`` (ours, revision 0003), holding the claimant's
``worker_self_reference_url`` and a lease. Exactly one node wins a race for a claim on every
backend, because each decision is one statement the database serialises:

* ``claim``: an INSERT (the primary key lets one through); a loser's UPDATE takes the row
  over only where ``lease_expires_at < now`` (or the row is already this node's: a claimant of
  ours that died without releasing it; a node's own workers never fill one image twice, their
  ``incomplete/`` file is exclusive). PostgreSQL re-checks the WHERE on the row version a
  concurrent UPDATE committed, InnoDB's UPDATE reads the newest committed row, SQLite
  serialises writers (BEGIN IMMEDIATE): after one taker, the lease is fresh and the others
  match nothing.
* ``steal``: an UPDATE ``WHERE node_url = :from``: one stealer changes node_url, the others
  then match nothing.

Times are naive UTC from this node's clock (``models.utcnow``); nodes need synchronised clocks
(NTP) to within a small part of the lease. Expired rows stay until the next claim takes them
over: ``filler`` and ``fillers`` ignore them. Every function takes ``engine=`` (default: the
configured engine), like db/cache_api.py.
"""

import datetime
import logging

import sqlalchemy as sa

from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import models

LOG = logging.getLogger(__name__)

_FILLS = models.fills
_CLAIM_ATTEMPTS = 3   # INSERT lost, then the row vanished (released) before our UPDATE: again


def _lease_end(now, lease_s):
    return now + datetime.timedelta(seconds=lease_s)


def _take_over(conn, image_id, node_url, lease_s, condition):
    """UPDATE the image's row to ours where ``condition`` holds; True if a row matched."""
    now = models.utcnow()
    result = conn.execute(
        _FILLS.update()
        .where(_FILLS.c.image_id == image_id, condition(now))
        .values(node_url=node_url, started_at=now, lease_expires_at=_lease_end(now, lease_s)))
    return result.rowcount == 1


def _try_insert(image_id, node_url, lease_s, engine):
    """True if our INSERT created the claim; False if a row for the image exists."""
    now = models.utcnow()
    try:
        with db_engine.writer(engine) as conn:
            conn.execute(_FILLS.insert().values(
                image_id=image_id, node_url=node_url, started_at=now,
                lease_expires_at=_lease_end(now, lease_s)))
    except sa.exc.IntegrityError:
        return False
    return True


def _exists(conn, image_id):
    return conn.execute(sa.select(_FILLS.c.image_id)
                        .where(_FILLS.c.image_id == image_id)).first() is not None


@db_engine.retry_on_deadlock
def claim(image_id, node_url, lease_s, *, engine=None):
    """Claim the cluster-wide fill of ``image_id`` for ``node_url`` for ``lease_s`` seconds.

    True if this node now holds the claim: it was free, its lease had expired, or it was
    already this node's. False if another node holds an unexpired claim."""
    for _ in range(_CLAIM_ATTEMPTS):
        if _try_insert(image_id, node_url, lease_s, engine):
            return True
        with db_engine.writer(engine) as conn:
            if _take_over(conn, image_id, node_url, lease_s, lambda now: sa.or_(
                    _FILLS.c.lease_expires_at < now, _FILLS.c.node_url == node_url)):
                return True
            if _exists(conn, image_id):
                return False
        # The holder released the row between our INSERT and UPDATE: the INSERT may win now.
    return False


@db_engine.retry_on_deadlock
def steal(image_id, node_url, from_node_url, lease_s, *, engine=None):
    """Take the claim from ``from_node_url`` (a claimant we saw fail), lease or not.

    Of several nodes stealing from the same claimant exactly one gets True. If the claim is
    gone altogether (released), this is ``claim``; if someone else holds it now, False."""
    with db_engine.writer(engine) as conn:
        if _take_over(conn, image_id, node_url, lease_s,
                      lambda now: _FILLS.c.node_url == from_node_url):
            return True
        if _exists(conn, image_id):
            return False
    return claim(image_id, node_url, lease_s, engine=engine)


@db_engine.retry_on_deadlock
def renew(image_id, node_url, lease_s, *, engine=None):
    """Extend our claim by ``lease_s`` seconds from now; False if it is no longer ours."""
    now = models.utcnow()
    with db_engine.writer(engine) as conn:
        result = conn.execute(
            _FILLS.update()
            .where(_FILLS.c.image_id == image_id, _FILLS.c.node_url == node_url)
            .values(lease_expires_at=_lease_end(now, lease_s)))
    return result.rowcount == 1


@db_engine.retry_on_deadlock
def release(image_id, node_url, *, engine=None):
    """Drop our claim on ``image_id``; a claim that another node holds now stays."""
    with db_engine.writer(engine) as conn:
        conn.execute(_FILLS.delete().where(_FILLS.c.image_id == image_id,
                                           _FILLS.c.node_url == node_url))


def filler(image_id, *, engine=None):
    """The URL of the node holding an unexpired claim on ``image_id``, or None."""
    with db_engine.reader(engine) as conn:
        return conn.execute(
            sa.select(_FILLS.c.node_url)
            .where(_FILLS.c.image_id == image_id,
                   _FILLS.c.lease_expires_at >= models.utcnow())).scalar()


def fillers(*, engine=None):
    """{image_id: node_url} of every unexpired claim."""
    with db_engine.reader(engine) as conn:
        rows = conn.execute(
            sa.select(_FILLS.c.image_id, _FILLS.c.node_url)
            .where(_FILLS.c.lease_expires_at >= models.utcnow())).all()
    return dict(rows)
