"""A real OpenStack Glance 33 on 127.0.0.1 with our cache filter in its own Paste pipeline.

Glance comes from PyPI into its own venv (tools/glance-venv, which installs this project there
too: the filter runs inside Glance's process); its python is named by the environment
variable GLANCE_CACHE_MW_TEST_GLANCE_PYTHON, which tools/test sets. Each ``GlanceServer`` is
deployed the way Glance documents it: a generated glance-api.conf (file store, image cache
settings, ``[paste_deploy] flavor``), the glance-api-paste.ini shipped with Glance with only
``[filter:cache]`` (and ``[filter:cachemanage]``) pointing at our factories,
``glance-manage db_sync`` on its database, then glance-api under uWSGI (several processes,
``--lazy-apps``) from Glance's own wsgi-file.

Notifications go to Glance's log (``[oslo_messaging_notifications] driver = log``): every
``image.send`` there is one read of image data through Glance's store (hits served by our
filter never reach Glance's data path), which is how the tests count store reads.
"""

import json
import os
import re
import signal
import subprocess

from tests.functional import server as server_helpers

PYTHON_ENV = "GLANCE_CACHE_MW_TEST_GLANCE_PYTHON"
START_TIMEOUT_S = 120
APP_READY = "WSGI app 0 (mountpoint='') ready"
APP_FAILED = "unable to load app"
PEER_FACTORY = "glance_cache_mw.middleware.peer:filter_factory"
OUR_FACTORIES = {
    "filter:cache": "glance_cache_mw.middleware.cache:filter_factory",
    "filter:cachemanage": "glance_cache_mw.api.cache_manage:filter_factory",
}

_CONF = """[DEFAULT]
image_cache_dir = {dir}/image-cache
image_cache_driver = {driver}
image_cache_max_size = 1073741824
image_cache_stall_time = 3600
worker_self_reference_url = {url}
node_staging_uri = file://{dir}/staging
enabled_import_methods = []
debug = false
{default_extra}[database]
connection = {db_url}
[paste_deploy]
flavor = {flavor}
{store_conf}
[oslo_policy]
policy_file = {dir}/policy.yaml
{policy_defaults}
[oslo_messaging_notifications]
driver = log
[oslo_concurrency]
lock_path = {dir}/locks
{extra}"""

_SINGLE_STORE = """[glance_store]
stores = file
default_store = file
filesystem_store_datadir = {dir}/images"""


def glance_python():
    """The Glance venv's python, or None when the tests cannot run one."""
    path = os.environ.get(PYTHON_ENV)
    return path if path and os.path.exists(path) else None


def glance_file(python, *parts):
    """A file of the Glance venv (site-packages or its data files)."""
    venv = os.path.dirname(os.path.dirname(python))
    return os.path.join(venv, *parts)


def paste_ini_with_our_filters(python):
    """Glance's shipped glance-api-paste.ini with only the factory lines of our two filters
    changed (the one-line switch an operator makes)."""
    with open(glance_file(python, "etc", "glance", "glance-api-paste.ini")) as handle:
        text = handle.read()
    for section, factory in OUR_FACTORIES.items():
        pattern = re.compile(r"(^\[%s\]\s*\npaste\.filter_factory\s*=\s*)\S+" % re.escape(section),
                             re.M)
        text, count = pattern.subn(lambda m: m.group(1) + factory, text)
        assert count == 1, "no [%s] in Glance's glance-api-paste.ini" % section
    return text


def with_peer_filter(text, cluster_secret):
    """A glance-api-paste.ini ``text`` with our peer filter before versionnegotiation in every
    pipeline and ``cluster_secret`` in its [DEFAULT] (docs/glance.md, "Cluster mode")."""
    text, count = re.subn(r"(^\w[\w+]* = .*?)\bversionnegotiation\b",
                          r"\1peer versionnegotiation", text, flags=re.M)
    assert count, "no pipeline with versionnegotiation in Glance's glance-api-paste.ini"
    return ("[DEFAULT]\ncluster_secret = %s\n\n%s\n[filter:peer]\npaste.filter_factory = %s\n"
            % (cluster_secret, text, PEER_FACTORY))


class GlanceServer:
    """glance-api under uWSGI: ``url``, ``request()``, ``log()``, ``store_reads(image_id)``."""

    def __init__(self, workdir, python, db_url, flavor="caching", driver="sqlite",
                 processes=2, threads=8, extra_conf="", policy=None, our_filters=True,
                 backends=None, cluster_secret=None):
        """``our_filters=False``: Glance's glance-api-paste.ini as shipped (Glance's filter);
        ``backends``: names of file stores in Glance's multi-store form (``enabled_backends``,
        the first is the default; data under ``images/{name}``), else one file store
        (``[glance_store] filesystem_store_datadir`` = ``images``); ``cluster_secret``: our
        peer filter in every pipeline, in cluster mode with that secret."""
        self.workdir = str(workdir)
        self.python = python
        self.db_url = db_url
        self.flavor = flavor
        self.driver = driver
        self.processes = processes
        self.threads = threads
        self.extra_conf = extra_conf
        self.policy = policy or {}
        self.our_filters = our_filters
        self.backends = list(backends or ())
        self.cluster_secret = cluster_secret
        self.port = server_helpers.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.cache_dir = os.path.join(self.workdir, "image-cache")
        self.log_path = os.path.join(self.workdir, "glance-api.log")
        self.process = None

    def bin(self, name):
        return os.path.join(os.path.dirname(self.python), name)

    def start(self):
        env = self.prepare()
        self._start_uwsgi(env)

    def prepare(self):
        """Write glance-api.conf, the paste file and the policy, and sync Glance's database;
        the environment for a Glance process reading them."""
        for sub in ("images", "staging", "locks", "image-cache"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        with open(os.path.join(self.workdir, "glance-api.conf"), "w") as handle:
            handle.write(_CONF.format(dir=self.workdir, driver=self.driver, url=self.url,
                                      db_url=self.db_url, flavor=self.flavor,
                                      extra=self.extra_conf,
                                      store_conf=self._store_conf(),
                                      default_extra=self._default_extra(),
                                      policy_defaults=self._policy_defaults()))
        with open(os.path.join(self.workdir, "glance-api-paste.ini"), "w") as handle:
            if self.our_filters:
                text = paste_ini_with_our_filters(self.python)
                if self.cluster_secret:
                    text = with_peer_filter(text, self.cluster_secret)
                handle.write(text)
            else:
                with open(glance_file(self.python, "etc", "glance",
                                      "glance-api-paste.ini")) as shipped:
                    handle.write(shipped.read())
        self.write_policy(self.policy)
        env = dict(os.environ, OS_GLANCE_CONFIG_DIR=self.workdir)
        sync = subprocess.run([self.bin("glance-manage"), "--config-file",
                               os.path.join(self.workdir, "glance-api.conf"), "db_sync"],
                              env=env, capture_output=True, text=True, timeout=180)
        assert sync.returncode == 0, "glance-manage db_sync failed:\n%s%s" % (
            sync.stdout, sync.stderr[-4000:])
        return env

    def _start_uwsgi(self, env):
        wsgi_file = glance_file(self.python, "lib", "python%s" % _python_version(self.python),
                                "site-packages", "glance", "wsgi", "api.py")
        argv = [self.bin("uwsgi"), "--http-socket", "127.0.0.1:%d" % self.port,
                "--wsgi-file", wsgi_file, "--master", "--processes", str(self.processes),
                "--threads", str(self.threads), "--enable-threads", "--lazy-apps",
                "--die-on-term", "--need-app", "--http-auto-chunked", "--http-chunked-input",
                "--socket-timeout", "30",
                "--buffer-size", "65535", "--add-header", "Connection: close",
                "--virtualenv", os.path.dirname(os.path.dirname(self.python))]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=self.workdir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            server_helpers.wait_for(lambda: self._workers_loaded(), timeout_s=START_TIMEOUT_S,
                                    what="glance-api's uWSGI workers to load the app")
        except AssertionError as err:
            self.stop()
            raise AssertionError("%s:\n%s" % (err, self.log()[-8000:])) from None

    def _default_extra(self):
        if not self.backends:
            return ""
        return "enabled_backends = %s\n" % ",".join("%s:file" % b for b in self.backends)

    def _store_conf(self):
        if not self.backends:
            return _SINGLE_STORE.format(dir=self.workdir)
        sections = ["[glance_store]", "default_backend = " + self.backends[0]]
        for name in self.backends + ["os_glance_staging_store", "os_glance_tasks_store"]:
            datadir = os.path.join(self.workdir, "images", name)
            os.makedirs(datadir, exist_ok=True)
            sections += ["[%s]" % name, "filesystem_store_datadir = " + datadir]
        return "\n".join(sections)

    def _policy_defaults(self):
        # Glance's unauthenticated context is an admin without roles or project: the noauth
        # flavors run with the legacy policy defaults, as Glance's own noauth tests do.
        if self.flavor.startswith("keystone"):
            return ""
        return "enforce_new_defaults = false\nenforce_scope = false"

    def _workers_loaded(self):
        log = self.log()
        if APP_FAILED in log or (self.process.poll() is not None):
            raise AssertionError("glance-api did not start")
        return log.count(APP_READY) >= self.processes

    def write_policy(self, rules):
        """Replace Glance's policy file (oslo.policy reloads it when it changes)."""
        path = os.path.join(self.workdir, "policy.yaml")
        with open(path + ".tmp", "w") as handle:
            json.dump(rules, handle)          # JSON is YAML
        os.replace(path + ".tmp", path)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def request(self, method, path, body=None, headers=None, timeout_s=60):
        return server_helpers.http_request(self.url, method, path, body, headers, timeout_s)

    def store_reads(self, image_id):
        """How many times Glance's data path sent this image (its ``image.send``
        notifications), i.e. read it from the store."""
        return sum(1 for line in self.log().splitlines()
                   if "image.send" in line and image_id in line)

    def cached_file(self, image_id):
        return os.path.join(self.cache_dir, image_id)


def _python_version(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()
