"""Server processes on 127.0.0.1, shared by the functional tests and the download benchmark.

One home for what tests/functional/server.py (``ServerProcess``, the gunicorn and uWSGI
fixtures) and tools/bench_download_servers.py (the benchmark's eventlet, gunicorn and nginx
servers) both do: find a console script, write a server INI from a sample, migrate its
database, start a process with its output in files, wait until it prints its "listening on"
line or answers /healthcheck, make requests to it, and stop it. ``PacedBody`` is the response
body that both sides' test-only Paste filters slow down (tests' ``/test/slow``, the
benchmark's paced origin, tools/bench_origin_rate.py).

Standard library only (no pytest, no WebOb): tools/ import it with the repository root on
sys.path (``from tests.functional import serving``), and so do the server subprocesses of
both (:func:`subprocess_env`). The package never imports it.
"""

import configparser
import contextlib
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_CONFIG = os.path.join(REPO_ROOT, "etc", "glance-cache-mw.ini")
_LISTENING = re.compile(r"listening on (https?://\S+)")


def console_script(name):
    """The path of console script ``name`` next to this interpreter (it may not exist)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def free_port():
    """A local TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(python_paths=(), **extra):
    """The environment for server subprocesses: the repository root (and ``python_paths``)
    importable, no user config, then ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [*python_paths, REPO_ROOT, env.get("PYTHONPATH")]))
    env.pop("GLANCE_CACHE_MW_CONFIG", None)
    env.update(extra)
    return env


def read_config(settings, template=SAMPLE_CONFIG):
    """A ConfigParser of the INI ``template`` with ``settings`` (as strings) in [DEFAULT]."""
    parser = configparser.ConfigParser(interpolation=None)
    with open(template, encoding="utf-8") as handle:
        parser.read_file(handle)
    for key, value in settings.items():
        parser.set("DEFAULT", key, str(value))
    return parser


def write_parser(parser, path):
    """Write ``parser`` to ``path``; return ``path``."""
    with open(path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    return path


def sync_database(config_path, env=None, cwd=None, timeout_s=120):
    """``glance-cache-mw-manage --config FILE db sync``; RuntimeError with its output if it
    fails."""
    done = subprocess.run([console_script("glance-cache-mw-manage"), "--config",
                           str(config_path), "db", "sync"], env=env or subprocess_env(),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise RuntimeError("db sync of %s failed (exit %d):\n%s%s" % (
            config_path, done.returncode, done.stdout, done.stderr))


def start_process(argv, cwd, env, stdout_path, stderr_path=None, new_session=False):
    """Popen ``argv`` with its stdout in ``stdout_path`` and its stderr in ``stderr_path``
    (in the same file without it); ``new_session`` gives it a process group of its own."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(stdout_path, "wb"))
        err = (files.enter_context(open(stderr_path, "wb")) if stderr_path
               else subprocess.STDOUT)
        return subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env,
                                start_new_session=new_session)


def wait_until(ready, process, timeout_s, interval_s=0.1):
    """Poll ``ready()`` until it returns something true, and return that; None once
    ``process`` has exited or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if process.poll() is not None:
            return None
        time.sleep(interval_s)
    return None


def listening_url(stdout_path):
    """The URL of the "listening on http://..." line in the file ``stdout_path``, else None."""
    with open(stdout_path, encoding="utf-8", errors="replace") as handle:
        match = _LISTENING.search(handle.read())
    return match.group(1) if match else None


def status_of(url, path="/healthcheck", timeout_s=2, ca_file=None):
    """The status of ``GET url+path``, or None when nothing answers properly."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        return http_request(url, "GET", path, timeout_s=timeout_s, ca_file=ca_file)[0]
    return None


def stop_process(process, timeout_s, group=False):
    """SIGTERM (to its process group with ``group``), wait, SIGKILL after ``timeout_s``;
    return the exit status."""
    if process.poll() is None:
        def send(signum):
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(process.pid, signum)
                else:
                    process.send_signal(signum)
        send(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait()
    return process.returncode


def connection(base_url, timeout_s, ca_file=None, blocksize=8192):
    """An http.client connection to ``base_url``: https verifies the server's certificate
    and host name against ``ca_file`` (else the system's CAs)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s,
                                           blocksize=blocksize, context=context)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s,
                                      blocksize=blocksize)


def http_request(base_url, method, path, body=None, headers=None, timeout_s=30, blocksize=8192,
                 ca_file=None):
    """(status, lower-cased headers, body) of one request to ``base_url + path`` (https:
    verified against ``ca_file``)."""
    conn = connection(base_url, timeout_s, ca_file, blocksize)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


class PacedBody:
    """A WSGI body that yields the chunks of ``body`` no faster than ``seconds_per_byte``
    allows: the first at once, each later one when the bytes before it are due (sleeping,
    which is green under eventlet). ``sent``: the bytes yielded so far; close() closes
    ``body``."""

    def __init__(self, body, seconds_per_byte):
        self._body = body
        self._chunks = iter(body)
        self._seconds_per_byte = seconds_per_byte
        self._start = None
        self.sent = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self._chunks)
        now = time.monotonic()
        if self._start is None:
            self._start = now
        ahead = self._start + self.sent * self._seconds_per_byte - now
        if ahead > 0:
            time.sleep(ahead)
        self.sent += len(chunk)
        return chunk

    def close(self):
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
