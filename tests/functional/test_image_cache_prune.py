"""Prune and clean across processes: concurrent pruners do not double count, and clean never
removes another process's live fill. The in-process tests are in
tests/unit/test_image_cache_prune.py (whose ``cache`` fixture and ``store`` these share)."""

from glance_cache_mw.image_cache import ImageCache
from tests.unit import cache_helpers as helpers
from tests.unit.test_image_cache_prune import cache, store  # noqa: F401  (fixture, helper)


def _prune(conn, settings, barrier):
    cache = ImageCache.from_config(dict(settings, image_cache_max_size="100"))
    barrier.wait()
    conn.send(("pruned", cache.prune()))
    cache.close()


def test_concurrent_pruners_do_not_double_count(tmp_path, cache):
    for index in range(30):
        store(cache, "img-%02d" % index)
    settings = helpers.settings(tmp_path)
    barrier = helpers.MP.Barrier(2)
    children = [helpers.run_child(_prune, settings, barrier) for _ in range(2)]
    results = []
    for process, conn in children:
        results.append(helpers.recv(conn)[1])
        process.join(helpers.WAIT_S)
        conn.close()
        assert process.exitcode == 0
    assert sorted(results) == [(0, 0), (20, 200)]
    assert cache.get_cache_size() == 100
    assert [i["image_id"] for i in cache.get_cached_images()] == [
        "img-%02d" % index for index in range(20, 30)]


def _hold_a_fill(conn, settings):
    cache = ImageCache.from_config(settings)
    writer = cache.admit("live", 10)
    writer.write(b"12345")
    conn.send(("filling",))
    conn.recv()
    writer.write(b"67890")
    conn.send(("committed", writer.commit()))
    cache.close()


def test_clean_never_removes_a_live_fill_of_another_process(tmp_path, cache):
    process, conn = helpers.run_child(_hold_a_fill, helpers.settings(tmp_path))
    assert helpers.recv(conn) == ("filling",)
    with open(cache.driver.get_path("invalid", "bad"), "wb"):
        pass
    assert cache.clean(stall_time=0) == 1
    assert cache.is_being_cached("live") and not cache.is_cached("live")
    conn.send(("go",))
    assert helpers.recv(conn) == ("committed", True)
    process.join(helpers.WAIT_S)
    conn.close()
    assert [(e.image_id, e.size) for e in cache.list_entries()] == [("live", 10)]
    assert helpers.listing(cache.driver.get_path("incomplete")) == []
