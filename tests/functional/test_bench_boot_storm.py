"""tools/bench_boot_storm.py --quick end to end: real nodes on a scratch PostgreSQL database.

Checks the report's shape and that the run itself was sound (every body right, a copy on every
node, the store read at least once), not its timings: those are the benchmark's to report.
"""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from glance_cache_mw import config
from tests import dbfixtures
from tests.functional import serving

SCRIPT = os.path.join(serving.REPO_ROOT, "tools", "bench_boot_storm.py")
MODE_KEYS = {"clients", "reps", "single_s", "storm_last_s", "last_vs_single", "origin_ratio",
             "peer_ratio", "hit_storm_s", "server_cpu_s", "origin_reads_max", "copies_min",
             "errors"}
NODES = 2   # the fewest the benchmark takes: its start-up is most of the time


def scratch_databases(server_url):
    engine = sa.create_engine(server_url)
    try:
        with engine.connect() as conn:
            return {name for (name,) in conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname LIKE :pattern"),
                {"pattern": "gcm_bench_storm_%"})}
    finally:
        engine.dispose()


@pytest.mark.realdb
def test_quick_run_reports_both_modes_and_drops_its_database(tmp_path):
    server_url = dbfixtures.server_url("postgresql")
    before = scratch_databases(server_url)
    json_path = tmp_path / "storm.json"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--nodes", str(NODES), "--origin-shared",
         "--json-out", str(json_path),
         "--db-url", server_url.render_as_string(hide_password=False)],
        env=serving.subprocess_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cluster mode off: %d nodes x 2 clients" % NODES in done.stderr   # progress

    results = json.loads(json_path.read_text())
    assert results["meta"]["nodes"] == NODES and results["meta"]["size_mib"] == 8
    assert results["meta"]["origin_shared"] is True
    assert results["image"]["size"] == 8 * 1024 * 1024
    cluster_built = "cluster_secret" in config.known_default_keys()
    assert list(results["modes"]) == ["off", "on"]
    measured = ["off", "on"] if cluster_built else ["off"]
    for mode in measured:
        entry = results["modes"][mode]
        assert MODE_KEYS <= set(entry), mode
        assert entry["clients"] == NODES * 2 and len(entry["reps"]) == 1
        assert entry["errors"] == 0, entry
        assert entry["copies_min"] == NODES, entry   # one local copy per node after the storm
        assert entry["origin_ratio"] >= 1.0 and entry["origin_reads_max"] >= 1, entry
        assert sum(entry["reps"][0]["x_image_cache"].values()) == NODES * 2
        assert entry["reps"][0]["hit_storm_cache"] == {"HIT": NODES * 2}
        assert len(entry["reps"][0]["node_last_s"]) == NODES
        assert max(entry["reps"][0]["node_last_s"]) == pytest.approx(entry["storm_last_s"])
    # Cluster mode off: each node reads the store itself, nobody serves peers.
    assert results["modes"]["off"]["origin_reads_max"] >= NODES
    assert not results["modes"]["off"]["peer_ratio"]
    if not cluster_built:
        assert "skipped" in results["modes"]["on"]

    report = done.stdout
    assert report.startswith("## Boot storm: %d nodes x 2 clients, 8 MiB image, origin 100 "
                             "MiB/s shared by all reads" % NODES)
    rows = [line for line in report.splitlines() if line.startswith("| o")]
    assert [row.split("|")[1].strip() for row in rows[:2]] == ["off", "on"]
    assert "| origin bytes / image = 1.00 |" in report
    assert scratch_databases(server_url) == before   # dropped again
