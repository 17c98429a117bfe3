"""Cache statistics for people (``glance-cache-mw-manage cache stats``).

Two sources: the cache metadata (entries, sizes, per-image hits: what is cached and how much
each image saved) and the server's metric files in ``metrics_dir`` (downloads by cache status,
bytes served and read from the origin since the server started; see metrics_dir.py). With the
centralized_db driver, every node's metadata is summed up too (``cluster``); the download
counters are each node's own (scrape every node's /metrics for a cluster-wide ratio).

"Bytes saved" of an image is hits x size: each hit is a download the origin did not serve (a
Range hit is counted as a whole image).
"""

import glob
import os

from glance_cache_mw import metrics_dir as metrics_dir_mod
from glance_cache_mw.metrics import CACHE_STATUSES, PREFIX

TOP = 10


def metric_files(directory):
    """The value files of the server (or servers) that keep metrics under ``directory``."""
    files = glob.glob(os.path.join(directory, "*.db"))
    for group_dir in glob.glob(os.path.join(directory, metrics_dir_mod.GROUP_PREFIX + "*")):
        try:
            pgid = int(os.path.basename(group_dir)[len(metrics_dir_mod.GROUP_PREFIX):])
        except ValueError:
            continue
        if metrics_dir_mod.is_group_alive(pgid):
            files += glob.glob(os.path.join(group_dir, "*.db"))
    return files


def read_counters(directory):
    """{(sample name, sorted label items): value} summed over every process's file."""
    from prometheus_client import multiprocess

    samples = {}
    for family in multiprocess.MultiProcessCollector.merge(metric_files(directory)):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0) + sample.value
    return samples


def _sum(samples, name, **labels):
    wanted = set(labels.items())
    return int(sum(value for (sample, items), value in samples.items()
                   if sample == PREFIX + name and wanted <= set(items)))


def download_stats(samples):
    """Downloads and bytes by cache status, hit ratio and origin bytes from the counters."""
    downloads = {s: _sum(samples, "downloads_total", cache=s) for s in CACHE_STATUSES}
    served = {s: _sum(samples, "download_bytes_total", cache=s) for s in CACHE_STATUSES}
    total = sum(downloads.values())
    return {
        "downloads": downloads,
        "hit_ratio": (downloads["HIT"] / total) if total else None,
        "bytes_served": served,
        "bytes_served_from_cache": served["HIT"] + served["COALESCED"],
        "bytes_read_from_origin": _sum(samples, "origin_bytes_total"),
        "evictions": {dict(items)["reason"]: int(value)
                      for (sample, items), value in sorted(samples.items())
                      if sample == PREFIX + "evictions_total" and value},
    }


def cache_stats(cache, top=TOP):
    """Entries, size, fullness, free bytes, oldest entries and the top images of ``cache``."""
    entries = cache.get_cached_images()
    size = sum(e["size"] for e in entries)
    for entry in entries:
        entry["bytes_saved"] = entry["hits"] * entry["size"]
    oldest = min(entries, key=lambda e: (e["last_modified"], e["image_id"]), default=None)
    lru = min(entries, key=lambda e: (e["last_accessed"], e["image_id"]), default=None)

    def brief(entry):
        return {k: entry[k] for k in ("image_id", "hits", "size", "bytes_saved",
                                      "last_accessed", "last_modified")}
    return {
        "entries": len(entries),
        "size": size,
        "max_size": cache.max_size,
        "fullness": size / cache.max_size if cache.max_size else None,
        "free_bytes": cache.free_bytes(),
        "queued_images": len(cache.get_queued_images()),
        "oldest_entry": brief(oldest) if oldest else None,
        "least_recently_used": brief(lru) if lru else None,
        "top_by_hits": [brief(e) for e in sorted(
            entries, key=lambda e: (-e["hits"], e["image_id"]))[:top] if e["hits"]],
        "top_by_bytes_saved": [brief(e) for e in sorted(
            entries, key=lambda e: (-e["bytes_saved"], e["image_id"]))[:top]
            if e["bytes_saved"]],
    }


def collect(cache, metrics_directory, node_summaries=None, top=TOP):
    """Everything ``cache stats`` shows, as one JSON-ready dict."""
    result = {"cache": cache_stats(cache, top),
              **download_stats(read_counters(metrics_directory)),
              "metrics_dir": os.path.abspath(metrics_directory)}
    if node_summaries is not None:
        result["cluster"] = {"nodes": node_summaries,
                             "entries": sum(n["entries"] for n in node_summaries),
                             "size": sum(n["size"] for n in node_summaries),
                             "hits": sum(n["hits"] for n in node_summaries),
                             "bytes_saved": sum(n["bytes_saved"] for n in node_summaries)}
    return result
