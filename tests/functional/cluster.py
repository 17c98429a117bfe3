"""A cluster of real glance-cache-mw-api processes on one shared database and one file store.

``Cluster(workdir, db_url, n)`` starts ``n`` servers on 127.0.0.1 (each its own port, picked
before the start so that its ``worker_self_reference_url`` is known, its own data_dir and
cache directory), all with the ``centralized_db`` driver on ``db_url``, the file store in
``{workdir}/store`` as their common origin and, with ``cluster=True``, the same
``cluster_secret`` (issue 14's cluster mode; ``cluster=False`` is today's behaviour: every
node reads the origin itself). Each server has the test-only filter in front of its images
app (tests/functional/server.py): every origin read of image data is logged in
``{node data_dir}/origin-reads`` and paced to ``origin_rate`` bytes/s when given. Nodes run
``glance-cache-mw-api`` (eventlet), gunicorn (GunicornNode) or uWSGI (UwsgiNode) with the
command lines of docs/deployment.md. With ``tls=TLS(cert_file, key_file, ca_file)`` every node
serves https (glance-cache-mw-api's cert_file/key_file, gunicorn's --certfile/--keyfile), its
worker_self_reference_url is ``https://127.0.0.1:PORT``, its cluster_ca_file is ``ca_file``,
and the test's clients verify the nodes' certificates against ``ca_file`` too.

    with Cluster(tmp_path, db.url, 3, image_cache_verify_before_last_byte="true") as cluster:
        image_id = cluster.upload(data)
        results = cluster.download_all(image_id, per_node=16)
        assert cluster.origin_reads() == 1

Used by tests/functional/test_cluster.py and the boot-storm benchmark in tools/ (with the
repository root on sys.path and the test extra installed).
"""

import concurrent.futures
import collections
import configparser
import contextlib
import http.client
import json
import os
import secrets
import subprocess

from prometheus_client import parser as metrics_parser

from tests.functional import serving
from tests.functional.server import (ServerProcess, fetch, uwsgi_command,
                                     wait_for_uwsgi_workers)

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


class WsgiNode(ServerProcess):
    """A node served by another WSGI server on ``port`` with the same INI as a ServerProcess
    (named by GLANCE_CACHE_MW_CONFIG); subclasses give the command line. SIGKILL reaches the
    server's master process only."""

    name = "a WSGI server"

    def __init__(self, workdir, port, tls=None, **kwargs):
        """``tls``: a TLS (the server's own options, the URL https://)."""
        super().__init__(workdir, **kwargs)
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", port)
        self.tls = tls

    def command(self):
        raise NotImplementedError

    def start(self, timeout_s=60):
        env = serving.subprocess_env(GLANCE_CACHE_MW_CONFIG=self.config_path)
        self.process = serving.start_process(self.command(), self.workdir, env,
                                             self.stdout_path, self.stderr_path)
        if serving.wait_until(lambda: serving.status_of(self.url, ca_file=self.ca_file) == 200,
                              self.process, timeout_s):
            self.started(timeout_s)
            return self
        self.stop()
        raise RuntimeError("%s did not answer on %s:\n%s" % (self.name, self.url,
                                                             self.stderr()))

    def started(self, timeout_s):
        """Called once the node answers /healthcheck; may wait for more."""


class GunicornNode(WsgiNode):
    """A node served by gunicorn (``workers`` gthread workers, as docs/deployment.md runs it)."""

    name = "gunicorn"

    def __init__(self, workdir, port, workers=2, **kwargs):
        super().__init__(workdir, port, **kwargs)
        self.workers = workers

    def command(self):
        tls_args = ["--certfile", self.tls.cert_file, "--keyfile", self.tls.key_file] \
            if self.tls else []
        return [serving.console_script("gunicorn"), "-b", "127.0.0.1:%d" % self.port,
                "--workers", str(self.workers), "--worker-class", "gthread", "--threads", "16",
                "--timeout", "0", *tls_args, "glance_cache_mw.wsgi:application"]


class UwsgiNode(WsgiNode):
    """A node served by uWSGI with the command line of docs/deployment.md (``processes`` x
    ``threads``, --lazy-apps: each worker builds the app, its fills and claims after the fork);
    started once every worker has loaded the app (uWSGI logs on stderr)."""

    name = "uWSGI"

    def __init__(self, workdir, port, processes=2, threads=8, tls=None, **kwargs):
        if tls:   # uWSGI's --https-socket needs a uWSGI built with OpenSSL: not tested here
            raise ValueError("UwsgiNode does not serve https")
        super().__init__(workdir, port, **kwargs)
        self.processes, self.threads = processes, threads

    def command(self):
        return uwsgi_command("127.0.0.1:%d" % self.port, self.config_path, self.processes,
                             self.threads)

    def started(self, timeout_s):
        wait_for_uwsgi_workers(self.process, self.stderr_path, self.processes, timeout_s)


NODE_CLASSES = {"eventlet": ServerProcess, "gunicorn": GunicornNode, "uwsgi": UwsgiNode}


class Cluster:
    """``n`` server processes sharing ``db_url`` and one file store; ``nodes[i]`` is the
    ServerProcess of node i (``.url``, ``.data_dir``, ``.stop()``, ``.signal()``)."""

    def __init__(self, workdir, db_url, n=3, origin_rate=None, flavor="noauth", cluster=True,
                 sync=False, server="eventlet", tls=None, node_settings=None, **settings):
        """``origin_rate``: bytes/s of every origin read; ``sync``: migrate ``db_url``
        first (glance-cache-mw-manage db sync); ``server``: "eventlet" (glance-cache-mw-api),
        "gunicorn" (GunicornNode) or "uwsgi" (UwsgiNode); ``tls``: a TLS, for https between
        everyone (eventlet and gunicorn); ``settings``: more [DEFAULT] keys, for every node;
        ``node_settings``: {node index: {key: value}}, for one node (they win)."""
        self.workdir = str(workdir)
        self.store_dir = os.path.join(self.workdir, "store")
        os.makedirs(self.store_dir, exist_ok=True)
        self.secret = secrets.token_hex(16) if cluster else None
        self.ca_file = tls.ca_file if tls else None
        scheme = "https" if tls else "http"
        self.nodes = []
        for index in range(n):
            port = serving.free_port()
            own = {
                "bind_port": port,
                "worker_self_reference_url": "%s://127.0.0.1:%d" % (scheme, port),
                "sql_connection": db_url,
                "image_cache_driver": "centralized_db",
                "filesystem_store_datadir": self.store_dir,
            }
            if cluster:
                own["cluster_secret"] = self.secret
            if tls:
                own["cluster_ca_file"] = tls.ca_file
                if server == "eventlet":
                    own.update(cert_file=tls.cert_file, key_file=tls.key_file)
            own.update(settings)
            own.update((node_settings or {}).get(index, {}))
            workdir = os.path.join(self.workdir, "node%d" % index)
            kwargs = {"flavor": flavor, "settings": own, "origin_bytes_per_s": origin_rate,
                      "ca_file": self.ca_file}
            if server == "eventlet":
                self.nodes.append(ServerProcess(workdir, **kwargs))
            else:
                self.nodes.append(NODE_CLASSES[server](workdir, port, tls=tls, **kwargs))
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
        """GET the image from node ``node`` on a fresh connection (``headers``: e.g. a
        tenant's identity, a Range): a Download."""
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

    def leftovers(self, node, image_id):
        """Names in node ``node``'s incomplete/ and invalid/ (the cache layout's fills in
        progress or abandoned, and failed fills: image_cache/drivers/ondisk.py) that belong to
        ``image_id``, its hidden reservation names included, as "incomplete/NAME"."""
        found = []
        for subdir in ("incomplete", "invalid"):
            path = os.path.join(self.nodes[node].data_dir, "image-cache", subdir)
            with contextlib.suppress(FileNotFoundError):
                found.extend("%s/%s" % (subdir, name) for name in sorted(os.listdir(path))
                             if name == image_id or name.endswith("." + image_id))
        return found

    def clean(self, node, stall_time_s=0):
        """Run ``glance-cache-mw-cleaner`` once on node ``node``'s cache, as an operator would,
        with its INI but ``image_cache_stall_time = stall_time_s``: its stderr."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.nodes[node].config_path)
        parser.set("DEFAULT", "image_cache_stall_time", str(stall_time_s))
        path = os.path.join(self.workdir, "node%d-cleaner.ini" % node)
        with open(path, "w", encoding="utf-8") as handle:
            parser.write(handle)
        result = subprocess.run([serving.console_script("glance-cache-mw-cleaner"),
                                 "--config", path], capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT_S, cwd=self.nodes[node].workdir,
                                env=serving.subprocess_env(), check=False)
        if result.returncode != 0:
            raise AssertionError("glance-cache-mw-cleaner on node %d: exit %d\n%s"
                                 % (node, result.returncode, result.stderr))
        return result.stderr

    def peer_requests(self, node):
        """Requests node ``node``'s peer endpoint answered, whatever the outcome."""
        return int(self.metric("peer_requests_total", [node]))

    def fill_sources(self, node, image_id):
        """The sources node ``node``'s fills of ``image_id`` used, from its log, in order:
        "origin" or a peer's URL (each line `image X: filling from ... at byte N`)."""
        prefix = "image %s: filling from " % image_id
        sources = []
        for line in self.nodes[node].stderr().splitlines():
            if prefix in line:
                source = line.split(prefix, 1)[1].rsplit(" at byte ", 1)[0]
                sources.append("origin" if source == "origin" else source.split("peer ", 1)[1])
        return sources

    def fill_writer(self, node, image_id):
        """The pid of the process of node ``node`` (its server process or one of its workers)
        that has ``image_id``'s incomplete/ file open for writing (its filler), or None."""
        path = os.path.join(self.nodes[node].data_dir, "image-cache", "incomplete", image_id)
        try:
            wanted = os.stat(path)
        except FileNotFoundError:
            return None
        for pid in _process_and_children(self.nodes[node].process.pid):
            if _writes_to(pid, wanted):
                return pid
        return None

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


def _process_and_children(pid):
    """``pid`` and the pids of its children (from /proc/PID/stat, field 4: the parent)."""
    pids = [pid]
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(FileNotFoundError):   # the process ended
                with open("/proc/%s/stat" % name, encoding="ascii", errors="replace") as handle:
                    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(name))
    return pids


def _writes_to(pid, wanted):
    """True if process ``pid`` has the file of os.stat result ``wanted`` open for writing."""
    fd_dir = "/proc/%d/fd" % pid
    with contextlib.suppress(FileNotFoundError):   # the process ended
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(FileNotFoundError):   # the fd was closed meanwhile
                if (os.path.samestat(os.stat(os.path.join(fd_dir, fd)), wanted)
                        and _opened_for_writing(pid, fd)):
                    return True
    return False


def _opened_for_writing(pid, fd):
    with open("/proc/%d/fdinfo/%s" % (pid, fd), encoding="ascii") as handle:
        for line in handle:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    return False
