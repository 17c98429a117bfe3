"""The prefetcher: cache every queued image from the origin's store, a few at a time.

Each queued image is looked up in the database first (an admin context): images that are
gone, deleted or not ``active`` are dropped from the queue with a log line (Glance kept them
forever, W11). The others are read from the store (our file store, or Glance's stores through
glance_store: glance_origin.py) and go through
``ImageCache.cache_image_iter`` — the same admitted, verified fill the CacheFilter uses — so a
wrong size or checksum never reaches the cache (W1, W6).

Failure policy (one image never stops the others; W12):

* a fetch that fails (data missing from the store, a read error, bytes that do not match the
  image record, no room in the cache) counts as failed, is logged at ERROR with the image id
  and the reason, and its queue entry is **dropped**: a corrupt or missing image would fail
  the same way on every pass, so it is retried only if it is queued again;
* an image another writer is filling stays queued (that fill removes the entry on commit);
* an unreadable database (the image's state is unknown) or a stop request leaves the entry
  queued for the next pass.

``cache_prefetcher_workers`` images are fetched at once, by that many threads (green threads
when the server has monkey-patched the process), which yield between chunks.
"""

import collections
import logging
import threading
import time

from glance_cache_mw import exception, metrics as metrics_mod
from glance_cache_mw.context import RequestContext
from glance_cache_mw.image_cache import fill as fill_mod

LOG = logging.getLogger(__name__)

FETCHED, FAILED, DROPPED, SKIPPED, INTERRUPTED = (
    "fetched", "failed", "dropped", "skipped", "interrupted")


class PrefetchResult(collections.namedtuple(
        "PrefetchResult", "fetched failed dropped skipped interrupted")):
    """Counts of one prefetch pass: images cached, failed, dropped, left queued, interrupted."""

    @classmethod
    def from_outcomes(cls, outcomes):
        counts = collections.Counter(outcomes)
        return cls(counts[FETCHED], counts[FAILED], counts[DROPPED], counts[SKIPPED],
                   counts[INTERRUPTED])


class Interrupted(Exception):
    """Raised from the data source when a stop was requested: the fill is abandoned."""


class Prefetcher:
    """Caches queued images; ``run(stop_event)`` is one pass over the queue."""

    def __init__(self, cache, db_api, store, workers=4, context=None, progress=None,
                 metrics=metrics_mod.NULL):
        """``cache``: an ImageCache; ``db_api``: glance_cache_mw.db.api (configured);
        ``store``: a FileStore, or a glance_origin.GlanceStoreOrigin (anything whose
        ``open_for_read(image_id)`` gives chunks and ``close()``); ``progress``: an optional
        cmd.progress.Progress shown while fetching; ``metrics``: a glance_cache_mw.metrics.Metrics
        (outcomes, origin bytes)."""
        self.metrics = metrics
        self.cache = cache
        self.db_api = db_api
        self.store = store
        self.workers = max(1, int(workers))
        self.context = context or RequestContext.admin()
        self.progress = progress

    def run(self, stop_event=None):
        """Fetch every queued image (oldest first); return a PrefetchResult."""
        stop_event = stop_event or threading.Event()
        queued = self.cache.get_queued_images()
        if not queued:
            LOG.info("prefetch: no image is queued")
            return PrefetchResult(0, 0, 0, 0, 0)
        LOG.info("prefetching %d queued images with %d workers", len(queued),
                 min(self.workers, len(queued)))
        if self.progress is not None:
            self.progress.begin(len(queued))
        pending = collections.deque(queued)
        outcomes = []
        lock = threading.Lock()

        def work():
            while not stop_event.is_set():
                with lock:
                    if not pending:
                        return
                    image_id = pending.popleft()
                try:
                    outcome = self.fetch_one(image_id, stop_event)
                except Exception:   # a bug or a broken cache dir: this image only (W12)
                    LOG.exception("prefetch of image %s failed", image_id)
                    outcome = FAILED
                self.metrics.prefetched(outcome)
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=work, name="prefetch-%d" % index, daemon=True)
                   for index in range(min(self.workers, len(queued)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():   # a timed join keeps signal handlers running
                thread.join(0.2)
        if self.progress is not None:
            self.progress.end()
        result = PrefetchResult.from_outcomes(outcomes)
        result = result._replace(interrupted=result.interrupted + len(pending))
        LOG.info("prefetch: %d images fetched, %d failed, %d dropped from the queue, "
                 "%d left queued, %d interrupted", *result)
        return result

    def fetch_one(self, image_id, stop_event=None):
        """Cache one queued image; returns FETCHED, FAILED, DROPPED, SKIPPED or INTERRUPTED."""
        stop_event = stop_event or threading.Event()
        try:
            image = self.db_api.image_get(self.context, image_id)
        except (exception.NotFound, exception.Invalid, exception.Forbidden) as err:
            return self._drop(image_id, "it is not in the database (%s)" % err)
        except Exception as err:
            LOG.error("prefetch of image %s failed: cannot read the image record: %s; it "
                      "stays queued", image_id, err)
            return FAILED
        if image.get("deleted"):
            return self._drop(image_id, "it is deleted")
        if image.get("status") != "active":
            return self._drop(image_id, "its status is %s, not active" % image.get("status"))
        if self.cache.is_cached(image_id):
            self.cache.delete_queued_image(image_id)
            LOG.info("image %s is already cached; removed it from the queue", image_id)
            return FETCHED
        if self.cache.is_being_cached(image_id):
            LOG.info("image %s is being cached by another writer; it stays queued", image_id)
            return SKIPPED
        return self._fetch(image, stop_event)

    def _drop(self, image_id, reason):
        self.cache.delete_queued_image(image_id)
        LOG.warning("dropped image %s from the prefetch queue: %s", image_id, reason)
        return DROPPED

    def _fail(self, image_id, reason):
        self.cache.delete_queued_image(image_id)
        LOG.error("prefetch of image %s failed: %s; dropped from the queue (queue it again "
                  "to retry)", image_id, reason)
        return FAILED

    def _fetch(self, image, stop_event):
        image_id = image["id"]
        try:
            reader = self.store.open_for_read(image_id)
        except exception.NotFound as err:
            return self._fail(image_id, "no data in the store (%s)" % err)
        except OSError as err:
            return self._fail(image_id, "cannot open its data: %s" % err)
        source = _Source(image_id, reader, stop_event, self.progress)
        if self.progress is not None:
            self.progress.start(image_id, image.get("size"))
        try:
            cached = self.cache.cache_image_iter(
                image_id, source, image.get("size"), checksum=image.get("checksum"),
                os_hash_algo=image.get("os_hash_algo"),
                os_hash_value=image.get("os_hash_value"))
        except Interrupted:
            LOG.warning("prefetch of image %s interrupted after %d bytes; it stays queued",
                        image_id, source.bytes_read)
            return INTERRUPTED
        except fill_mod.ImageDataMismatch as err:
            return self._fail(image_id, "data does not match the image record: %s"
                              % err.msg.split(": ", 1)[-1])
        except Exception as err:
            return self._fail(image_id, "reading its data failed: %s" % err)
        finally:
            source.close()
            self.metrics.origin_read("prefetch", source.bytes_read)
            if self.progress is not None:
                self.progress.stop(image_id)
        if cached:
            LOG.info("prefetched image %s (%d bytes)", image_id, source.bytes_read)
            return FETCHED
        if self.cache.is_cached(image_id) or self.cache.is_being_cached(image_id):
            LOG.info("image %s was cached by another writer meanwhile", image_id)
            return SKIPPED
        return self._fail(image_id, "the cache did not admit it (size %s; see the lines "
                          "above)" % image.get("size"))


class _Source:
    """The store's reader for one image: counts bytes, reports progress, obeys a stop."""

    def __init__(self, image_id, reader, stop_event, progress):
        self.image_id = image_id
        self.bytes_read = 0
        self._reader = reader
        self._chunks = iter(reader)
        self._stop_event = stop_event
        self._progress = progress

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop_event.is_set():
            raise Interrupted(self.image_id)
        chunk = next(self._chunks)
        self.bytes_read += len(chunk)
        if self._progress is not None:
            self._progress.advance(self.image_id, len(chunk))
        time.sleep(0)   # a green thread (in-process maintenance) lets requests run
        return chunk

    def close(self):
        """Close the store's reader (once: the tee closes it too)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
