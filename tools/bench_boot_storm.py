#!/usr/bin/env python3
"""Boot-storm benchmark (issue 14): M nodes x N clients cold-download one new image at once.

    .venv/bin/python tools/bench_boot_storm.py                   # 3 nodes x 4 clients, 256 MiB
    .venv/bin/python tools/bench_boot_storm.py --quick           # 8 MiB, 2 clients: < 1 min

The nodes are glance-cache-mw-api servers (eventlet, ``--workers`` each) on 127.0.0.1 with the
centralized_db driver on one database the benchmark creates on ``--db-url``'s server (and drops
at the end), each with its own cache directory and ``worker_self_reference_url``, all with one
file store as the origin, paced to ``--origin-rate`` MiB/s per read (``--origin-shared``: for all
reads together, a store whose bandwidth is the bottleneck) like a remote store by
tools/bench_origin_rate.py, which also counts the bytes the store really sends.

The same run is done twice in one invocation, on fresh nodes each time: with cluster mode off
(today: each node coalesces its own clients, so M origin reads) and on (``cluster_secret``
set: one origin read per cluster, the other nodes fill from a peer). Each mode measures:
  * one cold download on one node, every node's copy evicted first (the reference);
  * the storm: every node's copy evicted, then M x N clients (tools/bench_download.py, one
    process each, N per node) start together; the time until the last one finishes, the
    bytes the origin sent divided by the image size (target 1.00 with cluster mode on), the
    bytes nodes served to peers (their /metrics peer_bytes_served), and the X-Image-Cache
    values; afterwards every node must list the image in GET /v2/cache (one copy per node);
  * the same storm again, now all hits: how long sending M x N copies takes on this machine
    whatever the origin does (the floor of the storm's time).
One unmeasured storm per mode first checks the MD5 of every body. Each measurement runs
``--repeat`` times; the report gives the medians and every rep. Progress goes to stderr, the
report (Markdown) to stdout; every process, the temp dir and the database are removed at the
end, also on Ctrl-C or SIGTERM.

Code: this file is the command line, the runs and the report; the nodes, the scratch database
and the counters are in tools/bench_boot_storm_nodes.py; servers, client runs and uploads are
tools/bench_download_servers.py's and tools/bench_download_measure.py's.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_boot_storm_nodes as storm_nodes  # noqa: E402  (tools/ modules beside this one)
import bench_download_measure as measure  # noqa: E402
import bench_download_servers as servers  # noqa: E402
from bench_download_measure import GIB, MIB, load, targets_for  # noqa: E402
from bench_download_servers import log  # noqa: E402

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
QUICK = {"size_mib": 8, "clients": 2, "repeat": 1}
TARGET_ORIGIN_RATIO = 1.0
TARGET_LAST_VS_ONE = 1.3


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--nodes", type=int, default=3, help="API nodes (default 3)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients per node")
    parser.add_argument("--size-mib", type=int, default=256, help="image size (MiB)")
    parser.add_argument("--origin-rate", type=float, default=100.0, metavar="MIB_S",
                        help="pace of every origin read (default 100 MiB/s)")
    parser.add_argument("--origin-shared", action="store_true",
                        help="--origin-rate is the store's total, shared by all concurrent "
                             "reads (a store whose bandwidth is the bottleneck), not per read")
    parser.add_argument("--workers", type=int, default=1, help="eventlet workers per node")
    parser.add_argument("--repeat", type=int, default=3, help="reps per measurement (median)")
    parser.add_argument("--db-url", default=os.environ.get(
        "GLANCE_CACHE_MW_TEST_POSTGRES_URL", DEFAULT_DB_URL),
        help="a PostgreSQL (or MariaDB) server: a scratch database is created there "
             "(default $GLANCE_CACHE_MW_TEST_POSTGRES_URL, else %s)" % DEFAULT_DB_URL)
    parser.add_argument("--modes", default="off,on",
                        help="cluster modes to run, in this order (default off,on)")
    parser.add_argument("--db-stats", action="store_true",
                        help="PostgreSQL: the database's transactions and per-table scans and "
                             "row changes during each mode's verification storm (adds ~45 s)")
    parser.add_argument("--quick", action="store_true",
                        help="8 MiB, 2 clients per node, 1 rep (a smoke run, < 1 min)")
    parser.add_argument("--json-out", help="write all results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or set(args.modes) - {"off", "on"}:
        parser.error("--modes takes off, on or both (comma-separated), not %r" % args.modes)
    if args.nodes < 2 or args.clients < 1 or args.size_mib < 1 or args.repeat < 1:
        parser.error("needs --nodes >= 2, --clients >= 1, --size-mib >= 1, --repeat >= 1")
    if args.db_stats and not args.db_url.startswith("postgresql"):
        parser.error("--db-stats reads PostgreSQL's statistics views: give a postgresql "
                     "--db-url")
    if args.origin_rate <= 0:
        parser.error("--origin-rate must be positive: the paced origin counts the reads")
    return args


def main(argv=None):
    args = parse_args(argv)
    command = ".venv/bin/python tools/bench_boot_storm.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    # Ctrl-C and SIGTERM both end in the cleanup below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = tempfile.mkdtemp(prefix="bench-boot-storm-")
    try:
        with storm_nodes.scratch_database(args.db_url) as db_url:
            results = run(args, workdir, db_url)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        if args.keep:
            log("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"] = meta(args, command)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=1)
    sys.stdout.write(report(results))
    return 0


def run(args, workdir, db_url):
    """Every mode on fresh nodes: {"image": ..., "modes": {mode: summary}}."""
    shared = {"db_url": db_url, "store": os.path.join(workdir, "store"),
              "counter": storm_nodes.OriginCounter(os.path.join(workdir, "origin-reads")),
              "origin_rate": args.origin_rate, "workers": args.workers, "max_size": 4 * GIB,
              "origin_clock": (os.path.join(workdir, "origin-clock")
                               if args.origin_shared else None)}
    results = {"modes": {}}
    image = None
    for mode in args.modes:
        if mode == "on" and not storm_nodes.has_cluster_mode():
            log("cluster mode on: skipped, this build has no cluster_secret setting")
            results["modes"][mode] = {"skipped": "this build has no cluster mode"}
            continue
        nodes = storm_nodes.Nodes(workdir, mode, args.nodes, shared)
        try:
            nodes.start()
            if image is None:
                image = upload_image(nodes.ports[0], workdir, args.size_mib * MIB)
                results["image"] = image
            log("cluster mode %s: %d nodes x %d clients", mode, args.nodes, args.clients)
            results["modes"][mode] = measure_mode(nodes, image, shared, args)
            nodes.evict(image["id"])   # no rows left for the next mode's nodes to try
        finally:
            nodes.stop()
    return results


def upload_image(port, workdir, size):
    """A random image of ``size`` bytes, uploaded through node 0: {id, size, md5}."""
    path = os.path.join(workdir, "image.raw")
    md5 = measure.make_data(path, size)
    image = {"id": measure.upload(port, "boot-storm", path, size), "size": size, "md5": md5}
    os.unlink(path)
    log("uploaded image %s (%d MiB) through node 0", image["id"], size // MIB)
    return image


def measure_mode(nodes, image, shared, args):
    """The verification storm, then ``--repeat`` x (one cold, the storm, the same storm
    again as hits: what sending alone costs on this machine)."""
    targets = [target for port in nodes.ports for target in targets_for(
        port, "/v2/images/%s/file", [image])]
    clients = len(targets) * args.clients
    # Worker i of bench_download takes targets[i % M]: N clients per node.
    counter = shared["counter"]
    nodes.evict(image["id"])
    activity = storm_nodes.DbActivity(shared["db_url"]) if args.db_stats else None
    if activity:
        activity.start()   # nothing else asks the nodes anything until activity.stop()
    check = load(nodes, targets, clients, requests=clients, hash_every=1)
    if check["errors"] or check["hashed"] != clients:
        raise RuntimeError("verification storm failed: %s" % check["error_kinds"])
    db_stats = activity.stop() if activity else None
    nodes.wait_cached(image["id"])
    log("  verification storm: %d bodies MD5-checked, X-Image-Cache %s%s", clients,
        check["x_image_cache"], "; database: %s" % db_stats if db_stats else "")
    reps = []
    for rep in range(args.repeat):
        nodes.evict(image["id"])
        single = counted(nodes, counter, image, lambda: load(nodes, targets[:1], 1, requests=1),
                         ports=nodes.ports[:1])
        nodes.evict(image["id"])
        storm = counted(nodes, counter, image,
                        lambda: load(nodes, targets, clients, requests=clients))
        hits = load(nodes, targets, clients, requests=clients)
        entry = {"single_s": single["wall_s"], "single_origin_ratio": single["origin_ratio"],
                 "storm_last_s": storm["wall_s"], "origin_ratio": storm["origin_ratio"],
                 "origin_reads": storm["origin_reads"], "peer_ratio": storm["peer_ratio"],
                 "copies": storm["copies"], "x_image_cache": storm["x_image_cache"],
                 "node_last_s": node_last_s(storm, len(nodes.ports)),
                 "hit_storm_s": hits["wall_s"], "hit_storm_cache": hits["x_image_cache"],
                 "errors": single["errors"] + storm["errors"] + hits["errors"],
                 "server_cpu_s": storm["cpu_s"]}
        entry["last_vs_single"] = entry["storm_last_s"] / entry["single_s"]
        reps.append(entry)
        log("  rep %d: one cold %.2f s; storm of %d: last done %.2f s = %.2fx one cold, origin "
            "bytes %.2fx the image in %d reads, peer bytes served %s, copies %d/%d, "
            "X-Image-Cache %s, last done per node %s s; as hits %.2f s (%s); errors %d",
            rep + 1, entry["single_s"], clients, entry["storm_last_s"],
            entry["last_vs_single"], entry["origin_ratio"], entry["origin_reads"],
            _ratio(entry["peer_ratio"]), entry["copies"], len(nodes.ports),
            entry["x_image_cache"], " / ".join("%.2f" % t for t in entry["node_last_s"]),
            entry["hit_storm_s"],
            _statuses(entry["hit_storm_cache"]), entry["errors"])
    return {**summarize(reps, clients), "db_stats": db_stats}


def node_last_s(storm, node_count):
    """When the last client of each node finished (s after the common start). Worker i of
    bench_download made request i (one each) to targets[i % M], and its records come in
    worker order."""
    last = [0.0] * node_count
    for index, record in enumerate(storm["records"]):
        node = index % node_count
        last[node] = max(last[node], record["end"] - storm["start_at"])
    return last


def counted(nodes, counter, image, run_load, ports=None):
    """``run_load()`` with what it cost: origin bytes (store side) and peer bytes served,
    both as multiples of the image size, once the nodes of ``ports`` (all) hold the image."""
    mark = counter.mark()
    reads_before = nodes.metric("origin_reads")
    served_before = nodes.metric("peer_bytes_served")
    summary = run_load()
    for port in ports or nodes.ports:
        measure.wait_cached(port, image["id"])
    reads = storm_nodes.settle(counter, mark, nodes, reads_before)
    served_after = nodes.metric("peer_bytes_served")
    summary["origin_reads"] = len(reads)
    summary["origin_ratio"] = sum(n for image_id, n in reads if image_id == image["id"]) \
        / image["size"]
    summary["peer_ratio"] = (served_after - served_before) / image["size"]
    summary["copies"] = nodes.copies(image["id"])
    summary["cpu_s"] = summary.pop("server_cpu_s")
    return summary


def summarize(reps, clients):
    def median(key):
        values = [rep[key] for rep in reps if rep[key] is not None]
        return statistics.median(values) if values else None
    return {"clients": clients, "reps": reps,
            **{key: median(key) for key in ("single_s", "storm_last_s", "last_vs_single",
                                            "origin_ratio", "peer_ratio", "hit_storm_s",
                                            "server_cpu_s")},
            "origin_reads_max": max(rep["origin_reads"] for rep in reps),
            "copies_min": min(rep["copies"] for rep in reps),
            "errors": sum(rep["errors"] for rep in reps)}


def meta(args, command):
    load_1m = os.getloadavg()[0]
    commit = subprocess.run(["git", "-C", servers.ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    return {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit, "cores": os.cpu_count(), "loadavg_1m_end": load_1m,
            "nodes": args.nodes, "clients_per_node": args.clients, "size_mib": args.size_mib,
            "origin_mib_s": args.origin_rate, "origin_shared": args.origin_shared,
            "workers": args.workers, "repeat": args.repeat}


def _ratio(value):
    return "n/a" if value is None else "%.2fx" % value


def _seconds(value):
    return "n/a" if value is None else "%.2f" % value


def report(results):
    """The Markdown report: one row per mode, every rep, and the targets."""
    m = results["meta"]
    lines = ["## Boot storm: %d nodes x %d clients, %d MiB image, origin %g MiB/s %s "
             "(median of %d)" % (m["nodes"], m["clients_per_node"], m["size_mib"],
                                 m["origin_mib_s"], "shared by all reads" if m["origin_shared"]
                                 else "per read", m["repeat"]), "",
             "`%s` at %s, code %s, %d cores, load %.1f at the end." % (
                 m["command"].strip(), m["date"], m["commit"], m["cores"], m["loadavg_1m_end"]),
             "",
             "| cluster mode | one cold s | storm: last done s | / one cold | origin bytes "
             "/ image | origin reads (max) | peer bytes served / image | copies after (min) "
             "| errors | X-Image-Cache (last rep) | storm as hits s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for mode, entry in results["modes"].items():
        if "skipped" in entry:
            lines.append("| %s | skipped: %s | | | | | | | | | |" % (mode, entry["skipped"]))
            continue
        lines.append("| %s | %s | %s | %s | %s | %d | %s | %d/%d | %d | %s | %s |" % (
            mode, _seconds(entry["single_s"]), _seconds(entry["storm_last_s"]),
            _ratio(entry["last_vs_single"]), _ratio(entry["origin_ratio"]),
            entry["origin_reads_max"], _ratio(entry["peer_ratio"]), entry["copies_min"],
            m["nodes"], entry["errors"], _statuses(entry["reps"][-1]["x_image_cache"]),
            _seconds(entry["hit_storm_s"])))
    lines += ["", "Every rep (one cold s / storm last done s, per node / origin bytes per "
              "image):", ""]
    for mode, entry in results["modes"].items():
        lines.append("* %s: %s" % (mode, entry.get("skipped") or "; ".join(
            "%.2f / %.2f (%s) / %.2fx" % (rep["single_s"], rep["storm_last_s"], " ".join(
                "%.2f" % t for t in rep["node_last_s"]), rep["origin_ratio"])
            for rep in entry.get("reps", ()))))
    lines += _db_lines(results["modes"])
    lines += ["", "| target (cluster mode on) | met | measured |", "|---|---|---|"]
    lines += _targets(results["modes"].get("on"))
    return "\n".join(lines) + "\n"


def _db_lines(modes):
    """The database's work in each mode's verification storm (--db-stats), if measured."""
    measured = {mode: entry["db_stats"] for mode, entry in modes.items()
                if entry.get("db_stats")}
    if not measured:
        return []
    lines = ["", "Database work of one storm (the verification storm, from PostgreSQL's "
             "statistics views; per table: scans / rows inserted / updated / deleted):", "",
             "| cluster mode | transactions | tables |", "|---|---:|---|"]
    for mode, stats in measured.items():
        lines.append("| %s | %d | %s |" % (mode, stats["transactions"], ", ".join(
            "%s %s" % (name, "/".join(map(str, counts)))
            for name, counts in sorted(stats["tables"].items()))))
    return lines


def _statuses(counts):
    return ", ".join("%s %d" % item for item in sorted(counts.items()))


def _targets(entry):
    if not entry or "skipped" in entry:
        return ["| origin bytes / image = %.2f | not measured | cluster mode was not run |"
                % TARGET_ORIGIN_RATIO]
    ratio_met = abs(entry["origin_ratio"] - TARGET_ORIGIN_RATIO) < 0.005
    time_met = entry["last_vs_single"] <= TARGET_LAST_VS_ONE
    return ["| origin bytes / image = %.2f | %s | %.2fx (max %d reads in a rep) |" % (
                TARGET_ORIGIN_RATIO, "met" if ratio_met else "**not met**",
                entry["origin_ratio"], entry["origin_reads_max"]),
            "| last client done <= %.1fx one cold download on one node | %s | %.2f s vs %.2f s "
            "= %.2fx (the same clients as hits, sending only: %.2f s) |" % (
                TARGET_LAST_VS_ONE, "met" if time_met else "**not met**",
                entry["storm_last_s"], entry["single_s"], entry["last_vs_single"],
                entry["hit_storm_s"])]


if __name__ == "__main__":
    sys.exit(main())
