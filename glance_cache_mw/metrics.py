"""Prometheus metrics: the counters and histograms of one process, and what a scrape shows.

``Metrics`` owns every metric object, created on a private ``CollectorRegistry`` (two instances
can live in one test process); the CacheFilter, ImageCache, TeeIterator, Maintenance and the
Prefetcher get it through their constructors and call one method per event::

    metrics.download("HIT", "2xx", nbytes)      # a download answered, by cache status
    metrics.origin_read("miss", nbytes)          # image data asked of the origin
    metrics.fill_failed("size")                  # a fill's verdict

``NULL`` does nothing (the default of every collaborator, so that unit tests and one-shot
commands need no registry). Server processes share one instance, ``shared()``: under
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, see ``metrics_dir``) every value lives in a
per-process file keyed by name and labels, and two objects for one key in one process would
overwrite each other's counts.

Cache size, entries, free bytes and queued images are not kept on the hot path: a
``CacheCollector`` computes them from the cache when ``/metrics`` is scraped. No label carries
an image id, name or owner.
"""

import os

import prometheus_client
from prometheus_client import core, multiprocess

PREFIX = "glance_cache_mw_"
CACHE_STATUSES = ("HIT", "MISS", "COALESCED", "BYPASS", "PEER")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
ORIGIN_REASONS = ("miss", "bypass", "fallback", "prefetch")
PEER_READ_OUTCOMES = ("ok", "failed", "corrupt")
FILL_FAILURES = ("verification", "size", "io", "abandoned", "origin", "cancelled",
                 "admission")
EVICTION_REASONS = ("prune", "admission", "gone", "size_mismatch", "manual")
PREFETCH_OUTCOMES = ("fetched", "failed", "dropped", "skipped", "interrupted")
MAINTENANCE_OUTCOMES = ("ok", "failed", "skipped")
PEER_SERVED = ("hit", "fill", "refused", "missing")
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FILL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def status_class(status):
    """"2xx" for "200 OK" (or 200)."""
    return "%sxx" % str(status)[:1]


class Metrics:
    """Every metric of glance_cache_mw, on ``registry`` (a new private one by default)."""

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else core.CollectorRegistry()

        def counter(name, text, labels=()):
            return prometheus_client.Counter(PREFIX + name, text, labels, registry=self.registry)

        self.downloads = counter("downloads", "Image downloads answered, by X-Image-Cache "
                                 "status and HTTP status class.", ("cache", "code"))
        self.download_bytes = counter("download_bytes", "Bytes of image data answered "
                                      "(Content-Length), by X-Image-Cache status.", ("cache",))
        self.origin_reads = counter("origin_reads", "Image data requests to the origin, by "
                                    "reason (miss, bypass, fallback, prefetch).", ("reason",))
        self.origin_bytes = counter("origin_bytes", "Bytes of image data the origin was asked "
                                    "for (Content-Length of its answers), by reason.", ("reason",))
        # Cluster mode (cluster/source.py): a fill's reads from other nodes, by outcome.
        self.peer_reads = counter("peer_reads", "Reads of image data from peer nodes, by "
                                  "outcome (ok, failed, corrupt).", ("outcome",))
        self.peer_bytes_read = counter("peer_bytes_read", "Bytes of image data read from "
                                       "peer nodes.")
        self.fills_started = counter("fills_started", "Fills admitted into the cache.")
        self.fills_committed = counter("fills_committed", "Fills verified and committed.")
        self.fills_failed = counter("fills_failed", "Fills that ended uncommitted (or were "
                                    "not admitted), by reason.", ("reason",))
        self.followers = counter("coalesced_followers", "Downloads that followed a fill in "
                                 "progress instead of reading the origin.")
        self.evictions = counter("evictions", "Cached images removed, by reason.", ("reason",))
        self.maintenance_runs = counter("maintenance_runs", "Maintenance task runs, by task "
                                        "and outcome (ok, failed, skipped).", ("task", "outcome"))
        self.prefetches = counter("prefetch_images", "Queued images handled by the "
                                  "prefetcher, by outcome.", ("outcome",))
        self.peer_requests = counter("peer_requests", "Requests of other nodes to this node's "
                                     "peer endpoint, by outcome (hit, fill, refused, missing).",
                                     ("outcome",))
        self.peer_bytes_served = counter("peer_bytes_served", "Bytes of image data this node "
                                         "served to other nodes (Content-Length).")
        self.first_byte = prometheus_client.Histogram(
            PREFIX + "first_byte_seconds", "Seconds from the start of a MISS or COALESCED "
            "download to its first byte of image data.", ("cache",), registry=self.registry,
            buckets=FIRST_BYTE_BUCKETS)
        self.fill_duration = prometheus_client.Histogram(
            PREFIX + "fill_duration_seconds", "Seconds from admission to commit of the fills "
            "that were committed.", registry=self.registry, buckets=FILL_BUCKETS)
        # Children resolved once: the hit path is a dict lookup and two increments.
        self._downloads = {(s, c): (self.downloads.labels(s, c), self.download_bytes.labels(s))
                           for s in CACHE_STATUSES for c in STATUS_CLASSES}
        for labelled, values in ((self.origin_reads, ORIGIN_REASONS),
                                 (self.peer_reads, PEER_READ_OUTCOMES),
                                 (self.origin_bytes, ORIGIN_REASONS),
                                 (self.fills_failed, FILL_FAILURES),
                                 (self.evictions, EVICTION_REASONS),
                                 (self.prefetches, PREFETCH_OUTCOMES),
                                 (self.peer_requests, PEER_SERVED)):
            for value in values:
                labelled.labels(value)   # exported as 0 from the start, so rate() works
        for cache in ("MISS", "COALESCED"):
            self.first_byte.labels(cache)

    # -- one call per event --------------------------------------------------------------

    def download(self, cache, code, nbytes):
        """A download answered with X-Image-Cache ``cache``, status class ``code`` ("2xx")."""
        children = self._downloads.get((cache, code))
        if children is None:
            children = (self.downloads.labels(cache, code), self.download_bytes.labels(cache))
        children[0].inc()
        if nbytes:
            children[1].inc(nbytes)

    def origin_read(self, reason, nbytes):
        self.origin_reads.labels(reason).inc()
        if nbytes:
            self.origin_bytes.labels(reason).inc(nbytes)

    def peer_read(self, outcome):
        """A fill's read from a peer ended: "ok", "failed" (mid-way) or "corrupt"."""
        self.peer_reads.labels(outcome).inc()

    def peer_bytes(self, nbytes):
        self.peer_bytes_read.inc(nbytes)

    def fill_started(self):
        self.fills_started.inc()

    def fill_committed(self, duration_s):
        self.fills_committed.inc()
        self.fill_duration.observe(duration_s)

    def fill_failed(self, reason):
        self.fills_failed.labels(reason).inc()

    def follower(self):
        self.followers.inc()

    def evicted(self, reason, count=1):
        if count:
            self.evictions.labels(reason).inc(count)

    def maintenance(self, task, outcome):
        self.maintenance_runs.labels(task, outcome).inc()

    def prefetched(self, outcome):
        self.prefetches.labels(outcome).inc()

    def peer_served(self, outcome, nbytes=0):
        """A peer request answered: ``outcome`` one of PEER_SERVED, ``nbytes`` of image data."""
        self.peer_requests.labels(outcome).inc()
        if nbytes:
            self.peer_bytes_served.inc(nbytes)

    def time_to_first_byte(self, cache, seconds):
        """A ``cache`` download had its first byte of image data ``seconds`` after it began."""
        self.first_byte.labels(cache).observe(seconds)

    # -- scraping ------------------------------------------------------------------------

    def exposition(self, collectors=()):
        """(content type, body) of the text exposition format: this process's metrics, or
        every process's under multiprocess mode; plus ``collectors`` (e.g. CacheCollector)."""
        registry = core.CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_RegistryCollector(self.registry))
        for collector in collectors:
            registry.register(collector)
        return prometheus_client.CONTENT_TYPE_LATEST, prometheus_client.generate_latest(registry)


class NullMetrics:
    """Counts nothing: the default collaborator where nobody scrapes."""

    def __getattr__(self, name):
        if name.startswith("_") or not hasattr(Metrics, name):
            raise AttributeError(name)
        return _nothing


def _nothing(*args, **kwargs):
    return None


NULL = NullMetrics()
_shared = None


def shared():
    """The one Metrics of this process (created on first use), for the Paste factories."""
    global _shared
    if _shared is None:
        _shared = Metrics()
    return _shared


class _RegistryCollector:
    """Exposes another registry's metrics (single-process mode)."""

    def __init__(self, registry):
        self._registry = registry

    def collect(self):
        return self._registry.collect()


class CacheCollector:
    """Gauges computed at scrape time from an ImageCache (nothing on the hot path)."""

    def __init__(self, cache):
        self.cache = cache

    def collect(self):
        entries = self.cache.list_entries()
        gauges = (
            ("cache_size_bytes", "Bytes of cached images.", sum(e.size for e in entries)),
            ("cache_entries", "Cached images.", len(entries)),
            ("cache_max_size_bytes", "image_cache_max_size.", self.cache.max_size),
            ("cache_free_bytes", "Bytes free (for unprivileged users) on the cache's "
             "filesystem.", self.cache.free_bytes()),
            ("queued_images", "Images queued for the prefetcher.",
             len(self.cache.get_queued_images())),
        )
        for name, text, value in gauges:
            yield core.GaugeMetricFamily(PREFIX + name, text, value=value)

