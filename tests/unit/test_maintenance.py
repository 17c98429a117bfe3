"""Maintenance (maintenance.py) on a real cache directory and a SQLite image database: its
passes (prefetch, evict_gone, clean), task locks and the pass thread. The prefetcher driven
directly is in test_prefetcher.py."""

import hashlib
import io
import logging
import os
import threading

import pytest

from glance_cache_mw import maintenance as maintenance_mod
from glance_cache_mw import prefetcher as prefetcher_mod
from glance_cache_mw import store as store_mod
from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import api as db_api
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import migration
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.maintenance import Maintenance
from tests.unit import cache_helpers as helpers

ADMIN = RequestContext.admin()


class Setup:
    """A cache, a file store and an image database, all in tmp_path."""

    def __init__(self, tmp_path, workers=2, **overrides):
        db_engine.configure("sqlite:///%s" % (tmp_path / "images.sqlite"))
        migration.sync(db_engine.get_engine())
        self.cache = helpers.make_cache(tmp_path, **overrides)
        self.store = store_mod.FileStore(str(tmp_path / "images"), chunk_size=4096)
        self.maintenance = Maintenance(self.cache, db_api, self.store, workers=workers)

    def add_image(self, image_id, size=20000, status="active", corrupt=False, stored=True,
                  queue=True):
        data = helpers.body(size, image_id.encode())
        values = {"id": image_id, "status": status, "size": size,
                  **helpers.hashes(data)}
        db_api.image_create(ADMIN, values)
        if stored:
            self.store.add(image_id, io.BytesIO(data[:-1] + b"!" if corrupt else data))
        if queue:
            assert self.cache.queue_image(image_id)
        return data

    def cached_ids(self):
        return [entry["image_id"] for entry in self.cache.get_cached_images()]

    def close(self):
        self.maintenance.close()
        self.cache.close()
        db_engine.dispose()


@pytest.fixture
def setup(tmp_path):
    instance = Setup(tmp_path)
    yield instance
    instance.close()


def test_prefetch_caches_good_images_and_reports_the_broken_ones(setup, caplog):
    good = {image_id: setup.add_image(image_id) for image_id in ("good-1", "good-2", "good-3")}
    setup.add_image("corrupt", corrupt=True)
    setup.add_image("no-data", stored=False)
    result = setup.maintenance.prefetch_once()
    assert result == prefetcher_mod.PrefetchResult(
        fetched=3, failed=2, dropped=0, skipped=0, interrupted=0)
    assert setup.cached_ids() == sorted(good)
    for image_id, data in good.items():
        with setup.cache.open_hit(image_id) as handle:
            assert handle.read() == data
    assert setup.cache.get_queued_images() == []   # failed images are dropped, see docstring
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("corrupt" in line and "does not match" in line for line in errors)
    assert any("no-data" in line and "no data in the store" in line for line in errors)
    assert not os.listdir(setup.cache.driver.get_path(ondisk.INCOMPLETE))


def test_prefetch_drops_images_that_are_gone_deleted_or_not_active(setup, caplog):
    setup.add_image("deactivated")
    db_api.image_update(ADMIN, "deactivated", {"status": "deactivated"})
    setup.add_image("deleted")
    db_api.image_destroy(ADMIN, "deleted")
    setup.add_image("saving", status="saving")
    setup.cache.queue_image("never-existed")
    result = setup.maintenance.prefetch_once()
    assert (result.fetched, result.failed, result.dropped) == (0, 0, 4)
    assert setup.cache.get_queued_images() == [] and setup.cached_ids() == []
    dropped = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for image_id in ("deactivated", "deleted", "saving", "never-existed"):
        assert image_id in dropped


def test_prefetch_leaves_an_image_being_filled_queued(setup):
    setup.add_image("busy")
    writer = setup.cache.driver.open_for_write("busy", 20000)
    try:
        result = setup.maintenance.prefetch_once()
        assert result.skipped == 1 and setup.cache.get_queued_images() == ["busy"]
    finally:
        writer.discard()


def test_prefetch_of_an_already_cached_image_just_removes_the_entry(setup):
    data = setup.add_image("warm", queue=False)
    assert setup.cache.cache_image_iter("warm", [data], len(data),
                                        **helpers.hashes(data))
    open(setup.cache.driver.get_image_filepath("warm", ondisk.QUEUE), "wb").close()
    assert setup.maintenance.prefetch_once().fetched == 1
    assert setup.cache.get_queued_images() == []


def test_prefetch_that_does_not_fit_fails_and_says_so(tmp_path, caplog):
    small = Setup(tmp_path, image_cache_max_size=1000)
    try:
        small.add_image("too-big", size=5000)
        assert small.maintenance.prefetch_once().failed == 1
        assert any("too-big" in r.getMessage() and "did not admit" in r.getMessage()
                   for r in caplog.records if r.levelname == "ERROR")
    finally:
        small.close()


def test_evict_gone_removes_deleted_deactivated_and_purged_images(setup):
    for image_id in ("keep", "deleted", "deactivated", "purged"):
        setup.add_image(image_id)
    assert setup.maintenance.prefetch_once().fetched == 4
    db_api.image_destroy(ADMIN, "deleted")
    db_api.image_update(ADMIN, "deactivated", {"status": "deactivated"})
    with db_engine.writer() as conn:
        conn.exec_driver_sql("DELETE FROM images WHERE id = 'purged'")
    assert setup.maintenance.evict_gone() == 3
    assert setup.cached_ids() == ["keep"]
    assert setup.maintenance.evict_gone() == 0


def test_evict_gone_cancels_a_live_fill_of_a_deactivated_image(setup):
    data = setup.add_image("live", queue=False)
    tee = setup.cache.fill("live", helpers.chunks(data), len(data), **helpers.hashes(data))
    received = [next(tee)]   # the fill is live: its client has the first chunk
    assert tee.caching and setup.cache.is_being_cached("live")
    db_api.image_update(ADMIN, "live", {"status": "deactivated"})   # through another node
    assert setup.maintenance.evict_gone() == 1
    received.extend(tee)
    tee.close()
    assert b"".join(received) == data   # its client still got every byte
    assert not tee.committed and not setup.cache.is_cached("live")
    assert helpers.incomplete(setup.cache) == []


def test_evict_gone_on_a_database_that_knows_too_few_images_evicts_nothing(setup, caplog):
    for image_id in ("a", "b", "c", "d", "e"):
        setup.add_image(image_id, size=100)
    assert setup.maintenance.prefetch_once().fetched == 5
    with db_engine.writer() as conn:   # a database that knows only a and b
        conn.exec_driver_sql("DELETE FROM images WHERE id NOT IN ('a', 'b')")
    wrong = Maintenance(setup.cache, db_api, setup.store,
                        db_url="postgresql://glance:s3cret@db.example/glance")
    results = wrong.run_pass(tasks=(maintenance_mod.EVICT,))
    assert isinstance(results["evict"], maintenance_mod.WrongImageDatabase)
    assert setup.cached_ids() == ["a", "b", "c", "d", "e"]
    message = str(results["evict"])
    assert "knows 2 of the 5 images" in message and "s3cret" not in message
    assert "postgresql://glance:***@db.example/glance" in message
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("db.example" in line and "evicting nothing" in line for line in logged)
    # Half of them known is a sane database: the rest is purged, and is evicted.
    with db_engine.writer() as conn:
        conn.exec_driver_sql("DELETE FROM images WHERE id = 'b'")
    db_api.image_create(ADMIN, {"id": "c", "status": "active", "size": 100})
    db_api.image_create(ADMIN, {"id": "d", "status": "active", "size": 100})
    assert setup.maintenance.evict_gone() == 2
    assert setup.cached_ids() == ["a", "c", "d"]


def test_evict_gone_on_an_empty_cache_needs_no_database_rows(setup):
    assert setup.maintenance.evict_gone() == 0


def test_evict_gone_evicts_nothing_when_the_database_fails(setup):
    setup.add_image("keep")
    setup.maintenance.prefetch_once()

    class BrokenDb:
        def image_get_all(self, *args, **kwargs):
            raise OSError("database unreachable")

    broken = Maintenance(setup.cache, BrokenDb(), setup.store)
    results = broken.run_pass(tasks=(maintenance_mod.EVICT, maintenance_mod.PRUNE))
    assert isinstance(results["evict"], OSError) and results["prune"] == (0, 0)
    assert setup.cached_ids() == ["keep"]


def test_a_task_already_running_is_skipped(setup, caplog):
    caplog.set_level(logging.INFO, logger="glance_cache_mw")
    for task in maintenance_mod.TASKS:
        with maintenance_mod.task_lock(setup.cache.driver.base_dir, task) as held:
            assert held
            results = setup.maintenance.run_pass(tasks=(task,))
            assert results == {task: None}
        assert setup.maintenance.run_pass(tasks=(task,))[task] is not None
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == len(maintenance_mod.TASKS)


def test_lock_files_are_not_images(setup):
    setup.maintenance.run_pass()
    assert setup.cache.get_cache_size() == 0 and setup.cache.delete_all_cached_images() == 0
    assert os.path.exists(os.path.join(setup.cache.driver.base_dir, ".prune.lock"))


def test_clean_keeps_live_fills_and_removes_abandoned_ones(tmp_path):
    setup = Setup(tmp_path, image_cache_stall_time=0)
    try:
        live = setup.cache.driver.open_for_write("live", 10)
        live.write(b"12345")
        dead = os.path.join(setup.cache.driver.get_path(ondisk.INCOMPLETE), "dead")
        with open(dead, "wb") as handle:
            handle.write(b"partial")
        assert setup.maintenance.clean_once() == 1
        assert setup.cache.is_being_cached("live") and not os.path.exists(dead)
        live.write(b"67890")
        assert live.commit() and setup.cache.is_cached("live")
    finally:
        setup.close()


def test_start_and_stop_run_passes_in_a_thread(setup):
    setup.add_image("queued")
    passes = []
    done = threading.Event()

    def on_pass(results):
        passes.append(results)
        done.set()

    stop = threading.Event()
    thread = threading.Thread(target=setup.maintenance.run_loop, args=(3600, stop),
                              kwargs={"on_pass": on_pass})
    thread.start()
    assert done.wait(helpers.WAIT_S)
    stop.set()
    thread.join(helpers.WAIT_S)
    assert not thread.is_alive()
    assert set(passes[0]) == set(maintenance_mod.TASKS)
    assert passes[0]["prefetch"].fetched == 1 and setup.cached_ids() == ["queued"]

    setup.maintenance.start(3600)
    assert setup.maintenance.running
    assert setup.maintenance.stop(helpers.WAIT_S) and not setup.maintenance.running


def test_images_without_hashes_are_cached_when_the_size_matches(setup):
    data = helpers.body(3000)
    db_api.image_create(ADMIN, {"id": "plain", "status": "active", "size": len(data)})
    setup.store.add("plain", io.BytesIO(data))
    setup.cache.queue_image("plain")
    assert setup.maintenance.prefetch_once().fetched == 1
    with setup.cache.open_hit("plain") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(data).digest()
