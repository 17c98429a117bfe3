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

Code: this file is the command line and the order of the runs; the servers (INIs, processes,
CPU time, nginx) are in tools/bench_download_servers.py, on tests/functional/serving.py's
start-up shared with the functional tests; the measurements in tools/bench_download_measure.py;
the targets, Markdown, chart and docs update in tools/bench_download_report.py.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_download_measure as measure  # noqa: E402  (tools/ modules beside this one)
import bench_download_report  # noqa: E402
import bench_download_servers as servers  # noqa: E402
from bench_download_measure import (BIG_SIZE, GIB, MIB, SMALL_COUNT, SMALL_SIZE,  # noqa: E402
                                    interleaved, load, targets_for)
from bench_download_servers import log  # noqa: E402

ROOT = servers.ROOT
SAMPLE_INI = servers.serving.SAMPLE_CONFIG
NOCACHE_INI = os.path.join(ROOT, "tools", "bench-nocache.ini")


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
        return bench_download_report.report(results, results["meta"]["command"], args)
    # Ctrl-C and SIGTERM both end in the cleanup below (SIGINT explicitly: a shell may start
    # a background job with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    nginx = None if args.only in ("cold", "small") else servers.ensure_nginx()
    workdir = tempfile.mkdtemp(prefix="bench-download-")
    fleet = servers.Fleet(workdir, args)
    try:
        return _run(args, command, nginx, fleet)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        fleet.stop_all()
        if args.keep:
            log("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _write_inis(args, workdir, settings):
    """The INIs of the cache, no-cache and paced-origin servers: their paths by name."""
    inis = {name: os.path.join(workdir, name + ".ini") for name in ("cache", "nocache", "paced")}
    cache_pipeline = servers.write_ini(SAMPLE_INI, inis["cache"], settings, add_cache=True)
    if args.origin_rate:
        servers.write_ini(SAMPLE_INI, inis["paced"], settings, add_cache=True,
                          origin_rate=args.origin_rate)
    nocache_pipeline = servers.write_ini(NOCACHE_INI, inis["nocache"], settings,
                                         add_cache=False)
    log("temp dir %s; pipelines: cache [%s], no cache [%s]", workdir, cache_pipeline,
        nocache_pipeline)
    servers.sync_database(inis["cache"], workdir)
    return inis


def _upload_images(port, sources):
    """The big, cold and small images, uploaded through the API: {name: id, size, md5}."""
    specs = [("big", BIG_SIZE), ("cold", BIG_SIZE)] + [("small%02d" % i, SMALL_SIZE)
                                                       for i in range(SMALL_COUNT)]
    images = {}
    for name, size in specs:
        path = os.path.join(sources, name)
        md5 = measure.make_data(path, size)
        images[name] = {"id": measure.upload(port, name, path, size), "size": size, "md5": md5}
        os.unlink(path)
    log("uploaded %d images through the API (POST /v2/images, PUT /v2/images/{id}/file)",
        len(images))
    return images


def _run(args, command, nginx, fleet):
    workdir = fleet.workdir
    data = os.path.join(workdir, "data")
    settings = {"data_dir": data, "sql_connection": "sqlite:///%s/db.sqlite" % data,
                "filesystem_store_datadir": os.path.join(data, "images"),
                "image_cache_dir": os.path.join(data, "cache"),
                "image_cache_max_size": 8 * GIB, "bind_host": "127.0.0.1", "bind_port": 0,
                "workers": args.eventlet_workers}
    inis = _write_inis(args, workdir, settings)
    store = settings["filesystem_store_datadir"]

    def start_paced(kind):
        return fleet.start(kind, inis["paced"], kind + "-paced")

    # Data, through the real server's API.
    sources = os.path.join(workdir, "src")
    os.makedirs(sources)
    log("making %d MiB + %d MiB + %d x %d KiB of random data", BIG_SIZE // MIB, BIG_SIZE // MIB,
        SMALL_COUNT, SMALL_SIZE // 1024)
    server = fleet.start("eventlet", inis["cache"])
    images = _upload_images(server.port, sources)
    fresh = {"path": os.path.join(sources, "fresh"), "size": BIG_SIZE}
    fresh["md5"] = measure.make_data(fresh["path"], BIG_SIZE)   # uploaded anew by each rep

    def cold_runs(label, server, results):
        log("(e,f) %s: cold downloads", label)
        measure.measure_cold(server, server.port, cold, args, results, label)
        measure.measure_fresh_cold(server, server.port, fresh, settings["image_cache_dir"],
                                   args, results, label)
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
        return _cold_only(args, server, fleet.start("gunicorn", inis["cache"]), cold,
                          cold_runs, start_paced)
    if args.only == "small":
        return _small_only(args, server, fleet.start("gunicorn", inis["cache"]), smalls)
    if args.only == "big":
        nginx_server = fleet.start_nginx(nginx, store)
        return _big_only(args, [("nginx", nginx_server, "/%s"),
                                ("gunicorn", fleet.start("gunicorn", inis["cache"]), path_fmt),
                                ("eventlet", server, path_fmt)], big)
    # All five servers run at once (idle ones cost next to nothing) so that the hit cells can
    # be interleaved; the cold runs come after, with the other servers idle.
    eventlet = server
    gunicorn = fleet.start("gunicorn", inis["cache"])
    eventlet_nocache = fleet.start("eventlet", inis["nocache"], "eventlet-nocache")
    gunicorn_nocache = fleet.start("gunicorn", inis["nocache"], "gunicorn-nocache")
    nginx_server = fleet.start_nginx(nginx, store)
    log("(a-d) hits: eventlet %d workers, gunicorn gthread %dx%d, the same two without the "
        "cache filter, nginx %d workers", args.eventlet_workers, args.gunicorn_workers,
        args.gunicorn_threads, args.nginx_workers)
    measure.measure_hits([("nginx", nginx_server, "/%s"), ("gunicorn", gunicorn, path_fmt),
                          ("eventlet", eventlet, path_fmt),
                          ("gunicorn-nocache", gunicorn_nocache, path_fmt),
                          ("eventlet-nocache", eventlet_nocache, path_fmt)],
                         big, smalls, args, results)
    for label, server in (("eventlet", eventlet), ("gunicorn", gunicorn)):
        cold_runs(label, server, results)
    measure.measure_paced_cold(args, start_paced, cold, results)

    results["meta"] = _meta(args, command, nginx)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    return bench_download_report.report(results, command, args)


def _meta(args, command, nginx):
    """Where and how the numbers were measured, for the report."""
    return {
        "loadavg_1m_range": (min(measure.LOADS), max(measure.LOADS)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0],
        "eventlet_workers": args.eventlet_workers, "gunicorn_workers": args.gunicorn_workers,
        "gunicorn_threads": args.gunicorn_threads, "nginx_workers": args.nginx_workers,
        "gunicorn_version": _version([servers.serving.console_script("gunicorn"), "--version"]
                                     ).replace("gunicorn (version ", "").rstrip(")"),
        "nginx_version": _version([nginx, "-v"]).replace("nginx version: nginx/", ""),
        "repeat": args.repeat, "seconds": args.seconds, "command": command,
        "commit": _version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
    }


def _cold_only(args, eventlet, gunicorn, cold, cold_runs, start_paced):
    """--only cold: (e) and (f) under both cache servers, a one-line summary each."""
    results = {"cold": {}}
    for label, server in (("eventlet", eventlet), ("gunicorn", gunicorn)):
        cold_runs(label, server, results)
    measure.measure_paced_cold(args, start_paced, cold, results)
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
