#!/usr/bin/env python3
"""Download benchmark of the cache (issue 4): hits, origin only, nginx, cold and coalesced fills.

    .venv/bin/python tools/bench_download_run.py --update-docs

One invocation measures, on 127.0.0.1, with ``tools/bench_download.py`` as the client:
  (a) hits of a 256 MiB image at concurrency 1, 4, 16 under glance-cache-mw-api (eventlet,
      ``--eventlet-workers``, default 2) and gunicorn (gthread, ``--gunicorn-workers`` x
      ``--gunicorn-threads``, default 2 x 16, so 16 connections never queue for a thread
      even when accepted unevenly; wsgi.file_wrapper, so sendfile);
  (b) the same bytes served by nginx from disk (sendfile on; installed with
      ``apt-get install -y nginx`` when missing, which needs root), 2 worker processes;
  (c) the same servers with tools/bench-nocache.ini (the pipeline without the cache filter);
  (d) 64 KiB images (16 of them, round-robin) at concurrency 16, every server;
  (e) 16 concurrent cold downloads of a 256 MiB image vs one cold download alone, counting
      origin reads (responses marked MISS/BYPASS, plus followers that fell back to the origin,
      which the server logs as "abandoned"), under both cache servers;
  (f) a cold 256 MiB download vs its hit, under both cache servers; and the cold download of
      a just-uploaded image next to a plain write loop of as many bytes (the disk's part);
  (g) (e) again with the origin paced to `--origin-rate` MiB/s (default 100) like a remote
      store, by tools/bench_origin_rate.py: there the origin, not sending, limits a fill.

Setup: a temp dir holds the database (SQLite), the file store, the cache and the INIs (copies
of etc/glance-cache-mw.ini and tools/bench-nocache.ini with [DEFAULT] pointing there; the cache
filter is put into the noauth pipeline when the sample does not have it yet). Images are
created and uploaded through the real server's API (POST /v2/images, PUT .../file) from random
data whose MD5 the client then checks; each hit image is fetched once (the fill) and warmed up
with a fully hashed run before it is measured. Cold runs first evict the image through the
cache API (DELETE /v2/cache/{id}); the page cache stays warm for every server, nginx included.

All five servers are started at once and the throughput cells are interleaved: each cell runs
``--repeat`` rounds (default 3) of ``--seconds`` per server, round-robin over the servers (only
one loaded at a time), so that load from elsewhere on the machine hits them alike; the run with
the median throughput is reported, with its latency and server CPU. Server CPU is utime+stime
from /proc/<pid>/stat of every process of the server (master/supervisor and workers), read
before and after each run. Cold runs are timed without client hashing; one extra unmeasured
run hashes every body. Progress goes to stderr; every process and the temp dir are removed
at the end, also on Ctrl-C or SIGTERM.
"""

import argparse
import configparser
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_download  # noqa: E402  (tools/ script beside this one)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SAMPLE_INI = os.path.join(ROOT, "etc", "glance-cache-mw.ini")
NOCACHE_INI = os.path.join(ROOT, "tools", "bench-nocache.ini")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
CHART = os.path.join(ROOT, "docs", "bench_download.png")
SECTION = "## Downloads (tools/bench_download_run.py)"

MIB = 1 << 20
GIB = 1 << 30
BIG_SIZE = 256 * MIB
SMALL_SIZE = 64 * 1024
SMALL_COUNT = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADS = []   # 1-minute load averages seen around every client run

# Targets of issue 4 and the Glance 33 reference measured on this machine (uWSGI, 4 procs).
GLANCE_REFERENCE = {
    "big_hit_c1_mib_s": 1237, "big_hit_c1_vs_nginx": 0.67, "small_hit_c16_req_s": 117,
    "small_cpu_ms_per_hit": 12.6, "nginx_small_req_s": 21500, "cold16_origin_reads": 16,
    "cold_vs_hit": 8,
}


def log(message, *args):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), message % args if args else message))
    sys.stderr.flush()


# --- processes ------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root_pid):
    """``root_pid`` and all its descendants (from /proc/*/stat)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pids):
    """utime+stime of ``pids`` in seconds (processes already gone count as 0)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


class Server:
    """A server process group we started: its port, its pids, and how to stop it."""

    def __init__(self, name, argv, port, workdir, env=None, port_from_stdout=False):
        self.name = name
        self.port = port
        self.stdout_path = os.path.join(workdir, "%s.out" % name)
        self.stderr_path = os.path.join(workdir, "%s.log" % name)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=workdir,
                                         env={**os.environ, **(env or {})},
                                         start_new_session=True)
        self.port_from_stdout = port_from_stdout
        self.pids = []

    def wait_ready(self, path="/healthcheck", timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (self.name, self.proc.returncode,
                                                                   self.stderr_path))
            if self.port_from_stdout and not self.port:
                with open(self.stdout_path) as handle:
                    match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", handle.read())
                if match:
                    self.port = int(match.group(1))
            if self.port:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    conn.request("GET", path)
                    status = conn.getresponse().status
                    conn.close()
                    if status < 500:
                        time.sleep(0.5)   # let every worker come up
                        self.pids = process_tree(self.proc.pid)
                        log("%s ready on port %d (pids %s)", self.name, self.port, self.pids)
                        return self
            time.sleep(0.1)
        raise RuntimeError("%s did not come up in %ss; see %s" % (self.name, timeout_s,
                                                                  self.stderr_path))

    def cpu(self):
        return cpu_seconds(process_tree(self.proc.pid))

    def log_text(self):
        with open(self.stderr_path, errors="replace") as handle:
            return handle.read()

    def stop(self):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Workers that outlived their parent: the group is ours, so end it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --- configuration and data -----------------------------------------------------------------

def write_ini(template, path, settings, add_cache, origin_rate=None):
    """Copy ``template`` with ``settings`` in [DEFAULT]; ``origin_rate`` (MiB/s) puts
    tools/bench_origin_rate.py right before the images app."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(template)
    for key, value in settings.items():
        parser["DEFAULT"][key] = str(value)
    parser["DEFAULT"]["flavor"] = "noauth"
    if parser.has_section("paste_deploy"):
        parser.remove_option("paste_deploy", "flavor")
    section = "pipeline:glance-cache-mw-noauth"
    stages = parser[section]["pipeline"].split()
    if add_cache and "cache" not in stages:
        log("note: %s has no cache filter in its noauth pipeline; adding cachemanage cache",
            template)
        stages[stages.index("images"):stages.index("images")] = ["cachemanage", "cache"]
        for name in ("cache", "cachemanage"):
            if not parser.has_section("filter:" + name):
                parser["filter:" + name] = {"use": "egg:glance_cache_mw#" + name}
    if not add_cache:
        assert "cache" not in stages, "the no-cache pipeline must not have the cache filter"
    if origin_rate:
        stages.insert(stages.index("images"), "origin_rate")
        parser["filter:origin_rate"] = {
            "paste.filter_factory": "bench_origin_rate:filter_factory",
            "rate_mib_s": str(origin_rate)}
    parser[section]["pipeline"] = " ".join(stages)
    with open(path, "w") as handle:
        parser.write(handle)
    return " ".join(stages)


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
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=MIB)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status not in expect:
            raise RuntimeError("%s %s: %d %s" % (method, path, resp.status, data[:300]))
        return resp.status, data
    finally:
        conn.close()


def upload(port, name, data_path, size):
    _, body = api(port, "POST", "/v2/images", json.dumps(
        {"name": name, "disk_format": "raw", "container_format": "bare"}).encode(),
        {"Content-Type": "application/json"})
    image_id = json.loads(body)["id"]
    with open(data_path, "rb") as handle:
        api(port, "PUT", "/v2/images/%s/file" % image_id, handle,
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    return image_id


# --- measuring ------------------------------------------------------------------------------

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

# --- nginx ----------------------------------------------------------------------------------

def ensure_nginx():
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                     else None)
    if path:
        return path
    if os.geteuid() != 0:
        raise SystemExit("nginx is missing and installing it needs root: "
                         "apt-get install -y nginx")
    log("installing nginx (apt-get install -y nginx)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(nginx, workdir, root_dir, workers):
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""   # the temp dir is 0700
    with open(conf, "w") as handle:
        handle.write("""%(user)sworker_processes %(workers)d;
daemon off;
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/logs/error.log warn;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    access_log %(prefix)s/logs/access.log combined buffer=256k;
    client_body_temp_path %(prefix)s/body;
    proxy_temp_path %(prefix)s/proxy;
    fastcgi_temp_path %(prefix)s/fastcgi;
    uwsgi_temp_path %(prefix)s/uwsgi;
    scgi_temp_path %(prefix)s/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
        location = /healthcheck { return 200 "OK"; }
    }
}
""" % {"user": user, "workers": workers, "prefix": prefix, "port": port, "root": root_dir})
    return Server("nginx", [nginx, "-p", prefix, "-c", conf], port, workdir)


# --- report ---------------------------------------------------------------------------------

def evaluate(results):
    big, small, cold = results["big"], results["small"], results["cold"]
    nginx_c1 = big["nginx"]["1"]
    checks = []

    def add(name, ok, detail):
        checks.append({"target": name, "met": bool(ok), "detail": detail})

    for label, factor in (("gunicorn", 0.95), ("eventlet", 0.8)):
        ratio = big[label]["1"]["mib_per_s"] / nginx_c1["mib_per_s"]
        add("256 MiB hit at C=1 >= %.2fx nginx MiB/s (%s)" % (factor, label), ratio >= factor,
            "%.0f vs %.0f MiB/s = %.2fx" % (big[label]["1"]["mib_per_s"],
                                             nginx_c1["mib_per_s"], ratio))
    for label in ("gunicorn", "eventlet"):
        ratio = big[label]["1"]["cpu_s_per_gib"] / nginx_c1["cpu_s_per_gib"]
        add("server CPU per GiB at C=1 <= 1.1x nginx (%s)" % label, ratio <= 1.1,
            "%.3f vs %.3f s/GiB = %.2fx" % (big[label]["1"]["cpu_s_per_gib"],
                                             nginx_c1["cpu_s_per_gib"], ratio))
    for label in ("gunicorn", "eventlet"):
        run = small[label]
        add("64 KiB hits >= 3000 req/s at C=16, <= 0.5 ms CPU/hit (%s)" % label,
            run["requests_per_s"] >= 3000 and run["cpu_ms_per_request"] <= 0.5,
            "%.0f req/s, %.3f ms CPU/hit (nginx %.0f req/s, %.3f ms)"
            % (run["requests_per_s"], run["cpu_ms_per_request"],
               small["nginx"]["requests_per_s"], small["nginx"]["cpu_ms_per_request"]))
    floor = 16 * BIG_SIZE / MIB / big["nginx"]["16"]["mib_per_s"]
    for label, entry in cold.items():
        add("16 concurrent cold downloads read the origin once (%s)" % label,
            entry["origin_reads_max"] == 1 and not entry["errors"],
            "at most %d origin read(s) per run over %d runs; X-Image-Cache of the last run: %s"
            % (entry["origin_reads_max"], len(entry["reps"]),
               ", ".join("%s %d" % kv for kv in sorted(entry["reps"][-1]["sixteen_status"]
                                                        .items()))))
        add("16 concurrent cold all done <= 1.5x one cold (%s)" % label,
            entry["last_vs_single"] <= 1.5,
            "last of 16 at %.2f s vs one cold %.2f s = %.2fx (bandwidth floor %.2f s = %.2fx)"
            % (entry["sixteen_last_s"], entry["single_s"], entry["last_vs_single"], floor,
               floor / entry["single_s"]))
        if entry.get("origin_mib_s"):
            continue   # a paced origin makes any cold download slow: no cold/hit target
        add("cold download <= 3x its hit (%s)" % label, entry["cold_vs_hit"] <= 3,
            "cold %.2f s vs hit %.3f s = %.1fx" % (entry["single_s"], entry["hit_s"],
                                                 entry["cold_vs_hit"]))
        if "fresh_s" in entry:
            add("cold download <= 3x its hit, image just uploaded (%s)" % label,
                entry["fresh_vs_hit"] <= 3,
                "cold %.2f s vs hit %.3f s = %.1fx; a plain write loop of as many bytes, also "
                "just after an upload: %.2f s (the cold download = %.2fx that)"
                % (entry["fresh_s"], entry["hit_s"], entry["fresh_vs_hit"],
                   entry["write_floor_s"], entry["fresh_vs_floor"]))
    return checks


def markdown(results, checks, command):
    meta = results["meta"]
    lines = [SECTION, "",
             "Reproduce every number below from the repository root, as root (it installs nginx "
             "from Debian when missing and runs it), ideally on an otherwise idle machine; the "
             "chart needs matplotlib in .venv (`.venv/bin/pip install matplotlib`). About 9 "
             "minutes:", "",
             "```", command, "```", "",
             "Machine: %s, %d cores, Python %s; %s%s. Client: tools/bench_download.py (one process "
             "per connection, keep-alive, its raw HTTP/1.1 client reading with recv_into into a "
             "1 MiB buffer; byte count checked on every response, MD5 of every body in the "
             "warm-up and cold-verification runs, none in the timed runs). Servers: glance-cache-mw-api (eventlet, %d workers, its wsgi.file_wrapper = sendfile), "
             "gunicorn %s (gthread, %d workers x %d threads, wsgi.file_wrapper = sendfile), "
             "nginx %s (%d workers, sendfile on, access log buffered). Each cell: median of %d "
             "runs of %g s, the servers interleaved round-robin (all of them up at once, "
             "only one loaded at a time); server CPU = utime+stime of all server processes from /proc. "
             "1-minute load average during the runs: %.1f to %.1f (other work on the same 2 "
             "cores lowers throughput; CPU per request/GiB is the steadier figure)."
             % (meta["cpu"], meta["cores"], meta["python"], meta["date"],
                ", code at %s" % meta["commit"] if meta.get("commit") else "",
                meta["eventlet_workers"],
                meta["gunicorn_version"], meta["gunicorn_workers"], meta["gunicorn_threads"],
                meta["nginx_version"], meta["nginx_workers"], meta["repeat"], meta["seconds"],
                min(LOADS), max(LOADS)),
             "", "### Hits and origin-only, 256 MiB image", "",
             "| server | C | MiB/s | (each run) | p50 ms | p99 ms | server CPU s/GiB "
             "| vs nginx MiB/s |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    big = results["big"]
    for label in results["labels"]:
        for conc, run in big[label].items():
            ratio = run["mib_per_s"] / big["nginx"][conc]["mib_per_s"]
            lines.append("| %s | %s | %.0f | %s | %.1f | %.1f | %.3f | %.2fx |" % (
                label, conc, run["mib_per_s"], " / ".join("%.0f" % v for v in run["all_runs"]),
                run["latency_ms"]["p50"], run["latency_ms"]["p99"], run["cpu_s_per_gib"], ratio))
    lines += ["", "### 64 KiB images, C=16 (16 images round-robin)", "",
              "| server | req/s | (each run) | p50 ms | p99 ms | server CPU ms/request "
              "| X-Image-Cache |",
              "|---|---:|---|---:|---:|---:|---|"]
    for label in results["labels"]:
        run = results["small"][label]
        lines.append("| %s | %.0f | %s | %.2f | %.2f | %.3f | %s |" % (
            label, run["requests_per_s"], " / ".join("%.0f" % v for v in run["all_runs"]),
            run["latency_ms"]["p50"], run["latency_ms"]["p99"],
            run["cpu_ms_per_request"], ", ".join("%s %d" % kv for kv in
                                                 sorted(run["x_image_cache"].items()))))
    lines += ["", "### Cold downloads, 256 MiB (median of %d)" % meta["repeat"], "",
              "Origin: the file store, in the page cache (faster than this machine can send "
              "16 copies), and, in the rows that say so, the same store paced to a remote "
              "store's rate by tools/bench_origin_rate.py (`--origin-rate`).", "",
              "| server | one cold s | its hit s | cold/hit | 16 cold: last headers s "
              "| 16 cold: last done s | /one cold | origin reads (max) "
              "| X-Image-Cache of 16 (last run) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, entry in results["cold"].items():
        last = entry["reps"][-1]["sixteen_status"]
        lines.append("| %s | %.2f | %.3f | %s | %.2f | %.2f | %.2fx | %d | %s |" % (
            label, entry["single_s"], entry["hit_s"],
            "-" if entry.get("origin_mib_s") else "%.1fx" % entry["cold_vs_hit"],
            entry.get("sixteen_last_headers_s", float("nan")), entry["sixteen_last_s"],
            entry["last_vs_single"], entry["origin_reads_max"],
            ", ".join("%s %d" % kv for kv in sorted(last.items()))))
    floor = 16 * BIG_SIZE / MIB / results["big"]["nginx"]["16"]["mib_per_s"]
    lines += ["", "Bandwidth floor for the 16 cold downloads on this machine: 16 x 256 MiB at "
              "nginx's C=16 hit rate = %.2f s, whatever the cache and the origin do; \"headers\" is when "
              "the response headers arrived (a request that waits for a fill shows it here)."
              % floor]
    fresh = [(label, entry) for label, entry in results["cold"].items() if "fresh_s" in entry]
    if fresh:
        lines += ["", "### Cold download of a just-uploaded image, 256 MiB", "",
                  "Each rep uploads two images; one is then downloaded (cold), the other is "
                  "followed by a plain Python loop writing as many bytes, 1 MiB at a time, to a "
                  "new file in the cache directory (no fsync; the order alternates). The fill "
                  "writes every byte into the cache file before sending it on, so the disk's "
                  "write speed at that moment is the cold download's floor; on this machine's "
                  "virtual disk it swings between ~0.05 s and ~0.85 s per 256 MiB (seemingly slow "
                  "into blocks the filesystem has not just freed, fast right after a deletion).", "",
                  "| server | cold s (median) | each rep | write loop s (median) | each rep "
                  "| cold / its hit | cold / write loop |",
                  "|---|---:|---|---:|---|---:|---:|"]
        for label, entry in fresh:
            lines.append("| %s | %.2f | %s | %.2f | %s | %.1fx | %.2fx |" % (
                label, entry["fresh_s"], " / ".join("%.2f" % v for v in entry["fresh_all_s"]),
                entry["write_floor_s"],
                " / ".join("%.2f" % v for v in entry["write_floor_all_s"]),
                entry["fresh_vs_hit"], entry["fresh_vs_floor"]))
    lines += ["", "### Targets (issue 4)", "", "| target | met | measured |", "|---|---|---|"]
    for check in checks:
        lines.append("| %s | %s | %s |" % (check["target"], "met" if check["met"] else
                                            "**not met**", check["detail"]))
    ref = GLANCE_REFERENCE
    lines += ["", "Glance 33 under uWSGI (4 procs) on this machine, for reference: 256 MiB hit at "
              "C=1 %d MiB/s = %.2fx nginx; 64 KiB hits at C=16 %d req/s (%.1f ms server CPU per "
              "hit; nginx %d req/s); 16 cold = %d origin reads; cold = %dx hit."
              % (ref["big_hit_c1_mib_s"], ref["big_hit_c1_vs_nginx"], ref["small_hit_c16_req_s"],
                 ref["small_cpu_ms_per_hit"], ref["nginx_small_req_s"],
                 ref["cold16_origin_reads"], ref["cold_vs_hit"]),
              "", "![downloads](bench_download.png)", ""]
    # Wrap prose like the rest of docs/ (tables, code and headings stay one line each).
    wrapped = []
    for line in lines:
        if len(line) > 96 and not line.startswith(("|", "#", "`", "!", ".venv")):
            wrapped.extend(textwrap.wrap(line, 96, break_on_hyphens=False))
        else:
            wrapped.append(line)
    return "\n".join(wrapped)


HAND_WRITTEN = "<!-- bench_download_run.py keeps the rest of this section as it is -->"


def update_docs(section_text, path=DOCS):
    """Replace (or append) our section of docs/benchmarks.md; re-read just before writing.

    Text after the HAND_WRITTEN marker (profiles, diagnoses) is kept across runs."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + section_text.rstrip("\n") + "\n"
    else:
        nxt = re.search(r"^## ", text[start + len(SECTION):], re.MULTILINE)
        end = start + len(SECTION) + nxt.start() if nxt else len(text)
        kept = text[start:end]
        kept = kept[kept.index(HAND_WRITTEN):].rstrip("\n") + "\n" if HAND_WRITTEN in kept else ""
        body = section_text.rstrip("\n") + "\n" + ("\n" + kept if kept else "")
        new = text[:start] + body + ("\n" + text[end:] if nxt else "")
    with open(path, "w") as handle:
        handle.write(new)


def chart(results, path=CHART):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = results["labels"]
    colors = {"nginx": "#444444", "gunicorn": "#1f77b4", "eventlet": "#2ca02c",
              "gunicorn-nocache": "#aec7e8", "eventlet-nocache": "#98df8a"}
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    concs = list(results["big"]["nginx"])
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [results["big"][label][c]["mib_per_s"] for c in concs]
        ax.bar([x + i * width for x in range(len(concs))], values, width, label=label,
               color=colors.get(label))
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(concs))])
    ax.set_xticklabels(["C=%s" % c for c in concs])
    ax.set_ylabel("MiB/s")
    ax.set_title("256 MiB downloads: throughput")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax = axes[0][1]
    values = [results["big"][label]["1"]["cpu_s_per_gib"] for label in labels]
    ax.bar(labels, values, color=[colors.get(label) for label in labels])
    ax.set_ylabel("server CPU s per GiB (C=1)")
    ax.set_title("256 MiB downloads: server CPU per GiB")
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[1][0]
    values = [results["small"][label]["requests_per_s"] for label in labels]
    ax.bar(labels, values, color=[colors.get(label) for label in labels])
    ax.axhline(3000, color="red", linestyle="--", linewidth=1, label="target 3,000 req/s")
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log)")
    ax.set_title("64 KiB downloads at C=16")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    ax = axes[1][1]
    cold_labels = list(results["cold"])
    for i, label in enumerate(cold_labels):
        entry = results["cold"][label]
        rep = entry["reps"][len(entry["reps"]) // 2]
        color = colors.get(label.split(",")[0])
        ax.scatter(rep["sixteen_finish_s"], [i] * len(rep["sixteen_finish_s"]), marker="|",
                   s=300, color=color, label="%s: 16 cold, finish times" % label)
        headers = rep.get("sixteen_headers_s") or []
        ax.scatter(headers, [i - 0.2] * len(headers), marker=".", color=color,
                   label="%s: 16 cold, headers received" % label)
        ax.scatter([entry["single_s"]], [i + 0.25], marker="o", color=color,
                   label="%s: one cold alone" % label)
        ax.scatter([entry["hit_s"]], [i + 0.25], marker="x", color=color,
                   label="%s: one hit" % label)
        ax.plot([1.5 * entry["single_s"]] * 2, [i - 0.4, i + 0.4], color=color, linestyle=":",
                linewidth=1)
    floor = 16 * BIG_SIZE / MIB / results["big"]["nginx"]["16"]["mib_per_s"]
    ax.axvline(floor, color="black", linestyle="--", linewidth=1,
               label="16 x 256 MiB at nginx's C=16 rate")
    ax.set_yticks(range(len(cold_labels)))
    ax.set_yticklabels(cold_labels)
    ax.set_ylim(-0.5, len(cold_labels) - 0.2)
    ax.set_xlabel("seconds (dotted: 1.5x one cold)")
    ax.set_title("Cold 256 MiB downloads (median run)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle("glance_cache_mw downloads on 127.0.0.1 (%s)" % results["meta"]["date"])
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[1, 4, 16], help="for the 256 MiB hits (default 1,4,16)")
    parser.add_argument("--eventlet-workers", type=int, default=2)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=16)
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--json-out", help="write all results as JSON here")
    parser.add_argument("--update-docs", action="store_true",
                        help="write docs/bench_download.png and the Downloads section of "
                             "docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    parser.add_argument("--origin-rate", type=float, default=100.0, metavar="MIB_S",
                        help="also time the cold downloads with the origin paced to this rate, "
                             "like a remote store (tools/bench_origin_rate.py; 0 = don't)")
    parser.add_argument("--only", choices=("cold", "small", "big"),
                        help="measure only this part, print its numbers, no report (quick "
                             "iterations on the fill path; not with --update-docs)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="measure nothing: render the report of an earlier --json-out")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.only and (args.update_docs or args.from_json):
        parser.error("--only measures a part: it cannot update the docs or render a report")
    command = ".venv/bin/python tools/bench_download_run.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if args.from_json:
        with open(args.from_json) as handle:
            results = json.load(handle)
        LOADS.extend(results["meta"].get("loadavg_1m_range") or [float("nan")])
        return report(results, results["meta"]["command"], args)
    # Ctrl-C and SIGTERM both end in the cleanup below (SIGINT explicitly: a shell may start
    # a background job with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    nginx = None if args.only in ("cold", "small") else ensure_nginx()
    workdir = tempfile.mkdtemp(prefix="bench-download-")
    servers = []
    try:
        return _run(args, command, nginx, workdir, servers)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            log("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(args, command, nginx, workdir, servers):
    data = os.path.join(workdir, "data")
    settings = {"data_dir": data, "sql_connection": "sqlite:///%s/db.sqlite" % data,
                "filesystem_store_datadir": os.path.join(data, "images"),
                "image_cache_dir": os.path.join(data, "cache"),
                "image_cache_max_size": 8 * GIB, "bind_host": "127.0.0.1", "bind_port": 0,
                "workers": args.eventlet_workers}
    cache_ini = os.path.join(workdir, "cache.ini")
    nocache_ini = os.path.join(workdir, "nocache.ini")
    cache_pipeline = write_ini(SAMPLE_INI, cache_ini, settings, add_cache=True)
    paced_ini = os.path.join(workdir, "paced.ini")
    if args.origin_rate:
        write_ini(SAMPLE_INI, paced_ini, settings, add_cache=True, origin_rate=args.origin_rate)
    nocache_pipeline = write_ini(NOCACHE_INI, nocache_ini, settings, add_cache=False)
    log("temp dir %s; pipelines: cache [%s], no cache [%s]", workdir, cache_pipeline,
        nocache_pipeline)
    subprocess.run([os.path.join(VENV_BIN, "glance-cache-mw-manage"), "--config", cache_ini,
                    "db", "sync"], check=True, cwd=workdir, stdout=subprocess.DEVNULL)

    def start(kind, ini, name=None):
        name = name or kind
        env = {"PYTHONPATH": os.path.join(ROOT, "tools")}   # for bench_origin_rate
        if kind == "eventlet":
            server = Server(name, [os.path.join(VENV_BIN, "glance-cache-mw-api"), "--config", ini,
                                   "--graceful-timeout", "5"], None, workdir, env=env,
                            port_from_stdout=True)
        else:
            port = free_port()
            server = Server(name, [os.path.join(VENV_BIN, "gunicorn"), "-b",
                                   "127.0.0.1:%d" % port, "-k", "gthread",
                                   "-w", str(args.gunicorn_workers),
                                   "--threads", str(args.gunicorn_threads),
                                   "--graceful-timeout", "5", "--timeout", "300",
                                   "glance_cache_mw.wsgi:application"], port, workdir,
                            env={"GLANCE_CACHE_MW_CONFIG": ini, **env})
        servers.append(server)
        return server.wait_ready()

    # Data, through the real server's API.
    sources = os.path.join(workdir, "src")
    os.makedirs(sources)
    log("making %d MiB + %d MiB + %d x %d KiB of random data", BIG_SIZE // MIB, BIG_SIZE // MIB,
        SMALL_COUNT, SMALL_SIZE // 1024)
    specs = [("big", BIG_SIZE), ("cold", BIG_SIZE)] + [("small%02d" % i, SMALL_SIZE)
                                                       for i in range(SMALL_COUNT)]
    images = {}
    server = start("eventlet", cache_ini)
    for name, size in specs:
        path = os.path.join(sources, name)
        md5 = make_data(path, size)
        images[name] = {"id": upload(server.port, name, path, size), "size": size, "md5": md5}
        os.unlink(path)
    log("uploaded %d images through the API (POST /v2/images, PUT /v2/images/{id}/file)",
        len(images))
    fresh = {"path": os.path.join(sources, "fresh"), "size": BIG_SIZE}
    fresh["md5"] = make_data(fresh["path"], BIG_SIZE)   # uploaded anew by each fresh cold rep

    def cold_runs(label, server, results):
        log("(e,f) %s: cold downloads", label)
        measure_cold(server, server.port, cold, args, results, label)
        measure_fresh_cold(server, server.port, fresh, settings["image_cache_dir"], args,
                           results, label)
    big, cold = images["big"], images["cold"]
    smalls = [images["small%02d" % i] for i in range(SMALL_COUNT)]
    fill = load(server, targets_for(server.port, "/v2/images/%s/file", [big] + smalls), 1,
                requests=1 + SMALL_COUNT, hash_every=1)
    log("first downloads (fills): X-Image-Cache %s, errors %d", fill["x_image_cache"],
        fill["errors"])

    results = {"big": {}, "small": {}, "cold": {}, "images": images}
    labels = ["nginx", "gunicorn", "eventlet", "gunicorn-nocache", "eventlet-nocache"]
    results["labels"] = labels
    for label in labels:
        results["big"][label] = {}
    path_fmt = "/v2/images/%s/file"

    if args.only == "cold":
        return _cold_only(args, server, start("gunicorn", cache_ini), cold, cold_runs,
                          lambda kind: start(kind, paced_ini, kind + "-paced"))
    if args.only == "small":
        return _small_only(args, server, start("gunicorn", cache_ini), smalls)
    if args.only == "big":
        nginx_server = start_nginx(nginx, workdir, settings["filesystem_store_datadir"],
                                   args.nginx_workers)
        servers.append(nginx_server)
        return _big_only(args, [("nginx", nginx_server.wait_ready(), "/%s"),
                                ("gunicorn", start("gunicorn", cache_ini), path_fmt),
                                ("eventlet", server, path_fmt)], big)
    # All five servers run at once (idle ones cost next to nothing) so that the hit cells can
    # be interleaved; the cold runs come after, with the other servers idle.
    eventlet = server
    gunicorn = start("gunicorn", cache_ini)
    eventlet_nocache = start("eventlet", nocache_ini, "eventlet-nocache")
    gunicorn_nocache = start("gunicorn", nocache_ini, "gunicorn-nocache")
    nginx_server = start_nginx(nginx, workdir, settings["filesystem_store_datadir"],
                               args.nginx_workers)
    servers.append(nginx_server)
    nginx_server.wait_ready()
    log("(a-d) hits: eventlet %d workers, gunicorn gthread %dx%d, the same two without the "
        "cache filter, nginx %d workers", args.eventlet_workers, args.gunicorn_workers,
        args.gunicorn_threads, args.nginx_workers)
    measure_hits([("nginx", nginx_server, "/%s"), ("gunicorn", gunicorn, path_fmt),
                  ("eventlet", eventlet, path_fmt), ("gunicorn-nocache", gunicorn_nocache,
                                                     path_fmt),
                  ("eventlet-nocache", eventlet_nocache, path_fmt)], big, smalls, args, results)
    for label, server in (("eventlet", eventlet), ("gunicorn", gunicorn)):
        cold_runs(label, server, results)
    measure_paced_cold(args, lambda kind: start(kind, paced_ini, kind + "-paced"), cold,
                       results)

    results["meta"] = {
        "loadavg_1m_range": (min(LOADS), max(LOADS)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0],
        "eventlet_workers": args.eventlet_workers, "gunicorn_workers": args.gunicorn_workers,
        "gunicorn_threads": args.gunicorn_threads, "nginx_workers": args.nginx_workers,
        "gunicorn_version": _version([os.path.join(VENV_BIN, "gunicorn"), "--version"]
                                     ).replace("gunicorn (version ", "").rstrip(")"),
        "nginx_version": _version([nginx, "-v"]).replace("nginx version: nginx/", ""),
        "repeat": args.repeat, "seconds": args.seconds, "command": command,
        "commit": _version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
    }
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    return report(results, command, args)


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


def _cold_only(args, eventlet, gunicorn, cold, cold_runs, start_paced):
    """--only cold: (e) and (f) under both cache servers, a one-line summary each."""
    results = {"cold": {}}
    for label, server in (("eventlet", eventlet), ("gunicorn", gunicorn)):
        cold_runs(label, server, results)
    measure_paced_cold(args, start_paced, cold, results)
    for label, entry in results["cold"].items():
        print("%s: one cold %.2f s, its hit %.3f s, cold/hit %.1fx; 16 cold: last done %.2f s "
              "= %.2fx one cold, origin reads (max) %d, errors %d"
              % (label, entry["single_s"], entry["hit_s"], entry["cold_vs_hit"],
                 entry["sixteen_last_s"], entry["last_vs_single"], entry["origin_reads_max"],
                 entry["errors"]))
        if "fresh_s" in entry:
            print("%s: cold download of a just-uploaded image %.2f s = %.1fx its hit; a plain "
                  "write loop of as many bytes %.2f s (cold = %.2fx that)"
                  % (label, entry["fresh_s"], entry["fresh_vs_hit"], entry["write_floor_s"],
                     entry["fresh_vs_floor"]))
    return 0


def _big_only(args, cells, big):
    """--only big: 256 MiB hits at --concurrency under nginx and both cache servers."""
    cells = [(label, server, targets_for(server.port, fmt, [big]))
             for label, server, fmt in cells]
    for label, server, targets in cells:
        load(server, targets, 2, requests=4, hash_every=1)   # warm-up, every body checked
    for conc in args.concurrency:
        runs = interleaved(cells, conc, args.seconds, args.repeat, "mib_per_s")
        for label, run in runs.items():
            print("%s 256 MiB C=%d: %.0f MiB/s (runs %s) = %.2fx nginx, server CPU %.3f s/GiB = "
                  "%.2fx nginx" % (label, conc, run["mib_per_s"], run["all_runs"],
                                   run["mib_per_s"] / runs["nginx"]["mib_per_s"],
                                   run["cpu_s_per_gib"],
                                   run["cpu_s_per_gib"] / runs["nginx"]["cpu_s_per_gib"]))
    return 0


def _small_only(args, eventlet, gunicorn, smalls):
    """--only small: (d) under both cache servers, interleaved, a one-line summary each."""
    cells = [(label, server, targets_for(server.port, "/v2/images/%s/file", smalls))
             for label, server in (("eventlet", eventlet), ("gunicorn", gunicorn))]
    for label, server, targets in cells:
        load(server, targets, 16, requests=320, hash_every=1)   # warm-up, every body checked
    for label, run in interleaved(cells, 16, args.seconds, args.repeat,
                                  "requests_per_s").items():
        print("%s: 64 KiB C=16 %.0f req/s (runs %s), server CPU %.3f ms/request, p50 %.2f ms, "
              "X-Image-Cache %s" % (label, run["requests_per_s"], run["all_runs"],
                                    run["cpu_ms_per_request"], run["latency_ms"]["p50"],
                                    run["x_image_cache"]))
    return 0


def report(results, command, args):
    """Print the Markdown section; with --update-docs also write the chart and the doc."""
    # The command that reproduces the numbers: without where this run put its JSON.
    command = re.sub(r" --(json-out|from-json)(=| )\S+", "", command).replace("sudo ", "")
    checks = evaluate(results)
    results["checks"] = checks
    section = markdown(results, checks, command)
    print(section)
    if args.update_docs:
        chart(results)
        update_docs(section)
        log("wrote %s and the Downloads section of %s", CHART, DOCS)
    return 0 if all(check["met"] for check in checks) else 1


def _cpu_model():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _version(argv):
    out = subprocess.run(argv, capture_output=True, text=True)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else "?"


if __name__ == "__main__":
    sys.exit(main())
