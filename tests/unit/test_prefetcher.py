"""The prefetcher (prefetcher.py) driven directly: bounded concurrency, a stop that keeps the
queue, one failing image. Prefetching through Maintenance is in test_maintenance.py, whose
``setup`` fixture these use; the terminal status line (cmd/progress.py) in test_cmd_progress.py."""

import io
import threading

from glance_cache_mw import prefetcher as prefetcher_mod
from glance_cache_mw.cmd import progress as progress_mod
from glance_cache_mw.db import api as db_api
from tests.unit.test_maintenance import setup  # noqa: F401  (fixture)


class CountingStore:
    """A store whose readers record how many are open at once."""

    def __init__(self, store):
        self.store, self.open_now, self.most = store, 0, 0
        self.lock = threading.Lock()

    def open_for_read(self, image_id):
        reader = self.store.open_for_read(image_id)
        with self.lock:
            self.open_now += 1
            self.most = max(self.most, self.open_now)
        original_close = reader.close

        def close():
            with self.lock:
                self.open_now -= 1
            original_close()
        reader.close = close
        return reader


def test_prefetch_concurrency_is_bounded_by_workers(setup):
    for index in range(8):
        setup.add_image("img-%d" % index, size=50000)
    counting = CountingStore(setup.store)
    prefetcher = prefetcher_mod.Prefetcher(setup.cache, db_api, counting, workers=3)
    assert prefetcher.run().fetched == 8
    assert 1 <= counting.most <= 3 and counting.open_now == 0


def test_a_stop_abandons_the_current_image_and_keeps_it_queued(setup):
    setup.add_image("first", size=200000)
    setup.add_image("second")
    stop = threading.Event()

    class StoppingProgress(progress_mod.Progress):
        def advance(self, image_id, nbytes):
            stop.set()   # as if SIGTERM arrived while the first chunk was copied

    prefetcher = prefetcher_mod.Prefetcher(setup.cache, db_api, setup.store, workers=1,
                                           progress=StoppingProgress(io.StringIO()))
    result = prefetcher.run(stop)
    assert result.fetched == 0 and result.interrupted == 2 and result.failed == 0
    assert setup.cached_ids() == []
    assert setup.cache.get_queued_images() == ["first", "second"]
    # Nothing partial left, nothing servable.
    assert not setup.cache.is_cached("first") and not setup.cache.is_being_cached("first")
    assert setup.maintenance.prefetch_once().fetched == 2


def test_an_unexpected_error_fails_one_image_not_the_pass(setup):
    for image_id in ("one", "two", "three"):
        setup.add_image(image_id)

    class Flaky:
        def __init__(self, store):
            self.store = store

        def open_for_read(self, image_id):
            if image_id == "two":
                raise RuntimeError("unexpected")
            return self.store.open_for_read(image_id)

    prefetcher = prefetcher_mod.Prefetcher(setup.cache, db_api, Flaky(setup.store), workers=1)
    result = prefetcher.run()
    assert (result.fetched, result.failed) == (2, 1)
    assert setup.cached_ids() == ["one", "three"]
