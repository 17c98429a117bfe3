"""The nodes of tools/bench_boot_storm.py: a scratch database, M API nodes on it, their counters.

``scratch_database`` creates a uniquely named database on a PostgreSQL (or MariaDB) server and
drops it at the end. ``Nodes`` writes one INI per node (etc/glance-cache-mw.ini with the
centralized_db driver on that database, the shared file store as origin, a cache directory
and data directory of its own, ``worker_self_reference_url`` = its own port, the paced origin
of tools/bench_origin_rate.py counting the bytes it sends, and ``cluster_secret`` when
cluster mode is on) and starts them with tools/bench_download_servers.py's ``Fleet``; it
evicts, waits for and counts an image across all of them. The package never imports this
module.
"""

import contextlib
import json
import os
import secrets
import time
import uuid

import sqlalchemy as sa
from prometheus_client import parser as metrics_parser

import bench_download_measure as measure
import bench_download_servers as servers
from bench_download_servers import log, serving
from glance_cache_mw import config
from glance_cache_mw.db import engine as db_engine

METRIC_PREFIX = "glance_cache_mw_"


def has_cluster_mode():
    """Whether this build knows the cluster settings (issue 14)."""
    return "cluster_secret" in config.known_default_keys()


@contextlib.contextmanager
def scratch_database(server_url):
    """A new empty database ``gcm_bench_storm_<hex>`` on the server of ``server_url`` (any
    database there): its URL; dropped when the block ends."""
    admin_url = db_engine.normalize_url(server_url)
    name = "gcm_bench_storm_%s" % uuid.uuid4().hex[:12]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE %s" % name)
        log("created database %s on %s", name, admin_url.render_as_string(hide_password=True))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
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
    """M glance-cache-mw-api nodes on one database; ``cpu()`` and ``name`` as a ``Server``
    has them, so that bench_download_measure.load() can run against all of them at once."""

    def __init__(self, fleet, mode, count, shared):
        """``shared``: db_url, store (file store dir), counter (OriginCounter), origin_rate,
        origin_clock (the shared pace file, or None: a pace per read), workers, max_size."""
        self.fleet = fleet
        self.mode = mode
        self.name = "cluster-%s" % mode
        self.inis = []
        self.servers = []
        secret = secrets.token_hex(16) if mode == "on" else None
        for index in range(count):
            self.inis.append(self._write_ini(index, shared, secret))

    def _write_ini(self, index, shared, secret):
        data = os.path.join(self.fleet.workdir, self.mode, "node%d" % index)
        os.makedirs(data)
        port = serving.free_port()
        settings = {"data_dir": data, "sql_connection": shared["db_url"],
                    "filesystem_store_datadir": shared["store"],
                    "image_cache_dir": os.path.join(data, "cache"),
                    "image_cache_driver": "centralized_db",
                    "worker_self_reference_url": "http://127.0.0.1:%d" % port,
                    "image_cache_max_size": shared["max_size"], "bind_host": "127.0.0.1",
                    "bind_port": port, "workers": shared["workers"]}
        if secret:
            settings["cluster_secret"] = secret
        ini = os.path.join(data, "node.ini")
        origin = {"count_file": shared["counter"].path}
        if shared["origin_clock"]:
            origin["shared_pace_file"] = shared["origin_clock"]
        servers.write_ini(serving.SAMPLE_CONFIG, ini, settings, add_cache=True,
                          origin_rate=shared["origin_rate"], origin_options=origin)
        return ini

    def start(self):
        """Start every node, then wait for them all (they come up in parallel)."""
        self.servers = [self.fleet.start("eventlet", ini, "%s-node%d" % (self.name, index),
                                         wait=False) for index, ini in enumerate(self.inis)]
        for server in self.servers:
            server.wait_ready()
        return self

    def stop(self):
        for server in self.servers:
            server.stop()

    @property
    def ports(self):
        return [server.port for server in self.servers]

    def cpu(self):
        return sum(server.cpu() for server in self.servers)

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
        """The sum over nodes of every sample of counter ``name`` (without prefix and
        ``_total``); None when no node exports it (a build without that metric)."""
        total, seen = 0.0, False
        for port in self.ports:
            _, body = measure.api(port, "GET", "/metrics")
            for family in metrics_parser.text_string_to_metric_families(body.decode()):
                for sample in family.samples:
                    if sample.name == METRIC_PREFIX + name + "_total":
                        total += sample.value
                        seen = True
        return total if seen else None


def settle(counter, mark, nodes, reads_before, timeout_s=30):
    """The origin reads since ``mark`` once every read the nodes' metrics counted has
    closed its body (a fill may commit before its origin body is closed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reads = counter.reads_since(mark)
        expected = (nodes.metric("origin_reads") or 0) - reads_before
        if len(reads) >= expected or time.monotonic() > deadline:
            if len(reads) < expected:
                log("  note: %d origin reads counted by the nodes, %d closed at the store",
                    expected, len(reads))
            return reads
        time.sleep(0.05)
