"""Cluster-wide fill claims (db/fill_claims.py) on SQLite, PostgreSQL and MariaDB.

Races: threads (each with its own pooled connection) line up on a Barrier and fire at once
(tests/db/helpers.race); exactly one wins on every backend. An expired lease is made by
writing the row's lease_expires_at into the past, never by waiting.
"""

import datetime

import pytest

from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import fill_claims, models
from tests.db.helpers import new_id, race

pytestmark = pytest.mark.usefixtures("db")

THREADS = 8
ROUNDS = 3
LEASE_S = 60
NODE_A, NODE_B = "http://node-a:9292", "http://node-b:9292"


def _race(calls):
    """The results of ``calls`` raced in threads (tests/db/helpers.race); none may fail."""
    outcomes = race(calls)
    assert all(kind == "ok" and isinstance(value, bool) for kind, value in outcomes), outcomes
    return [value for _, value in outcomes]


def _nodes(count):
    return ["http://node-%d:9292" % index for index in range(count)]


def _expire(image_id):
    """Move the claim's lease into the past, as if its node had stopped renewing it."""
    past = models.utcnow() - datetime.timedelta(seconds=3600)
    with db_engine.writer() as conn:
        conn.execute(models.fills.update().where(models.fills.c.image_id == image_id)
                     .values(lease_expires_at=past))


def _winner(results, nodes):
    assert results.count(True) == 1, results
    return nodes[results.index(True)]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_claims_have_exactly_one_winner(round_):
    image_id, nodes = new_id(), _nodes(THREADS)
    results = _race([lambda node=node: fill_claims.claim(image_id, node, LEASE_S)
                     for node in nodes])
    assert fill_claims.filler(image_id) == _winner(results, nodes)


def test_a_held_claim_is_refused_and_survives():
    image_id = new_id()
    assert fill_claims.claim(image_id, NODE_A, LEASE_S) is True
    assert fill_claims.claim(image_id, NODE_B, LEASE_S) is False
    assert fill_claims.filler(image_id) == NODE_A


def test_a_node_may_claim_again_what_it_holds():
    """A claimant of this node died without releasing: its next fill needs no lease wait."""
    image_id = new_id()
    assert fill_claims.claim(image_id, NODE_A, LEASE_S) is True
    assert fill_claims.claim(image_id, NODE_A, LEASE_S) is True
    assert fill_claims.filler(image_id) == NODE_A


def test_an_expired_claim_is_forgotten_and_taken_over():
    image_id = new_id()
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    _expire(image_id)
    assert fill_claims.filler(image_id) is None
    assert fill_claims.fillers() == {}
    assert fill_claims.claim(image_id, NODE_B, LEASE_S) is True
    assert fill_claims.filler(image_id) == NODE_B
    assert fill_claims.renew(image_id, NODE_A, LEASE_S) is False


def test_concurrent_takeovers_of_an_expired_claim_have_exactly_one_winner():
    image_id, nodes = new_id(), _nodes(THREADS)
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    _expire(image_id)
    results = _race([lambda node=node: fill_claims.claim(image_id, node, LEASE_S)
                     for node in nodes])
    assert fill_claims.filler(image_id) == _winner(results, nodes)


def test_concurrent_steals_from_a_failed_claimant_have_exactly_one_winner():
    image_id, nodes = new_id(), _nodes(THREADS)
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    results = _race([lambda node=node: fill_claims.steal(image_id, node, NODE_A, LEASE_S)
                     for node in nodes])
    assert fill_claims.filler(image_id) == _winner(results, nodes)


def test_steal_from_a_node_that_no_longer_holds_the_claim_fails():
    image_id = new_id()
    fill_claims.claim(image_id, NODE_B, LEASE_S)
    assert fill_claims.steal(image_id, "http://node-c:9292", NODE_A, LEASE_S) is False
    assert fill_claims.filler(image_id) == NODE_B


def test_steal_of_a_released_claim_claims_it():
    image_id = new_id()
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    fill_claims.release(image_id, NODE_A)
    assert fill_claims.steal(image_id, NODE_B, NODE_A, LEASE_S) is True
    assert fill_claims.filler(image_id) == NODE_B


def test_renew_keeps_our_claim_and_is_false_after_a_steal():
    image_id = new_id()
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    _expire(image_id)
    assert fill_claims.renew(image_id, NODE_A, LEASE_S) is True   # nobody took it: still ours
    assert fill_claims.filler(image_id) == NODE_A
    assert fill_claims.steal(image_id, NODE_B, NODE_A, LEASE_S) is True
    assert fill_claims.renew(image_id, NODE_A, LEASE_S) is False
    assert fill_claims.filler(image_id) == NODE_B


def test_renew_of_no_claim_is_false():
    assert fill_claims.renew(new_id(), NODE_A, LEASE_S) is False


def test_release_drops_only_our_claim():
    image_id = new_id()
    fill_claims.claim(image_id, NODE_A, LEASE_S)
    fill_claims.release(image_id, NODE_B)
    assert fill_claims.filler(image_id) == NODE_A
    fill_claims.release(image_id, NODE_A)
    assert fill_claims.filler(image_id) is None
    assert fill_claims.claim(image_id, NODE_B, LEASE_S) is True


def test_fillers_lists_unexpired_claims():
    first, second, expired = new_id(), new_id(), new_id()
    fill_claims.claim(first, NODE_A, LEASE_S)
    fill_claims.claim(second, NODE_B, LEASE_S)
    fill_claims.claim(expired, NODE_A, LEASE_S)
    _expire(expired)
    assert fill_claims.fillers() == {first: NODE_A, second: NODE_B}


def test_functions_take_an_engine(db):
    """engine= selects the database without the configured engine (like cache_api)."""
    image_id = new_id()
    engine = db.engine
    assert fill_claims.claim(image_id, NODE_A, LEASE_S, engine=engine) is True
    assert fill_claims.renew(image_id, NODE_A, LEASE_S, engine=engine) is True
    assert fill_claims.filler(image_id, engine=engine) == NODE_A
    assert fill_claims.fillers(engine=engine) == {image_id: NODE_A}
    fill_claims.release(image_id, NODE_A, engine=engine)
    assert fill_claims.filler(image_id, engine=engine) is None
