"""Metrics (metrics.py): fill verdicts and evictions counted once with their reason, the
scrape-time cache gauges, what the CacheFilter and Maintenance count. Each test has its own
private registry. The /metrics filter is in test_middleware_metrics.py, the multiprocess directory
in test_metrics_dir.py."""

import os
import threading
import time

import pytest
import webob

from glance_cache_mw import metrics as metrics_mod
from glance_cache_mw.image_cache import ImageCache, fill as fill_mod
from tests.unit import cache_helpers as helpers

DATA = helpers.body(50000)


def sample(metrics, name, **labels):
    return metrics.registry.get_sample_value("glance_cache_mw_" + name, labels or None)


def committed_fills(metrics, expected=1):
    """fills_committed_total once it reached ``expected`` (10 s at most): a FillPump counts
    its verdict right after the commit its clients waited for, in its own thread."""
    deadline = time.monotonic() + 10
    while sample(metrics, "fills_committed_total") < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return sample(metrics, "fills_committed_total")


@pytest.fixture
def metrics():
    return metrics_mod.Metrics()


@pytest.fixture
def cache(tmp_path, metrics):
    cache = ImageCache.from_config(helpers.settings(tmp_path, image_cache_max_size=120000),
                                   metrics=metrics)
    yield cache
    cache.close()


def fill(cache, image_id, data, size=None, **hashes):
    return helpers.drain(cache.fill(image_id, helpers.chunks(data), size or len(data),
                                    **(hashes or helpers.hashes(data))))


def test_two_instances_count_apart():
    one, two = metrics_mod.Metrics(), metrics_mod.Metrics()
    one.download("HIT", "2xx", 10)
    one.download("HIT", "2xx", 5)
    assert sample(one, "downloads_total", cache="HIT", code="2xx") == 2
    assert sample(one, "download_bytes_total", cache="HIT") == 15
    assert sample(two, "downloads_total", cache="HIT", code="2xx") == 0


def test_a_committed_fill(cache, metrics):
    assert fill(cache, "a", DATA) == DATA
    assert sample(metrics, "fills_started_total") == 1
    assert sample(metrics, "fills_committed_total") == 1
    assert sample(metrics, "fill_duration_seconds_count") == 1
    assert all(sample(metrics, "fills_failed_total", reason=r) == 0
               for r in metrics_mod.FILL_FAILURES)


@pytest.mark.parametrize("corrupt, reason", [
    (lambda data: data[:-1], "size"),
    (lambda data: b"x" + data[1:], "verification"),
])
def test_a_failed_verification_is_counted_with_its_reason(cache, metrics, corrupt, reason):
    try:
        fill(cache, "a", corrupt(DATA), size=len(DATA), **helpers.hashes(DATA))
    except fill_mod.ImageDataMismatch:
        assert reason == "size"     # a short body always raises (after its last byte)
    assert not cache.is_cached("a")
    assert sample(metrics, "fills_failed_total", reason=reason) == 1
    assert sample(metrics, "fills_committed_total") == 0


def test_a_fill_ended_before_the_origin_is_counted_once_as_abandoned(cache, metrics):
    tee = cache.fill("a", helpers.chunks(DATA), len(DATA), **helpers.hashes(DATA))
    next(tee)
    tee.close()
    tee.close()
    assert sample(metrics, "fills_failed_total", reason="abandoned") == 1
    assert sample(metrics, "fills_started_total") == 1


def test_admission_refused_and_admission_evictions(cache, metrics):
    fill(cache, "a", DATA)
    fill(cache, "b", DATA)
    fill(cache, "c", DATA)    # 3 x 50000 > 120000: "a" goes
    assert sample(metrics, "evictions_total", reason="admission") == 1
    fill(cache, "big", helpers.body(130000))
    assert sample(metrics, "fills_failed_total", reason="admission") == 1
    assert sample(metrics, "fills_started_total") == 3


def test_prune_and_manual_evictions(tmp_path, metrics):
    cache = ImageCache.from_config(helpers.settings(tmp_path), metrics=metrics)
    try:
        for image_id in ("a", "b", "c"):
            fill(cache, image_id, DATA)
        cache.max_size = 60000
        assert cache.prune() == (2, 100000)
        assert sample(metrics, "evictions_total", reason="prune") == 2
        cache.delete_cached_image("c")
        cache.delete_cached_image("c")          # not cached any more: not counted
        assert sample(metrics, "evictions_total", reason="manual") == 1
    finally:
        cache.close()


def test_cache_collector_computes_the_gauges_at_scrape_time(cache):
    fill(cache, "a", DATA)
    fill(cache, "b", DATA[:1000])
    assert cache.queue_image("q1") and cache.queue_image("q2")
    families = {f.name: f.samples[0].value
                for f in metrics_mod.CacheCollector(cache).collect()}
    st = os.statvfs(cache.driver.base_dir)
    assert families["glance_cache_mw_cache_size_bytes"] == 51000
    assert families["glance_cache_mw_cache_entries"] == 2
    assert families["glance_cache_mw_cache_max_size_bytes"] == 120000
    assert families["glance_cache_mw_queued_images"] == 2
    # Free space moves with everything else on the disk: the same order of magnitude.
    assert abs(families["glance_cache_mw_cache_free_bytes"] - st.f_bavail * st.f_frsize) \
        < 0.05 * st.f_blocks * st.f_frsize


def test_null_metrics_has_exactly_the_methods_of_metrics():
    metrics_mod.NULL.download("HIT", "2xx", 1)
    assert metrics_mod.NULL.time_to_first_byte("MISS", 0.1) is None
    with pytest.raises(AttributeError):
        metrics_mod.NULL.no_such_event()


def test_time_to_first_byte_is_observed_by_cache_status(metrics):
    metrics.time_to_first_byte("MISS", 0.02)
    metrics.time_to_first_byte("COALESCED", 3)
    assert sample(metrics, "first_byte_seconds_count", cache="MISS") == 1
    assert sample(metrics, "first_byte_seconds_bucket", cache="MISS", le="0.025") == 1
    assert sample(metrics, "first_byte_seconds_bucket", cache="COALESCED", le="2.5") == 0
    assert sample(metrics, "first_byte_seconds_sum", cache="COALESCED") == 3


# -- what the CacheFilter counts ---------------------------------------------------------------

@pytest.fixture
def setup(tmp_path, metrics):
    from tests.unit.filter_helpers import Setup

    s = Setup(tmp_path)
    s.cache.metrics = s.filter.metrics = metrics
    yield s
    s.close()


def test_the_filter_counts_every_kind_of_download(setup, metrics):
    from tests.unit.test_middleware_cache import get

    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    assert get(app, url, Range="bytes=0-99").headers["X-Image-Cache"] == "BYPASS"
    head = webob.Request.blank(url, method="HEAD").get_response(app)
    assert head.headers["X-Image-Cache"] == "BYPASS"
    assert get(app, url).headers["X-Image-Cache"] == "MISS"
    assert get(app, url, Range="bytes=10-19").headers["X-Image-Cache"] == "HIT"
    assert get(app, url, Range="bytes=%d-" % len(DATA)).status_int == 416
    assert get(app, url).headers["X-Image-Cache"] == "HIT"

    assert sample(metrics, "downloads_total", cache="BYPASS", code="2xx") == 2
    assert sample(metrics, "download_bytes_total", cache="BYPASS") == 100
    assert sample(metrics, "origin_reads_total", reason="bypass") == 2
    assert sample(metrics, "origin_bytes_total", reason="bypass") == 100
    assert sample(metrics, "downloads_total", cache="MISS", code="2xx") == 1
    assert sample(metrics, "download_bytes_total", cache="MISS") == len(DATA)
    assert sample(metrics, "origin_reads_total", reason="miss") == 1
    assert sample(metrics, "origin_bytes_total", reason="miss") == len(DATA)
    assert sample(metrics, "first_byte_seconds_count", cache="MISS") == 1
    assert sample(metrics, "downloads_total", cache="HIT", code="2xx") == 2
    assert sample(metrics, "downloads_total", cache="HIT", code="4xx") == 1
    assert sample(metrics, "download_bytes_total", cache="HIT") == 10 + len(DATA)
    assert committed_fills(metrics) == 1


def test_coalesced_downloads_are_followers_and_the_miss_is_not(setup, metrics):
    # The client that caused the fill reads the growing file too (start_fill), yet it is
    # the one MISS; each client that joined is COALESCED and a follower.
    from tests.unit.test_middleware_cache import get

    image = setup.add_image(DATA)
    app = setup.app_for("A")
    url = "/v2/images/%s/file" % image["id"]
    setup.origin.gate = threading.Event()          # the fill waits after its first chunk
    environ = webob.Request.blank(url).environ
    statuses = []
    first = app(environ, lambda status, headers, exc_info=None: statuses.append(headers))
    received = next(iter(first))
    joined = []
    threads = [threading.Thread(target=lambda: joined.append(get(app, url)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while sample(metrics, "coalesced_followers_total") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    setup.origin.gate.set()
    received += b"".join(first)
    first.close()
    for thread in threads:
        thread.join(10)
    assert dict(statuses[0])["X-Image-Cache"] == "MISS" and received == DATA
    assert [(r.headers["X-Image-Cache"], r.body == DATA) for r in joined] == [
        ("COALESCED", True)] * 3
    assert sample(metrics, "downloads_total", cache="MISS", code="2xx") == 1
    assert sample(metrics, "downloads_total", cache="COALESCED", code="2xx") == 3
    assert sample(metrics, "download_bytes_total", cache="COALESCED") == 3 * len(DATA)
    assert sample(metrics, "coalesced_followers_total") == 3
    assert sample(metrics, "first_byte_seconds_count", cache="COALESCED") == 3
    assert sample(metrics, "origin_reads_total", reason="miss") == 1
    assert sample(metrics, "fills_started_total") == 1
    assert committed_fills(metrics) == 1


def test_a_fill_its_client_left_early_is_counted_as_abandoned(setup, metrics):
    from tests.unit.test_middleware_cache import _leave_after_the_first_chunk

    image = setup.add_image(DATA)
    _leave_after_the_first_chunk(setup, image)     # 4 KiB of 50 KB: not worth finishing
    assert not setup.cache.is_cached(image["id"])
    assert sample(metrics, "downloads_total", cache="MISS", code="2xx") == 1
    assert sample(metrics, "fills_started_total") == 1
    assert sample(metrics, "fills_failed_total", reason="abandoned") == 1
    assert sample(metrics, "fills_committed_total") == 0


def test_the_filter_counts_evictions_with_their_reason(setup, metrics):
    from tests.unit.test_middleware_cache import get

    image = setup.add_image(DATA)
    app = setup.app_for("A", is_admin=True)
    url = "/v2/images/%s/file" % image["id"]
    assert get(app, url).headers["X-Image-Cache"] == "MISS"
    os.truncate(setup.cache.driver.get_image_filepath(image["id"]), 10)
    assert get(app, url).headers["X-Image-Cache"] == "MISS"    # evicted, filled again
    assert sample(metrics, "evictions_total", reason="size_mismatch") == 1
    assert webob.Request.blank("/v2/images/%s" % image["id"],
                               method="DELETE").get_response(app).status_int == 204
    assert sample(metrics, "evictions_total", reason="gone") == 1
    assert not setup.cache.is_cached(image["id"])


def test_an_origin_failure_mid_fill_is_counted(cache, metrics):
    def failing():
        yield DATA[:4096]
        raise OSError("origin connection reset")

    tee = cache.fill("a", failing(), len(DATA), **helpers.hashes(DATA))
    with pytest.raises(OSError):
        list(tee)
    tee.close()
    assert sample(metrics, "fills_failed_total", reason="origin") == 1
    assert sample(metrics, "fills_failed_total", reason="abandoned") == 0


# -- maintenance and prefetch --------------------------------------------------------------------

def test_maintenance_counts_task_runs_prefetch_outcomes_and_gone_evictions(tmp_path, metrics):
    from glance_cache_mw.db import api as db_api
    from tests.unit.test_maintenance import ADMIN, Setup

    setup = Setup(tmp_path)
    try:
        setup.cache.metrics = metrics
        setup.maintenance = maintenance = type(setup.maintenance)(
            setup.cache, db_api, setup.store, workers=2, metrics=metrics)
        setup.add_image("good", size=20000)
        setup.add_image("corrupt", corrupt=True)
        setup.add_image("gone")
        db_api.image_destroy(ADMIN, "gone")
        results = maintenance.run_pass()
        assert results["prefetch"].fetched == 1
        assert sample(metrics, "prefetch_images_total", outcome="fetched") == 1
        assert sample(metrics, "prefetch_images_total", outcome="failed") == 1
        assert sample(metrics, "prefetch_images_total", outcome="dropped") == 1
        assert sample(metrics, "origin_reads_total", reason="prefetch") == 2
        assert sample(metrics, "origin_bytes_total", reason="prefetch") == 40000
        assert sample(metrics, "fills_failed_total", reason="verification") == 1
        for task in ("evict", "prune", "clean", "prefetch"):
            assert sample(metrics, "maintenance_runs_total", task=task, outcome="ok") == 1
        db_api.image_destroy(ADMIN, "good")
        with maintenance_lock_held(setup.cache.driver.base_dir, "prune"):
            maintenance.run_pass(tasks=("evict", "prune"))
        assert sample(metrics, "evictions_total", reason="gone") == 1
        assert sample(metrics, "maintenance_runs_total", task="prune", outcome="skipped") == 1
    finally:
        setup.close()


def maintenance_lock_held(directory, task):
    from glance_cache_mw import maintenance as maintenance_mod
    return maintenance_mod.task_lock(directory, task)
