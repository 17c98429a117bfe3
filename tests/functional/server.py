"""Run the real glance-cache-mw-api in a subprocess on 127.0.0.1:0, plus test-only Paste parts.

``ServerProcess`` writes an INI derived from etc/glance-cache-mw.ini (data_dir in a temporary
directory, bind_port 0, the chosen flavor and settings), starts the console script, reads the
port from its "listening on" line and stops it with SIGTERM. Use it through the
``start_server`` / ``api_server`` fixtures of tests/functional/conftest.py.

Test-only Paste parts (imported by the server subprocess, which gets the repository root on
PYTHONPATH): ``testing_filter_factory`` answers a few ``/test/...`` paths (slow bodies, the
worker's pid, a fake cache status) and passes everything else; ``stub_app_factory`` stands in
for the images app where a test does not need it.
"""

import configparser
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
import webob

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_CONFIG = os.path.join(REPO_ROOT, "etc", "glance-cache-mw.ini")
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
_LISTENING = re.compile(r"listening on (http://\S+)")


def api_command():
    """The console script next to this interpreter (else ``python -m``)."""
    script = os.path.join(os.path.dirname(sys.executable), "glance-cache-mw-api")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "glance_cache_mw.cmd.api"]


def subprocess_env(**extra):
    """The environment for server subprocesses: the test helpers importable, no user config."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    env.pop("GLANCE_CACHE_MW_CONFIG", None)
    env.update(extra)
    return env


def write_config(path, data_dir, flavor="noauth", settings=None, testing=True, stub_app=False):
    """Write a server INI based on the etc/ sample; return ``path``.

    ``testing`` inserts the test-only filter just before the app of every pipeline;
    ``stub_app`` replaces the images app by :func:`stub_app_factory`.
    """
    parser = configparser.ConfigParser(interpolation=None)
    with open(SAMPLE_CONFIG, encoding="utf-8") as handle:
        parser.read_file(handle)
    values = {"data_dir": str(data_dir), "bind_host": "127.0.0.1", "bind_port": "0",
              "workers": "1", "flavor": flavor}
    values.update({key: str(value) for key, value in (settings or {}).items()})
    for key, value in values.items():
        parser.set("DEFAULT", key, value)
    if testing:
        parser["filter:testing"] = {
            "paste.filter_factory": "tests.functional.server:testing_filter_factory"}
        for section in parser.sections():
            if section.startswith("pipeline:"):
                names = parser.get(section, "pipeline").split()
                parser.set(section, "pipeline", " ".join(names[:-1] + ["testing", names[-1]]))
    if stub_app:
        parser.remove_section("app:images")
        parser["app:images"] = {"paste.app_factory": "tests.functional.server:stub_app_factory"}
    with open(path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    return path


class ServerProcess:
    """One ``glance-cache-mw-api --config FILE`` subprocess; ``url`` once started."""

    def __init__(self, workdir, flavor="noauth", settings=None, testing=True, stub_app=False,
                 extra_args=(), ini_text=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.data_dir = os.path.join(self.workdir, "data")
        self.config_path = os.path.join(self.workdir, "glance-cache-mw.ini")
        if ini_text is None:
            write_config(self.config_path, self.data_dir, flavor, settings, testing, stub_app)
        else:   # verbatim, e.g. a settings-only file
            with open(self.config_path, "w", encoding="utf-8") as handle:
                handle.write(ini_text)
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.extra_args = list(extra_args)
        self.process = None
        self.url = None

    def start(self, timeout_s=START_TIMEOUT_S):
        """Start the server and wait for its "listening on" line; return self."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                api_command() + ["--config", self.config_path] + self.extra_args,
                stdout=out, stderr=err, cwd=self.workdir, env=subprocess_env())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.stdout())
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start (exit %s)\nstdout:\n%s\nstderr:\n%s"
                           % (self.process.returncode, self.stdout(), self.stderr()))

    @property
    def port(self):
        return urllib.parse.urlsplit(self.url).port

    def stdout(self):
        with open(self.stdout_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stderr(self):
        with open(self.stderr_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def signal(self, signum=signal.SIGTERM):
        self.process.send_signal(signum)

    def wait(self, timeout_s=STOP_TIMEOUT_S):
        """Wait for the process to exit; return its status."""
        return self.process.wait(timeout=timeout_s)

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM, wait (SIGKILL after the timeout); return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def request(self, method, path, body=None, headers=None, timeout_s=30):
        """One request on a fresh connection; (status, headers dict, body bytes)."""
        return http_request(self.url, method, path, body, headers, timeout_s)


def wait_for(predicate, timeout_s=15, what="condition"):
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def free_port():
    """A local TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wsgi_config(tmp_path):
    """An INI (no test filter) with a migrated database for glance_cache_mw.wsgi under another
    server: (its path, the environment naming it in GLANCE_CACHE_MW_CONFIG)."""
    path = write_config(tmp_path / "wsgi.ini", tmp_path / "data", testing=False)
    env = subprocess_env(GLANCE_CACHE_MW_CONFIG=str(path))
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "glance-cache-mw-manage"),
                    "--config", str(path), "db", "sync"], env=env, check=True,
                   capture_output=True, timeout=60)
    return path, env


def start_wsgi_server(argv, url, env, log_path, timeout_s=60):
    """Start ``argv`` (gunicorn, uWSGI, ...) and return its process once ``url`` answers
    /healthcheck; its output goes to ``log_path``, quoted if it dies on the way."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=os.path.dirname(log_path), env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if http_request(url, "GET", "/healthcheck", timeout_s=2)[0] == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            with open(log_path, errors="replace") as handle:
                raise AssertionError("%s did not answer on %s:\n%s"
                                     % (os.path.basename(argv[0]), url, handle.read()))
        time.sleep(0.1)


def start_gunicorn(tmp_path, *args):
    """gunicorn (from the test extra) serving glance_cache_mw.wsgi:application with ``args``
    on a fresh config: (url, process)."""
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    if not os.path.exists(gunicorn):
        pytest.skip("gunicorn is not installed (it comes with the test extra)")
    _, env = wsgi_config(tmp_path)
    url = "http://127.0.0.1:%d" % free_port()
    process = start_wsgi_server([gunicorn, "-b", url[len("http://"):], *args,
                                 "glance_cache_mw.wsgi:application"],
                                url, env, str(tmp_path / "gunicorn.log"))
    return url, process


def http_request(base_url, method, path, body=None, headers=None, timeout_s=30):
    """(status, lower-cased headers, body) of one request to ``base_url + path``."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


# --- test-only Paste parts (run inside the server subprocess) ---------------------------------

class TestingFilter:
    """Answers ``/test/slow``, ``/test/pid``, ``/test/cache`` and ``/test/raise[-in-body]``
    (an app error); passes everything else.

    ``/test/slow?seconds=S&chunks=N&name=X`` streams N bytes over S seconds and, when its body
    is closed, writes ``{data_dir}/closed-X`` with the number of bytes it yielded.

    While ``{data_dir}/origin-delay`` exists (it holds seconds), the images app's image data
    (what the cache reads from the origin; this filter sits between them) waits that long
    before each chunk: a slow origin, so that concurrent downloads meet a fill in progress.
    """

    def __init__(self, app, data_dir):
        self.app = app
        self.data_dir = data_dir

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        if request.path_info == "/test/slow":
            seconds = float(request.GET.get("seconds", "1"))
            chunks = int(request.GET.get("chunks", "10"))
            # eventlet buffers 4 KiB before writing unless told otherwise; stream each byte.
            environ["eventlet.minimum_write_chunk_size"] = 0
            response = webob.Response(content_type="application/octet-stream")
            marker = os.path.join(self.data_dir, "closed-" + request.GET.get("name", "slow"))
            response.app_iter = SlowBody(seconds, chunks, marker)
            response.content_length = chunks
        elif request.path_info == "/test/raise":
            if request.GET.get("after_start"):
                start_response("200 OK", [("Content-Type", "text/plain")])
            raise ZeroDivisionError("raised by /test/raise on purpose")
        elif request.path_info == "/test/raise-in-body":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return _raising_body()
        elif (request.path_info.endswith("/file") and request.method == "GET"
              and os.path.exists(os.path.join(self.data_dir, "origin-delay"))):
            with open(os.path.join(self.data_dir, "origin-delay"), encoding="utf-8") as handle:
                delay_s = float(handle.read())
            return DelayedBody(self.app(environ, start_response), delay_s)
        elif request.path_info == "/test/pid":
            response = webob.Response(json_body={"pid": os.getpid()})
        elif request.path_info == "/test/cache":
            response = webob.Response(body=b"cached", content_type="text/plain")
            response.headers["X-Image-Cache"] = request.GET.get("status", "HIT")
        else:
            return self.app(environ, start_response)
        return response(environ, start_response)


class DelayedBody:
    """``body`` with ``delay_s`` before each chunk; close() reaches it."""

    def __init__(self, body, delay_s):
        self._body = body
        self._chunks = iter(body)
        self._delay_s = delay_s

    def __iter__(self):
        return self

    def __next__(self):
        time.sleep(self._delay_s)
        return next(self._chunks)

    def close(self):
        getattr(self._body, "close", lambda: None)()


def _raising_body():
    raise LookupError("raised by /test/raise-in-body on purpose")
    yield b""   # a generator: it raises on the server's first next()


class SlowBody:
    """``chunks`` single bytes, the first at once (the client then knows the request is in
    flight), the others spread over ``seconds``; close() records how many were yielded."""

    def __init__(self, seconds, chunks, marker_path):
        self.delay_s = seconds / max(chunks - 1, 1)
        self.left = chunks
        self.sent = 0
        self.marker_path = marker_path

    def __iter__(self):
        return self

    def __next__(self):
        if self.left <= 0:
            raise StopIteration
        if self.sent:
            time.sleep(self.delay_s)
        self.left -= 1
        self.sent += 1
        return b"x"

    def close(self):
        os.makedirs(os.path.dirname(self.marker_path), exist_ok=True)
        with open(self.marker_path, "w", encoding="utf-8") as handle:
            handle.write(str(self.sent))


def testing_filter_factory(global_conf, **local_conf):
    data_dir = global_conf.get("data_dir") or "./data"
    return lambda app: TestingFilter(app, data_dir)


def stub_app(environ, start_response):
    """Stands in for the images app: 404 for everything."""
    body = json.dumps({"stub": True, "path": environ.get("PATH_INFO")}).encode()
    start_response("404 Not Found", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def stub_app_factory(global_conf, **local_conf):
    return stub_app
