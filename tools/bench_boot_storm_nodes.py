"""The nodes of tools/bench_boot_storm.py: a scratch database, M API nodes on it, their counters.

``scratch_database`` creates a uniquely named database on a PostgreSQL (or MariaDB) server and
drops it at the end. ``Nodes`` is tests/functional/cluster.py's ``Cluster`` (the harness of
the cluster tests: M glance-cache-mw-api nodes with the centralized_db driver on that
database, one file store as their origin, each its own data and cache directory and
``worker_self_reference_url``, ``cluster_secret`` when cluster mode is on) with the paced
origin of tools/bench_origin_rate.py, which counts the bytes the store sends, put into each
node's INI; it evicts, waits for and counts an image across all of them. The package never
imports this module.
"""

import contextlib
import json
import os
import time
import uuid

import sqlalchemy as sa

import bench_download_measure as measure
import bench_download_servers as servers
from bench_download_servers import log
from glance_cache_mw import config
from glance_cache_mw.db import engine as db_engine, migration
from tests.functional.cluster import Cluster


def has_cluster_mode():
    """Whether this build knows the cluster settings (issue 14)."""
    return "cluster_secret" in config.known_default_keys()


@contextlib.contextmanager
def scratch_database(server_url):
    """A new database ``gcm_bench_storm_<hex>`` on the server of ``server_url`` (any
    database there), migrated: its URL; dropped when the block ends."""
    admin_url = db_engine.normalize_url(server_url)
    name = "gcm_bench_storm_%s" % uuid.uuid4().hex[:12]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE %s" % name)
        log("created database %s on %s", name, admin_url.render_as_string(hide_password=True))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            engine = db_engine.create_engine(url)
            try:
                migration.sync(engine)
            finally:
                engine.dispose()
            yield url
        finally:
            drop = "DROP DATABASE IF EXISTS %s" % name
            if admin_url.get_backend_name() == "postgresql":
                drop += " WITH (FORCE)"   # a server that outlived its stop keeps a connection
            with admin.connect() as conn:
                conn.exec_driver_sql(drop)
            log("dropped database %s", name)
    finally:
        admin.dispose()


class OriginCounter:
    """The lines ``{image_id} {bytes}`` that the paced origin appends, one per read."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        """Where the next phase's lines start."""
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def reads_since(self, mark):
        """[(image_id, bytes)] of the reads closed since ``mark``."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as handle:
            handle.seek(mark)
            lines = handle.read().decode().splitlines()
        return [(image_id, int(nbytes)) for image_id, nbytes in
                (line.split() for line in lines if line)]


class Nodes:
    """M nodes of tests/functional/cluster.py's ``Cluster`` (cluster mode ``mode``) with
    the paced, counting origin in front of their images app; ``cpu()`` and ``name`` as a
    ``Server`` has them, so that bench_download_measure.load() can run against all of them."""

    def __init__(self, workdir, mode, count, shared):
        """``shared``: db_url, store (file store dir), counter (OriginCounter), origin_rate
        (MiB/s), origin_clock (the shared pace file, or None: a pace per read), workers,
        max_size."""
        self.mode = mode
        self.name = "cluster-%s" % mode
        self.cluster = Cluster(os.path.join(workdir, mode), shared["db_url"], count,
                               cluster=(mode == "on"), workers=shared["workers"],
                               image_cache_max_size=shared["max_size"],
                               filesystem_store_datadir=shared["store"])
        origin = {"count_file": shared["counter"].path}
        if shared["origin_clock"]:
            origin["shared_pace_file"] = shared["origin_clock"]
        for node in self.cluster.nodes:
            # The harness's INI, with tools/bench_origin_rate.py right before the images app.
            servers.write_ini(node.config_path, node.config_path, {}, add_cache=True,
                              origin_rate=shared["origin_rate"], origin_options=origin)

    def start(self):
        """Start every node (in parallel); the origin filter is imported from tools/."""
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [servers.TOOLS, os.environ.get("PYTHONPATH")]))
        self.cluster.start()
        log("%s: %d nodes up on ports %s", self.name, len(self.ports), self.ports)
        return self

    def stop(self):
        self.cluster.stop()

    @property
    def ports(self):
        return [node.port for node in self.cluster.nodes]

    def cpu(self):
        return sum(servers.cpu_seconds(servers.process_tree(node.process.pid))
                   for node in self.cluster.nodes)

    def evict(self, image_id):
        """The image out of every node's cache (and its cached_images rows)."""
        for port in self.ports:
            measure.evict(port, image_id)

    def wait_cached(self, image_id):
        """Until every node holds the image: one local copy per node."""
        for port in self.ports:
            measure.wait_cached(port, image_id)

    def copies(self, image_id):
        """How many nodes list the image in GET /v2/cache."""
        listed = 0
        for port in self.ports:
            _, body = measure.api(port, "GET", "/v2/cache")
            listed += any(entry["image_id"] == image_id
                          for entry in json.loads(body)["cached_images"])
        return listed

    def metric(self, name):
        """The sum over nodes of counter ``name`` (without prefix and ``_total``)."""
        return self.cluster.metric(name + "_total")


class DbActivity:
    """What PostgreSQL's statistics views count for a database over a window: transactions
    (commits + rollbacks), and per table the scans (sequential + index) and rows inserted,
    updated and deleted. A backend reports its counts when it has been idle for up to
    ``FLUSH_S`` (PostgreSQL 15: 10 s), so both ends of the window wait that long."""

    FLUSH_S = 11

    def __init__(self, db_url):
        self.engine = sa.create_engine(db_engine.normalize_url(db_url))
        self._before = None

    def _snapshot(self):
        time.sleep(self.FLUSH_S)
        with self.engine.connect() as conn:
            commits, rollbacks = conn.exec_driver_sql(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()").one()
            tables = {name: list(counts) for name, *counts in conn.exec_driver_sql(
                "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0), n_tup_ins, "
                "n_tup_upd, n_tup_del FROM pg_stat_user_tables")}
        return commits + rollbacks, tables

    def start(self):
        self._before = self._snapshot()

    def stop(self):
        """{"transactions": n, "tables": {name: [scans, inserted, updated, deleted]}} of the
        window (tables with no activity left out)."""
        (xacts, tables), (xacts_before, tables_before) = self._snapshot(), self._before
        changed = {}
        for name, counts in tables.items():
            delta = [now - then for now, then in zip(counts, tables_before.get(name, [0] * 4))]
            if any(delta):
                changed[name] = delta
        self.engine.dispose()
        return {"transactions": xacts - xacts_before, "tables": changed}


def settle(counter, mark, nodes, reads_before, timeout_s=30):
    """The origin reads since ``mark`` once every read the nodes' metrics counted has
    closed its body (a fill may commit before its origin body is closed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reads = counter.reads_since(mark)
        expected = nodes.metric("origin_reads") - reads_before
        if len(reads) >= expected or time.monotonic() > deadline:
            if len(reads) < expected:
                log("  note: %d origin reads counted by the nodes, %d closed at the store",
                    expected, len(reads))
            return reads
        time.sleep(0.05)
