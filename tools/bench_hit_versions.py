"""64 KiB hits at C=16 of two checkouts of this project, interleaved in one invocation.

    git worktree add --detach /tmp/old main
    .venv/bin/python tools/bench_hit_versions.py /tmp/old [--seconds 5] [--rounds 12]
    git worktree remove /tmp/old

Both run under this interpreter's venv (``PYTHONPATH`` selects the code): glance-cache-mw-api
(eventlet, 2 workers), each with its own data dir and its own checkout's sample INI, 16 images
of 64 KiB uploaded through the API, filled and checked, then ``--rounds`` rounds of
``--seconds`` of hits per server, the order alternating each round. Prints every round and
the paired ratios (this checkout / the other) of req/s and server CPU per request. Uses the
download benchmark's servers and measurements (tools/bench_download_servers.py,
tools/bench_download_measure.py); never imported by the package.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

NEW = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [NEW, os.path.join(NEW, "tools")]
import bench_download_measure as b  # noqa: E402
import bench_download_servers as servers_mod  # noqa: E402


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("old", help="the other checkout (e.g. a git worktree of main)")
parser.add_argument("--seconds", type=float, default=5.0)
parser.add_argument("--rounds", type=int, default=12)
args = parser.parse_args()
OLD = os.path.abspath(args.old)
seconds, repeat = args.seconds, args.rounds
workdir = tempfile.mkdtemp(prefix="bench-hit-versions-")
servers = []
try:
    cells = []
    for label, root in (("old", OLD), ("new", NEW)):
        data = os.path.join(workdir, label)
        settings = {"data_dir": data, "sql_connection": "sqlite:///%s/db.sqlite" % data,
                    "image_cache_max_size": 8 * b.GIB, "bind_host": "127.0.0.1",
                    "bind_port": 0, "workers": 2}
        ini = os.path.join(workdir, label + ".ini")
        print(label, servers_mod.write_ini(os.path.join(root, "etc", "glance-cache-mw.ini"), ini,
                                 settings, add_cache=True), flush=True)
        env = {"PYTHONPATH": root}
        subprocess.run([sys.executable, "-m", "glance_cache_mw.cmd.manage",
                        "--config", ini, "db", "sync"], check=True, cwd=workdir,
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        server = servers_mod.Server(label, [sys.executable, "-m",
                                  "glance_cache_mw.cmd.api", "--config", ini,
                                  "--graceful-timeout", "5"], None, workdir,
                                    env={**os.environ, **env})
        servers.append(server)
        server.wait_ready()
        smalls = []
        for i in range(b.SMALL_COUNT):
            path = os.path.join(workdir, "src%d" % i)
            md5 = b.make_data(path, b.SMALL_SIZE)
            smalls.append({"id": b.upload(server.port, "s%d" % i, path, b.SMALL_SIZE),
                           "size": b.SMALL_SIZE, "md5": md5})
        status = b.api(server.port, "GET", "/metrics", expect=(200, 404))[0]
        print(label, "GET /metrics ->", status, flush=True)
        cells.append((label, server, b.targets_for(server.port, "/v2/images/%s/file", smalls)))
    for label, server, targets in cells:
        b.load(server, targets, 16, requests=320, hash_every=1)   # fills, every body checked
        b.load(server, targets, 16, requests=320, hash_every=1)   # hits, every body checked
    print("load before:", os.getloadavg(), flush=True)
    runs = {label: [] for label, _, _ in cells}
    ratios_rps, ratios_cpu = [], []
    for round_no in range(repeat):
        order = cells if round_no % 2 == 0 else cells[::-1]
        got = {}
        for label, server, targets in order:
            got[label] = b.load(server, targets, 16, seconds=seconds)
            runs[label].append(got[label])
        ratios_rps.append(got["new"]["requests_per_s"] / got["old"]["requests_per_s"])
        ratios_cpu.append(got["new"]["cpu_ms_per_request"] / got["old"]["cpu_ms_per_request"])
        print("round %d: old %.0f req/s %.3f ms CPU; new %.0f req/s %.3f ms CPU; load %s"
              % (round_no, got["old"]["requests_per_s"], got["old"]["cpu_ms_per_request"],
                 got["new"]["requests_per_s"], got["new"]["cpu_ms_per_request"],
                 got["new"]["loadavg_1m"]), flush=True)
    for label, measured in runs.items():
        ok = sum(r["ok"] for r in measured)
        cpu = sum(r["server_cpu_s"] for r in measured)
        errors = sum(r["errors"] for r in measured)
        print("%s: median %.0f req/s, total %d requests, %.3f ms server CPU/request overall, "
              "errors %d" % (label, statistics.median(r["requests_per_s"] for r in measured),
                             ok, cpu * 1000 / ok, errors))
    print("paired ratios new/old: req/s median %.3f (%s); CPU/request median %.3f (%s)"
          % (statistics.median(ratios_rps), [round(x, 3) for x in ratios_rps],
             statistics.median(ratios_cpu), [round(x, 3) for x in ratios_cpu]))
    print("load averages seen (1 min):", sorted(set(round(x, 2) for x in b.LOADS)))
    print("load after:", os.getloadavg(), flush=True)
finally:
    for server in servers:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
