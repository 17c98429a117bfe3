"""A cluster of real glance-cache-mw-api processes on one shared database and one file store.

``Cluster(workdir, db_url, n)`` starts ``n`` servers on 127.0.0.1 (each its own port, picked
before the start so that its ``worker_self_reference_url`` is known, its own data_dir and
cache directory), all with the ``centralized_db`` driver on ``db_url``, the file store in
``{workdir}/store`` as their common origin and, with ``cluster=True``, the same
``cluster_secret`` (issue 14's cluster mode; ``cluster=False`` is today's behaviour: every
node reads the origin itself). Each server has the test-only filter in front of its images
app (tests/functional/server.py): every origin read of image data is logged in
``{node data_dir}/origin-reads`` and paced to ``origin_rate`` bytes/s when given. With
``tls=TLS(cert_file, key_file, ca_file)`` every node serves https (glance-cache-mw-api's
cert_file/key_file, gunicorn's --certfile/--keyfile), its worker_self_reference_url is
``https://127.0.0.1:PORT``, its cluster_ca_file is ``ca_file``, and the test's clients verify
the nodes' certificates against ``ca_file`` too.

    with Cluster(tmp_path, db.url, 3, image_cache_verify_before_last_byte="true") as cluster:
        image_id = cluster.upload(data)
        results = cluster.download_all(image_id, per_node=16)
        assert cluster.origin_reads() == 1

Used by tests/functional/test_cluster.py and the boot-storm benchmark in tools/ (with the
repository root on sys.path and the test extra installed).
"""

import concurrent.futures
import collections
import contextlib
import http.client
import json
import os
import secrets

from prometheus_client import parser as metrics_parser

from tests.functional import serving
from tests.functional.server import ServerProcess, fetch

METRIC_PREFIX = "glance_cache_mw_"
CLIENT_TIMEOUT_S = 120

# PEM files of a cluster over https: every node's certificate and key, the CA that signed them.
TLS = collections.namedtuple("TLS", "cert_file key_file ca_file")


class Download:
    """One client's download: status, X-Image-Cache, body bytes and how it ended
    ("complete", "cut": the connection ended short of Content-Length, "kept open": no
    bytes for the timeout, or "failed": no response, or a reset connection)."""

    def __init__(self, node, status, cache, body, ended):
        self.node, self.status, self.cache, self.body, self.ended = (
            node, status, cache, body, ended)

    def __repr__(self):
        return "Download(node=%d, status=%s, cache=%s, %d bytes, %s)" % (
            self.node, self.status, self.cache, len(self.body or b""), self.ended)


class GunicornNode(ServerProcess):
    """A node served by gunicorn (``workers`` gthread workers, as docs/deployment.md runs
    it) on ``port``, with the same INI as a ServerProcess; SIGKILL reaches the master only."""

    def __init__(self, workdir, port, workers=2, tls=None, **kwargs):
        """``tls``: a TLS (gunicorn's --certfile/--keyfile, the URL https://)."""
        super().__init__(workdir, **kwargs)
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", port)
        self.workers = workers
        self.tls_args = ["--certfile", tls.cert_file, "--keyfile", tls.key_file] if tls else []

    def start(self, timeout_s=60):
        argv = [serving.console_script("gunicorn"), "-b", "127.0.0.1:%d" % self.port,
                "--workers", str(self.workers), "--worker-class", "gthread", "--threads", "16",
                "--timeout", "0", *self.tls_args, "glance_cache_mw.wsgi:application"]
        env = serving.subprocess_env(GLANCE_CACHE_MW_CONFIG=self.config_path)
        self.process = serving.start_process(argv, self.workdir, env, self.stdout_path,
                                             self.stderr_path)
        if serving.wait_until(lambda: serving.status_of(self.url, ca_file=self.ca_file) == 200,
                              self.process, timeout_s):
            return self
        self.stop()
        raise RuntimeError("gunicorn did not answer on %s:\n%s" % (self.url, self.stderr()))


class Cluster:
    """``n`` server processes sharing ``db_url`` and one file store; ``nodes[i]`` is the
    ServerProcess of node i (``.url``, ``.data_dir``, ``.stop()``, ``.signal()``)."""

    def __init__(self, workdir, db_url, n=3, origin_rate=None, flavor="noauth", cluster=True,
                 sync=False, server="eventlet", tls=None, node_settings=None, **settings):
        """``origin_rate``: bytes/s of every origin read; ``sync``: migrate ``db_url``
        first (glance-cache-mw-manage db sync); ``server``: "eventlet" (glance-cache-mw-api)
        or "gunicorn" (GunicornNode); ``tls``: a TLS, for https between everyone;
        ``settings``: more [DEFAULT] keys, for every node; ``node_settings``: {node index:
        {key: value}}, for one node (they win)."""
        self.workdir = str(workdir)
        self.store_dir = os.path.join(self.workdir, "store")
        os.makedirs(self.store_dir, exist_ok=True)
        self.secret = secrets.token_hex(16) if cluster else None
        self.ca_file = tls.ca_file if tls else None
        scheme = "https" if tls else "http"
        self.nodes = []
        for index in range(n):
            port = serving.free_port()
            values = {
                "bind_port": port,
                "worker_self_reference_url": "%s://127.0.0.1:%d" % (scheme, port),
                "sql_connection": db_url,
                "image_cache_driver": "centralized_db",
                "filesystem_store_datadir": self.store_dir,
            }
            if cluster:
                values["cluster_secret"] = self.secret
            if tls:
                values["cluster_ca_file"] = tls.ca_file
                if server != "gunicorn":
                    values.update(cert_file=tls.cert_file, key_file=tls.key_file)
            values.update(settings)
            values.update((node_settings or {}).get(index, {}))
            workdir = os.path.join(self.workdir, "node%d" % index)
            kwargs = {"flavor": flavor, "settings": values, "origin_bytes_per_s": origin_rate,
                      "ca_file": self.ca_file}
            self.nodes.append(GunicornNode(workdir, port, tls=tls, **kwargs)
                              if server == "gunicorn" else ServerProcess(workdir, **kwargs))
        self._sync = sync

    def start(self):
        """Start every node (all at once) and return self; stops them all on failure."""
        try:
            if self._sync:
                serving.sync_database(self.nodes[0].config_path)
            with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
                for started in [pool.submit(node.start) for node in self.nodes]:
                    started.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def urls(self):
        return [node.url for node in self.nodes]

    # -- images --------------------------------------------------------------------------

    def upload(self, data, name="cluster-image", headers=None, node=0, visibility=None):
        """A new active raw image holding ``data``, created through node ``node`` (with
        ``headers``, e.g. a tenant's identity): its id."""
        headers = dict(headers or {})
        meta = {"name": name, "disk_format": "raw", "container_format": "bare"}
        if visibility:
            meta["visibility"] = visibility
        url = self.nodes[node].url
        status, _, body = serving.http_request(
            url, "POST", "/v2/images", json.dumps(meta).encode(),
            {**headers, "Content-Type": "application/json"}, ca_file=self.ca_file)
        if status != 201:
            raise AssertionError("creating an image on %s: %s %r" % (url, status, body))
        image_id = json.loads(body)["id"]
        status, _, body = serving.http_request(
            url, "PUT", "/v2/images/%s/file" % image_id, data,
            {**headers, "Content-Type": "application/octet-stream"}, timeout_s=CLIENT_TIMEOUT_S,
            ca_file=self.ca_file)
        if status != 204:
            raise AssertionError("uploading image %s on %s: %s %r" % (image_id, url, status,
                                                                      body))
        return image_id

    def download(self, node, image_id, headers=None, timeout_s=CLIENT_TIMEOUT_S):
        """GET the image from node ``node`` on a fresh connection: a Download."""
        try:
            status, cache, body, ended = fetch(self.nodes[node].url,
                                               "/v2/images/%s/file" % image_id, timeout_s,
                                               headers, self.ca_file)
        except (OSError, http.client.HTTPException):   # no response, or reset mid-body
            return Download(node, None, None, None, "failed")
        return Download(node, status, cache, body, ended)

    def download_all(self, image_id, per_node, nodes=None, headers=None,
                     timeout_s=CLIENT_TIMEOUT_S):
        """``per_node`` concurrent downloads from each of ``nodes`` (default: all), all
        started at once: the Downloads, node by node."""
        nodes = range(len(self.nodes)) if nodes is None else nodes
        targets = [node for node in nodes for _ in range(per_node)]
        with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
            return list(pool.map(
                lambda node: self.download(node, image_id, headers, timeout_s), targets))

    def cached_file(self, node, image_id):
        """The bytes node ``node`` has cached for ``image_id`` (its complete file), or None."""
        path = os.path.join(self.nodes[node].data_dir, "image-cache", image_id)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def incomplete_files(self, node):
        """Names in node ``node``'s incomplete/ (fills in progress or left behind)."""
        path = os.path.join(self.nodes[node].data_dir, "image-cache", "incomplete")
        try:
            return sorted(name for name in os.listdir(path) if not name.startswith("."))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def slow_origin(self, seconds_per_chunk):
        """While in the block, every chunk of every origin read on every node waits
        ``seconds_per_chunk`` (the test filter's ``origin-delay`` file)."""
        paths = [os.path.join(node.data_dir, "origin-delay") for node in self.nodes]
        for path in paths:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(str(seconds_per_chunk))
        try:
            yield
        finally:
            for path in paths:
                os.unlink(path)

    # -- counting ------------------------------------------------------------------------

    def metric(self, name, nodes=None, **labels):
        """The sum over ``nodes`` (default: the running ones) of the sample ``name`` (without
        the glance_cache_mw_ prefix) whose labels include ``labels``, from GET /metrics."""
        total = 0.0
        for index in self._running(nodes):
            status, _, body = self.nodes[index].request("GET", "/metrics")
            if status != 200:
                raise AssertionError("GET /metrics on node %d: %s" % (index, status))
            for family in metrics_parser.text_string_to_metric_families(body.decode()):
                for sample in family.samples:
                    if sample.name == METRIC_PREFIX + name and all(
                            sample.labels.get(k) == v for k, v in labels.items()):
                        total += sample.value
        return total

    def origin_reads(self, nodes=None):
        """Origin reads of image data counted by the nodes' /metrics, every reason."""
        return int(self.metric("origin_reads_total", nodes))

    def origin_log(self, nodes=None):
        """Lines ``{image id} {Range or -}`` of every origin read the test filter saw, on
        ``nodes`` (default: all, killed ones included: the log is a file)."""
        lines = []
        for index in range(len(self.nodes)) if nodes is None else nodes:
            path = os.path.join(self.nodes[index].data_dir, "origin-reads")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    lines.extend(line.strip() for line in handle if line.strip())
        return lines

    def fill_log(self):
        """Where each node's fills came from (the cluster.source lines of its log), to
        explain a failed assertion."""
        lines = []
        for index, node in enumerate(self.nodes):
            lines.extend("node%d %s" % (index, line) for line in node.stderr().splitlines()
                         if "cluster.source" in line)
        return "\n".join(lines)

    def _running(self, nodes):
        indexes = range(len(self.nodes)) if nodes is None else nodes
        return [i for i in indexes if self.nodes[i].process.poll() is None]
