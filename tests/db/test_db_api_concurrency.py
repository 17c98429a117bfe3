"""image_update(from_state=...) is a real compare-and-swap under concurrent writers (spec §4.2).

Threads line up on a Barrier and fire at once; on every backend exactly one transition wins
and every loser gets Conflict (never a raw database error such as a deadlock).
"""

import threading

import pytest

from glance_cache_mw import exception
from glance_cache_mw.db import api
from tests.db.helpers import admin_context, create_image, new_id, user_context

pytestmark = pytest.mark.usefixtures("db")

THREADS = 8
ROUNDS = 5
HANG_GUARD_S = 120  # only so that a deadlocked run fails instead of hanging


def _race(calls):
    """Run every zero-argument callable in its own thread, released together.

    Returns a list of ("ok", result) or ("error", exception) in call order.
    """
    barrier = threading.Barrier(len(calls))
    outcomes = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=HANG_GUARD_S)
            outcomes[index] = ("ok", call())
        except Exception as err:  # recorded and asserted on by the test
            outcomes[index] = ("error", err)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_S)
    assert not any(thread.is_alive() for thread in threads), "a racing thread never finished"
    return outcomes


def _split(outcomes):
    wins = [value for kind, value in outcomes if kind == "ok"]
    errors = [value for kind, value in outcomes if kind == "error"]
    return wins, errors


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_from_state_lets_exactly_one_writer_win(round_):
    image = create_image(status="saving", owner="tenant1")
    context = user_context("tenant1")
    outcomes = _race([
        lambda: api.image_update(context, image["id"], {"status": "active"},
                                 from_state="saving")
        for _ in range(THREADS)])
    wins, errors = _split(outcomes)
    assert len(wins) == 1, outcomes
    assert wins[0]["status"] == "active"
    assert len(errors) == THREADS - 1
    assert all(type(err) is exception.Conflict for err in errors), errors
    assert api.image_get(admin_context(), image["id"])["status"] == "active"


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_from_state_competing_targets_agree_with_the_winner(round_):
    image = create_image(status="saving")
    targets = ["active" if i % 2 else "killed" for i in range(THREADS)]
    outcomes = _race([
        (lambda target=target: api.image_update(
            admin_context(), image["id"], {"status": target, "name": target},
            from_state="saving"))
        for target in targets])
    wins, errors = _split(outcomes)
    assert len(wins) == 1, outcomes
    assert all(type(err) is exception.Conflict for err in errors), errors
    final = api.image_get(admin_context(), image["id"])
    # the row holds the winner's whole update, not a mix of two writers
    assert final["status"] == wins[0]["status"] == final["name"]


def test_from_state_chain_of_transitions_each_won_once():
    image = create_image(status="queued")
    steps = [("queued", "saving"), ("saving", "active"), ("active", "deactivated")]
    for from_state, to_state in steps:
        outcomes = _race([
            lambda f=from_state, t=to_state: api.image_update(
                admin_context(), image["id"], {"status": t}, from_state=f)
            for _ in range(THREADS)])
        wins, errors = _split(outcomes)
        assert [w["status"] for w in wins] == [to_state], outcomes
        assert all(type(err) is exception.Conflict for err in errors), errors
    assert api.image_get(admin_context(), image["id"])["status"] == "deactivated"


def test_concurrent_transitions_of_different_images_all_succeed():
    made = [create_image(status="saving")["id"] for _ in range(THREADS)]
    outcomes = _race([
        lambda image_id=image_id: api.image_update(
            admin_context(), image_id, {"status": "active"}, from_state="saving")
        for image_id in made])
    assert [kind for kind, _ in outcomes] == ["ok"] * THREADS, outcomes
    for image_id in made:
        assert api.image_get(admin_context(), image_id)["status"] == "active"


def test_concurrent_create_with_one_id_is_one_image():
    image_id = new_id()
    outcomes = _race([
        lambda n=n: api.image_create(admin_context(), {"id": image_id, "status": "queued",
                                                       "name": "racer%d" % n})
        for n in range(THREADS)])
    wins, errors = _split(outcomes)
    assert len(wins) == 1, outcomes
    assert all(type(err) is exception.Duplicate for err in errors), errors
    assert api.image_get(admin_context(), image_id)["name"] == wins[0]["name"]
