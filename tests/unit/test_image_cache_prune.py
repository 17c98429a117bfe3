"""ImageCache's prune, clean and the prefetch queue, in one process. Concurrent pruners and a
live fill of another process are in tests/functional/test_image_cache_prune.py."""

import os

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache.drivers import sqlite
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import Origin


class CountingDriver(sqlite.Driver):
    """The sqlite driver, counting metadata reads (how many queries a prune makes)."""

    def __init__(self, config):
        super().__init__(config)
        self.loads = 0
        self.forget_calls = 0

    def load_metadata(self):
        self.loads += 1
        return super().load_metadata()

    def forget(self, image_ids):
        self.forget_calls += 1
        return super().forget(image_ids)


def store(cache, image_id, size=10):
    data = helpers.body(size, image_id.encode())
    tee = cache.fill(image_id, Origin([data]), size)
    assert tee.caching and helpers.drain(tee) == data and tee.committed


@pytest.fixture
def cache(tmp_path):
    instance = helpers.make_cache(tmp_path, image_cache_max_size=1000)
    yield instance
    instance.close()


def with_max_size(cache, max_size):
    return ImageCache(cache.driver, max_size, cache.min_free)


def test_prune_removes_least_recently_used_first(cache):
    for image_id in ("a", "b", "c", "d", "e"):
        store(cache, image_id)
    cache.driver.record_hit("a")
    cache.driver.record_hit("c")
    assert with_max_size(cache, 30).prune() == (2, 20)
    assert [i["image_id"] for i in cache.get_cached_images()] == ["a", "c", "e"]
    assert with_max_size(cache, 30).prune() == (0, 0)
    assert cache.get_cache_size() == 30


def test_prune_to_zero_empties_the_cache(cache):
    for image_id in ("a", "b"):
        store(cache, image_id)
    assert with_max_size(cache, 0).prune() == (2, 20)
    assert cache.get_cached_images() == [] and cache.get_cache_size() == 0


def test_prune_is_one_ordered_pass(tmp_path):
    driver = CountingDriver(helpers.settings(tmp_path)).configure()
    cache = ImageCache(driver, 10 * 50)
    try:
        for index in range(50):
            store(cache, "img-%02d" % index)
        driver.loads = driver.forget_calls = 0
        assert with_max_size(cache, 100).prune() == (40, 400)
        assert driver.loads == 1 and driver.forget_calls == 1
        assert [i["image_id"] for i in cache.get_cached_images()] == [
            "img-%02d" % index for index in range(40, 50)]
    finally:
        cache.close()


def test_prune_evicts_untracked_files_and_terminates(cache):
    # W2: files without metadata (crash, driver switch) must not make prune loop or stall.
    for name in ("orphan-1", "orphan-2"):
        with open(cache.driver.get_path(name), "wb") as handle:
            handle.write(b"x" * 10)
    store(cache, "tracked")
    assert with_max_size(cache, 10).prune() == (2, 20)
    assert cache.is_cached("tracked")


def test_prune_honours_min_free(cache):
    store(cache, "a")
    store(cache, "b")
    disk = os.statvfs(cache.driver.base_dir)
    greedy = ImageCache(cache.driver, 1000, min_free=disk.f_blocks * disk.f_frsize)
    assert greedy.prune() == (2, 20)       # cannot reach min_free: evicts what it can


def test_clean_keeps_young_debris_until_the_stall_time(cache):
    debris = cache.driver.get_path("incomplete", "dead")
    with open(debris, "wb"):
        pass
    assert cache.clean() == 0 and os.path.exists(debris)
    os.utime(debris, (0, 0))     # older than image_cache_stall_time
    assert cache.clean() == 1 and not os.path.exists(debris)


def test_clean_forgets_metadata_of_vanished_files(cache):
    store(cache, "img")
    os.unlink(cache.driver.get_image_filepath("img"))   # removed by hand
    cache.clean()
    assert cache.driver.load_metadata() == {}


def test_queue_refuses_cached_being_cached_and_queued(cache):
    store(cache, "cached")
    writer = cache.admit("filling", 10)
    try:
        assert not cache.queue_image("cached")
        assert not cache.queue_image("filling")
    finally:
        writer.discard()
    assert cache.queue_image("filling")
    assert not cache.queue_image("filling")
    assert cache.queue_image("another")
    assert cache.get_queued_images() == ["filling", "another"]
    store(cache, "filling")    # a fill pops its queue entry
    assert cache.get_queued_images() == ["another"]
    assert cache.delete_all_queued_images() == 1


def test_queue_order_is_oldest_first_across_instances(tmp_path, cache):
    other = helpers.make_cache(tmp_path)
    try:
        for index, image_id in enumerate(["m", "z", "a", "k"]):
            (cache if index % 2 else other).queue_image(image_id)
        os.utime(cache.driver.get_image_filepath("m", "queue"), (0, 0))
        assert cache.get_queued_images()[0] == "m"
        assert set(cache.get_queued_images()) == {"m", "z", "a", "k"}
    finally:
        other.close()
