"""The servers of tools/bench_download_run.py: their INIs, processes, CPU time and nginx.

``Fleet`` starts glance-cache-mw-api (eventlet) and gunicorn on an INI written by
:func:`write_ini`, and nginx (installed by :func:`ensure_nginx` when missing) on the file
store; each is a ``Server``: a process group of its own whose pids and CPU time (utime+stime
from /proc, master and workers) the measurements read. Starting, waiting and stopping are
tests/functional/serving.py's, shared with the functional tests. The package never imports
this module.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, ROOT)   # tests.functional.serving, shared with the functional tests
from tests.functional import serving  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message, *args):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), message % args if args else message))
    sys.stderr.flush()


def _stat(pid):
    """The fields of /proc/<pid>/stat after the command's name; None once it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_tree(root_pid):
    """``root_pid`` and all its descendants (from /proc/*/stat)."""
    parents = {}
    for name in os.listdir("/proc"):
        fields = _stat(name) if name.isdigit() else None
        if fields:
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
    for fields in filter(None, map(_stat, pids)):
        total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


class Server:
    """A server process group we started: its port, its pids, and how to stop it. Without
    ``port``, the port is read from the server's "listening on" line."""

    def __init__(self, name, argv, port, workdir, env=None):
        self.name = name
        self.port = port
        self.stdout_path = os.path.join(workdir, "%s.out" % name)
        self.stderr_path = os.path.join(workdir, "%s.log" % name)
        self.proc = serving.start_process(argv, workdir, env or dict(os.environ),
                                          self.stdout_path, self.stderr_path, new_session=True)
        self.pids = []

    def _answers(self, path):
        if not self.port:
            url = serving.listening_url(self.stdout_path)
            self.port = url and urllib.parse.urlsplit(url).port
        return self.port and (serving.status_of("http://127.0.0.1:%d" % self.port, path,
                                                timeout_s=5) or 500) < 500

    def wait_ready(self, path="/healthcheck", timeout_s=60):
        if not serving.wait_until(lambda: self._answers(path), self.proc, timeout_s):
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (
                    self.name, self.proc.returncode, self.stderr_path))
            raise RuntimeError("%s did not come up in %ss; see %s" % (self.name, timeout_s,
                                                                      self.stderr_path))
        time.sleep(0.5)   # let every worker come up
        self.pids = process_tree(self.proc.pid)
        log("%s ready on port %d (pids %s)", self.name, self.port, self.pids)
        return self

    def cpu(self):
        return cpu_seconds(process_tree(self.proc.pid))

    def log_text(self):
        with open(self.stderr_path, errors="replace") as handle:
            return handle.read()

    def stop(self):
        serving.stop_process(self.proc, 15, group=True)
        # Workers that outlived their parent: the group is ours, so end it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Fleet:
    """Every server of one run, started in ``workdir`` with the command line's ``args``;
    stop_all() ends them."""

    def __init__(self, workdir, args):
        self.workdir = workdir
        self.args = args
        self.servers = []

    def start(self, kind, ini, name=None, wait=True):
        """glance-cache-mw-api ("eventlet") or gunicorn on ``ini``, once it answers (at once
        without ``wait``: then the caller calls its wait_ready())."""
        name = name or kind
        paths = [TOOLS]   # for bench_origin_rate
        if kind == "eventlet":
            server = Server(name, [serving.console_script("glance-cache-mw-api"), "--config",
                                   ini, "--graceful-timeout", "5"], None, self.workdir,
                            env=serving.subprocess_env(paths))
        else:
            port = serving.free_port()
            server = Server(name, [serving.console_script("gunicorn"), "-b",
                                   "127.0.0.1:%d" % port, "-k", "gthread",
                                   "-w", str(self.args.gunicorn_workers),
                                   "--threads", str(self.args.gunicorn_threads),
                                   "--graceful-timeout", "5", "--timeout", "300",
                                   "glance_cache_mw.wsgi:application"], port, self.workdir,
                            env=serving.subprocess_env(paths, GLANCE_CACHE_MW_CONFIG=ini))
        self.servers.append(server)
        return server.wait_ready() if wait else server

    def start_nginx(self, nginx, root_dir):
        """nginx serving the files of ``root_dir``, once it answers."""
        server = start_nginx(nginx, self.workdir, root_dir, self.args.nginx_workers)
        self.servers.append(server)
        return server.wait_ready()

    def stop_all(self):
        for server in self.servers:
            server.stop()


def write_ini(template, path, settings, add_cache, origin_rate=None, origin_options=None):
    """Copy ``template`` with ``settings`` in [DEFAULT]; ``origin_rate`` (MiB/s) puts
    tools/bench_origin_rate.py right before the images app (with ``origin_options``, e.g.
    its count_file, in its section)."""
    parser = serving.read_config(settings, template)
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
        parser["filter:origin_rate"].update(origin_options or {})
    parser[section]["pipeline"] = " ".join(stages)
    serving.write_parser(parser, path)
    return " ".join(stages)


def sync_database(ini, workdir):
    """Create the tables of ``ini``'s database."""
    serving.sync_database(ini, cwd=workdir)


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


NGINX_CONF = """%(user)sworker_processes %(workers)d;
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
"""


def start_nginx(nginx, workdir, root_dir, workers):
    """nginx (not waited for) serving ``root_dir`` with ``workers`` worker processes."""
    prefix = os.path.join(workdir, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    port = serving.free_port()
    conf = os.path.join(prefix, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""   # the temp dir is 0700
    with open(conf, "w") as handle:
        handle.write(NGINX_CONF % {"user": user, "workers": workers, "prefix": prefix,
                                   "port": port, "root": root_dir})
    return Server("nginx", [nginx, "-p", prefix, "-c", conf], port, workdir)
