"""Maintenance's task locks across fork: a child forked while a task runs does not keep the
lock. The in-process tests are in tests/unit/test_maintenance.py, whose ``setup`` fixture this
uses."""

import time

from glance_cache_mw import maintenance as maintenance_mod
from tests.unit import cache_helpers as helpers
from tests.unit.test_maintenance import setup  # noqa: F401  (fixture)


def _sleep_after_start(started):
    started.set()
    time.sleep(helpers.WAIT_S)


def test_a_child_forked_during_a_task_does_not_keep_its_lock(setup):
    directory = setup.cache.driver.base_dir
    started = helpers.MP.Event()
    with maintenance_mod.task_lock(directory, "prune") as held:
        assert held
        child = helpers.MP.Process(target=_sleep_after_start, args=(started,))
        child.start()
        assert started.wait(helpers.WAIT_S)
    try:
        with maintenance_mod.task_lock(directory, "prune") as held_again:
            assert held_again   # the child's copy of the descriptor was closed at fork
    finally:
        child.terminate()
        child.join()
