"""The measurements of tools/bench_download_run.py: its data, client runs and cold downloads.

:func:`load` is one run of tools/bench_download.py's client against a server, with the
server's CPU time and the machine's load around it; :func:`interleaved` runs cells
round-robin over the servers and keeps the median; ``measure_hits`` (a-d), ``measure_cold``
and ``measure_fresh_cold`` (e, f) and ``measure_paced_cold`` (g) fill the results dict that
tools/bench_download_report.py renders. Images are made and uploaded through the server's API.
The package never imports this module.
"""

import hashlib
import json
import os
import statistics
import tempfile
import time
import types

import bench_download  # tools/ script beside this one
from bench_download_servers import log, serving   # serving: tests/functional/serving.py

MIB = 1 << 20
GIB = 1 << 30
BIG_SIZE = 256 * MIB
SMALL_SIZE = 64 * 1024
SMALL_COUNT = 16
LOADS = []   # 1-minute load averages seen around every client run


def make_data(path, size):
    """``size`` random bytes into ``path``; returns their MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * MIB))
            digest.update(chunk)
            handle.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def api(port, method, path, body=None, headers=None, expect=(200, 201, 204)):
    status, _, data = serving.http_request("http://127.0.0.1:%d" % port, method, path, body,
                                           headers, timeout_s=300, blocksize=MIB)
    if status not in expect:
        raise RuntimeError("%s %s: %d %s" % (method, path, status, data[:300]))
    return status, data


def upload(port, name, data_path, size):
    _, body = api(port, "POST", "/v2/images", json.dumps(
        {"name": name, "disk_format": "raw", "container_format": "bare"}).encode(),
        {"Content-Type": "application/json"})
    image_id = json.loads(body)["id"]
    with open(data_path, "rb") as handle:
        api(port, "PUT", "/v2/images/%s/file" % image_id, handle,
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    return image_id

def client_args(hash_every, timeout=300):
    return types.SimpleNamespace(max_duration=600.0, timeout=timeout, hash_every=hash_every,
                                 expect_status=200, header=[], client="raw")


def load(server, targets, concurrency, *, seconds=None, requests=None, hash_every=0):
    """One client run against ``server``; the summary plus the server's CPU during it."""
    before = server.cpu()
    load_before = os.getloadavg()[0]
    summary = bench_download.run(targets, concurrency, requests, seconds, client_args(hash_every))
    summary["server_cpu_s"] = server.cpu() - before
    # Other processes on the machine skew throughput (not CPU per request): record the load.
    summary["loadavg_1m"] = (load_before, os.getloadavg()[0])
    LOADS.extend(summary["loadavg_1m"])
    ok = max(summary["ok"], 1)
    summary["cpu_ms_per_request"] = summary["server_cpu_s"] * 1000.0 / ok
    summary["cpu_s_per_gib"] = (summary["server_cpu_s"] / (summary["bytes"] / GIB)
                                if summary["bytes"] else None)
    if summary["errors"]:
        log("  ERRORS on %s: %s", server.name, summary["error_kinds"])
    return summary


def interleaved(cells, concurrency, seconds, repeat, key):
    """Run every (label, server, targets) cell ``repeat`` times, round-robin over the servers
    (the order rotated each round), so that load from elsewhere on the machine hits all of
    them alike; per label the run with the median ``key`` is returned (with "all_runs")."""
    runs = {label: [] for label, _, _ in cells}
    for round_no in range(repeat):
        shift = round_no % len(cells)
        for label, server, targets in cells[shift:] + cells[:shift]:
            runs[label].append(load(server, targets, concurrency, seconds=seconds))
    best = {}
    for label, measured in runs.items():
        measured.sort(key=lambda run: run[key])
        pick = measured[len(measured) // 2]
        pick["all_runs"] = [round(run[key], 1) for run in measured]
        for run in measured:
            run.pop("records", None)
        best[label] = pick
    return best


def targets_for(port, path_fmt, images):
    return [bench_download.Target("http://127.0.0.1:%d%s#size=%d&md5=%s"
                                  % (port, path_fmt % image["id"], image["size"], image["md5"]))
            for image in images]


def measure_hits(servers, big, smalls, args, results):
    """(a)-(d): big files at C=1,4,16 and 64 KiB files at C=16, all servers interleaved.

    ``servers``: [(label, server, path format)]."""
    big_cells, small_cells = [], []
    for label, server, path_fmt in servers:
        big_targets = targets_for(server.port, path_fmt, [big])
        small_targets = targets_for(server.port, path_fmt, smalls)
        # Warm-up: every body MD5-checked (the fill happened before, for the cache servers).
        for targets, conc, n in ((big_targets, 2, 4), (small_targets, 16, 320)):
            warm = load(server, targets, conc, requests=n, hash_every=1)
            if warm["errors"] or warm["hashed"] != n:
                raise RuntimeError("%s warm-up failed: %s" % (label, warm["error_kinds"]))
            log("  %s warm-up: %d bodies MD5-checked, X-Image-Cache %s", label,
                warm["hashed"], warm["x_image_cache"])
        big_cells.append((label, server, big_targets))
        small_cells.append((label, server, small_targets))
    for conc in args.concurrency:
        log("256 MiB hits/origin at C=%d, %d rounds over %d servers", conc, args.repeat,
            len(servers))
        for label, run in interleaved(big_cells, conc, args.seconds, args.repeat,
                                      "mib_per_s").items():
            results["big"][label][str(conc)] = run
            log("  %s 256 MiB C=%d: %.0f MiB/s (runs %s) p50 %.1f ms p99 %.1f ms, server CPU "
                "%.2f s/GiB, X-Image-Cache %s, load %.1f", label, conc, run["mib_per_s"],
                run["all_runs"], run["latency_ms"]["p50"], run["latency_ms"]["p99"],
                run["cpu_s_per_gib"], run["x_image_cache"], run["loadavg_1m"][1])
    log("64 KiB at C=16, %d rounds over %d servers", args.repeat, len(servers))
    for label, run in interleaved(small_cells, 16, args.seconds, args.repeat,
                                  "requests_per_s").items():
        results["small"][label] = run
        log("  %s 64 KiB C=16: %.0f req/s (runs %s) p50 %.2f ms p99 %.2f ms, server CPU "
            "%.3f ms/req, X-Image-Cache %s, load %.1f", label, run["requests_per_s"],
            run["all_runs"], run["latency_ms"]["p50"], run["latency_ms"]["p99"],
            run["cpu_ms_per_request"], run["x_image_cache"], run["loadavg_1m"][1])


def evict(port, image_id):
    api(port, "DELETE", "/v2/cache/%s" % image_id, expect=(204, 404))


def wait_cached(port, image_id, timeout_s=60):
    """Until the image is in the cache: a fill is verified after its client got the last
    byte, and "its hit" must be a hit, not a follower of that fill."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, body = api(port, "GET", "/v2/cache")
        if any(entry["image_id"] == image_id for entry in json.loads(body)["cached_images"]):
            return
        time.sleep(0.01)
    raise RuntimeError("image %s was not cached %ss after its fill" % (image_id, timeout_s))


def measure_cold(server, port, cold, args, results, label):
    """(e) and (f): one cold download, its hit, 16 concurrent cold downloads."""
    targets = targets_for(port, "/v2/images/%s/file", [cold])
    out = {"single": [], "hit": [], "sixteen": []}
    # Unmeasured correctness run: 16 cold downloads, every body MD5-checked.
    evict(port, cold["id"])
    check = load(server, targets, 16, requests=16, hash_every=1)
    if check["errors"] or check["hashed"] != 16:
        raise RuntimeError("%s cold verification failed: %s" % (label, check["error_kinds"]))
    log("  %s cold x16 verification: 16 bodies MD5-checked, X-Image-Cache %s", label,
        check["x_image_cache"])
    for rep in range(args.repeat):
        evict(port, cold["id"])
        single = load(server, targets, 1, requests=1)
        wait_cached(port, cold["id"])
        hit = load(server, targets, 1, requests=1)
        evict(port, cold["id"])
        log_before = len(server.log_text())
        sixteen = load(server, targets, 16, requests=16)
        fallbacks = server.log_text()[log_before:].count("abandoned")
        statuses = sixteen["x_image_cache"]
        ends = sorted(r["end"] - sixteen["start_at"] for r in sixteen["records"])
        starts = [r["start"] - sixteen["start_at"] for r in sixteen["records"]]
        first_bytes = sorted(r["headers_at"] - sixteen["start_at"] for r in sixteen["records"]
                             if r["headers_at"] is not None)
        entry = {
            "single_s": single["wall_s"], "single_status": single["x_image_cache"],
            "hit_s": hit["wall_s"], "hit_status": hit["x_image_cache"],
            "sixteen_finish_s": ends, "sixteen_last_s": ends[-1],
            "sixteen_start_spread_s": max(starts) - min(starts),
            "sixteen_headers_s": first_bytes,
            "sixteen_status": statuses, "sixteen_errors": sixteen["errors"],
            "origin_reads": statuses.get("MISS", 0) + statuses.get("BYPASS", 0) + fallbacks,
            "follower_fallbacks": fallbacks,
            "server_cpu_s_single": single["server_cpu_s"],
            "server_cpu_s_sixteen": sixteen["server_cpu_s"],
            "errors": single["errors"] + hit["errors"] + sixteen["errors"],
        }
        entry["last_vs_single"] = entry["sixteen_last_s"] / entry["single_s"]
        entry["cold_vs_hit"] = entry["single_s"] / entry["hit_s"]
        out["single"].append(entry)
        log("  %s cold rep %d: one cold %.2f s (%s), its hit %.3f s (%s); 16 cold: all done by "
            "%.2f s = %.2fx one cold (headers of the 16 at %.2f..%.2f s), X-Image-Cache %s, "
            "origin reads %d", label, rep + 1, entry["single_s"], single["x_image_cache"],
            entry["hit_s"], hit["x_image_cache"], entry["sixteen_last_s"],
            entry["last_vs_single"], first_bytes[0] if first_bytes else -1,
            first_bytes[-1] if first_bytes else -1, statuses, entry["origin_reads"])
    reps = out["single"]
    results["cold"][label] = {
        "reps": reps,
        "single_s": statistics.median(r["single_s"] for r in reps),
        "hit_s": statistics.median(r["hit_s"] for r in reps),
        "sixteen_last_s": statistics.median(r["sixteen_last_s"] for r in reps),
        "sixteen_last_headers_s": statistics.median(
            (r["sixteen_headers_s"] or [float("nan")])[-1] for r in reps),
        "last_vs_single": statistics.median(r["last_vs_single"] for r in reps),
        "cold_vs_hit": statistics.median(r["cold_vs_hit"] for r in reps),
        "origin_reads_max": max(r["origin_reads"] for r in reps),
        "errors": sum(r["errors"] for r in reps),
    }


def write_floor(directory, size=BIG_SIZE, chunk=MIB):
    """Seconds a plain loop takes to write ``size`` bytes, ``chunk`` at a time, to a new file
    in ``directory`` (no fsync: a fill's client does not wait for one either); and the file,
    which the caller removes. The disk's part of a cold download: a fill writes as much."""
    data = os.urandom(chunk)
    fd, path = tempfile.mkstemp(prefix="write-floor-", dir=directory)
    try:
        started = time.monotonic()
        for _ in range(size // chunk):
            os.write(fd, data)
        return time.monotonic() - started, path
    finally:
        os.close(fd)


def measure_fresh_cold(server, port, source, cache_dir, args, results, label):
    """(f) for an image just uploaded, whose cache file lands in space the filesystem has
    not just freed (an evicted image's re-fill does: much faster on this machine's disk),
    and the write floor in the same conditions: each rep uploads two images, one followed
    by its cold download, the other by a plain write loop of as many bytes (the order
    alternates); files and images are removed only when both ran."""
    entry = results["cold"][label]
    fresh, floors = [], []
    for rep in range(args.repeat):
        uploaded, floor_path = [], None
        for step in (("cold", "floor") if rep % 2 == 0 else ("floor", "cold")):
            image = {"id": upload(port, "fresh-%d-%s" % (rep, step), source["path"],
                                  source["size"]),
                     "size": source["size"], "md5": source["md5"]}
            uploaded.append(image["id"])
            if step == "floor":
                floor_s, floor_path = write_floor(cache_dir)
                continue
            single = load(server, targets_for(port, "/v2/images/%s/file", [image]), 1,
                          requests=1)
            if single["errors"] or single["x_image_cache"] != {"MISS": 1}:
                raise RuntimeError("%s fresh cold download: errors %d, X-Image-Cache %s"
                                   % (label, single["errors"], single["x_image_cache"]))
            wait_cached(port, image["id"])
        os.unlink(floor_path)
        for image_id in uploaded:
            api(port, "DELETE", "/v2/images/%s" % image_id)
        fresh.append(single["wall_s"])
        floors.append(floor_s)
        log("  %s fresh cold rep %d: cold download of a just-uploaded image %.2f s; a plain "
            "write loop of as many bytes to a new file, just after an upload too, %.2f s",
            label, rep + 1, fresh[-1], floor_s)
    entry["fresh_s"] = statistics.median(fresh)
    entry["fresh_all_s"] = fresh
    entry["write_floor_s"] = statistics.median(floors)
    entry["write_floor_all_s"] = floors
    entry["fresh_vs_hit"] = entry["fresh_s"] / entry["hit_s"]
    entry["fresh_vs_floor"] = entry["fresh_s"] / entry["write_floor_s"]


def paced_label(kind, rate):
    return "%s, origin %g MiB/s" % (kind, rate)


def measure_paced_cold(args, start_paced, cold, results):
    """(e) again with the origin paced like a remote store (--origin-rate), both servers."""
    if not args.origin_rate:
        return
    for kind in ("eventlet", "gunicorn"):
        label = paced_label(kind, args.origin_rate)
        server = start_paced(kind)
        log("(e) %s: cold downloads", label)
        measure_cold(server, server.port, cold, args, results, label)
        results["cold"][label]["origin_mib_s"] = args.origin_rate
        server.stop()

