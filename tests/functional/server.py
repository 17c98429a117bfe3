"""Run the real glance-cache-mw-api in a subprocess on 127.0.0.1:0, plus test-only Paste parts.

``ServerProcess`` writes an INI derived from etc/glance-cache-mw.ini (data_dir in a temporary
directory, bind_port 0, the chosen flavor and settings), starts the console script, reads the
port from its "listening on" line and stops it with SIGTERM. Use it through the
``start_server`` / ``api_server`` fixtures of tests/functional/conftest.py. How a process is
started, waited for and stopped lives in tests/functional/serving.py (shared with the download
benchmark in tools/); the names tests use from there are importable from here too.

Test-only Paste parts (imported by the server subprocess, which gets the repository root on
PYTHONPATH): ``testing_filter_factory`` answers a few ``/test/...`` paths (slow bodies, the
worker's pid, a fake cache status) and passes everything else; ``stub_app_factory`` stands in
for the images app where a test does not need it.
"""

import http.client
import itertools
import json
import os
import re
import signal
import sys
import time
import urllib.parse

import pytest
import webob

from tests.functional import serving
from tests.functional.serving import free_port, http_request, subprocess_env

SAMPLE_CONFIG = serving.SAMPLE_CONFIG   # tests read it from here

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
_ORIGIN_FILE_RE = re.compile(r"^/v2(?:\.\d+)?/images/([^/]+)/file/?$")


def api_command():
    """The console script next to this interpreter (else ``python -m``)."""
    script = serving.console_script("glance-cache-mw-api")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "glance_cache_mw.cmd.api"]


def write_config(path, data_dir, flavor="noauth", settings=None, testing=True, stub_app=False,
                 origin_bytes_per_s=None, origin_stall_s=None):
    """Write a server INI based on the etc/ sample; return ``path``.

    ``testing`` inserts the test-only filter just before the app of every pipeline (it logs
    every origin read of image data, paced to ``origin_bytes_per_s`` when given, the first
    of each image stalled ``origin_stall_s`` after its first chunk when given);
    ``stub_app`` replaces the images app by :func:`stub_app_factory`.
    """
    values = {"data_dir": str(data_dir), "bind_host": "127.0.0.1", "bind_port": "0",
              "workers": "1", "flavor": flavor}
    values.update(settings or {})
    parser = serving.read_config(values)
    if testing:
        parser["filter:testing"] = {
            "paste.filter_factory": "tests.functional.server:testing_filter_factory"}
        if origin_bytes_per_s:
            parser["filter:testing"]["origin_bytes_per_s"] = str(origin_bytes_per_s)
        if origin_stall_s:
            parser["filter:testing"]["origin_stall_s"] = str(origin_stall_s)
        for section in parser.sections():
            if section.startswith("pipeline:"):
                names = parser.get(section, "pipeline").split()
                parser.set(section, "pipeline", " ".join(names[:-1] + ["testing", names[-1]]))
    if stub_app:
        parser.remove_section("app:images")
        parser["app:images"] = {"paste.app_factory": "tests.functional.server:stub_app_factory"}
    return serving.write_parser(parser, path)


class ServerProcess:
    """One ``glance-cache-mw-api --config FILE`` subprocess; ``url`` once started."""

    def __init__(self, workdir, flavor="noauth", settings=None, testing=True, stub_app=False,
                 extra_args=(), ini_text=None, origin_bytes_per_s=None, origin_stall_s=None,
                 ca_file=None):
        """``ca_file``: the CA that verifies the server's certificate when it serves https
        (cert_file and key_file in ``settings``)."""
        self.workdir = str(workdir)
        self.ca_file = ca_file
        os.makedirs(self.workdir, exist_ok=True)
        self.data_dir = os.path.join(self.workdir, "data")
        self.config_path = os.path.join(self.workdir, "glance-cache-mw.ini")
        if ini_text is None:
            write_config(self.config_path, self.data_dir, flavor, settings, testing, stub_app,
                         origin_bytes_per_s, origin_stall_s)
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
        self.process = serving.start_process(
            api_command() + ["--config", self.config_path] + self.extra_args, self.workdir,
            subprocess_env(), self.stdout_path, self.stderr_path)
        self.url = serving.wait_until(lambda: serving.listening_url(self.stdout_path),
                                      self.process, timeout_s, interval_s=0.05)
        if self.url:
            return self
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
        return serving.stop_process(self.process, timeout_s)

    def request(self, method, path, body=None, headers=None, timeout_s=30):
        """One request on a fresh connection; (status, headers dict, body bytes)."""
        return http_request(self.url, method, path, body, headers, timeout_s,
                            ca_file=self.ca_file)


def fetch(url, path, timeout_s=60, headers=None, ca_file=None):
    """GET (with ``headers``) on a keep-alive HTTP/1.1 connection: (status, X-Image-Cache,
    body, how it ended): "complete", "cut" (the server closed the connection short of
    Content-Length) or "kept open" (it waited for bytes that never came). An https ``url``
    is verified against ``ca_file``."""
    conn = serving.connection(url, timeout_s, ca_file)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        kind = response.getheader("X-Image-Cache")
        try:
            return response.status, kind, response.read(), "complete"
        except http.client.IncompleteRead as err:
            return response.status, kind, err.partial, "cut"
        except TimeoutError:
            return response.status, kind, None, "kept open"
    finally:
        conn.close()


def wait_for(predicate, timeout_s=15, what="condition"):
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def wsgi_config(tmp_path, testing=False, settings=None, origin_stall_s=None):
    """An INI (by default without the test filter; ``settings`` in [DEFAULT]) with a
    migrated database for glance_cache_mw.wsgi under another server: (its path, the
    environment naming it in GLANCE_CACHE_MW_CONFIG)."""
    path = write_config(tmp_path / "wsgi.ini", tmp_path / "data", settings=settings,
                        testing=testing, origin_stall_s=origin_stall_s)
    env = subprocess_env(GLANCE_CACHE_MW_CONFIG=str(path))
    serving.sync_database(path, env=env, timeout_s=60)
    return path, env


def start_wsgi_server(argv, url, env, log_path, timeout_s=60):
    """Start ``argv`` (gunicorn, uWSGI, ...) and return its process once ``url`` answers
    /healthcheck; its output goes to ``log_path``, quoted if it dies on the way."""
    process = serving.start_process(argv, os.path.dirname(log_path), env, log_path)
    if serving.wait_until(lambda: serving.status_of(url) == 200, process, timeout_s):
        return process
    process.kill()
    process.wait()
    with open(log_path, errors="replace") as handle:
        raise AssertionError("%s did not answer on %s:\n%s"
                             % (os.path.basename(argv[0]), url, handle.read()))


def start_gunicorn(tmp_path, *args, testing=False, settings=None, origin_stall_s=None):
    """gunicorn (from the test extra) serving glance_cache_mw.wsgi:application with ``args``
    on a fresh config (``testing``: with the test-only filter; ``settings`` in [DEFAULT]):
    (url, process)."""
    gunicorn = serving.console_script("gunicorn")
    if not os.path.exists(gunicorn):
        pytest.skip("gunicorn is not installed (it comes with the test extra)")
    _, env = wsgi_config(tmp_path, testing=testing, settings=settings,
                         origin_stall_s=origin_stall_s)
    url = "http://127.0.0.1:%d" % free_port()
    process = start_wsgi_server([gunicorn, "-b", url[len("http://"):], *args,
                                 "glance_cache_mw.wsgi:application"],
                                url, env, str(tmp_path / "gunicorn.log"))
    return url, process


UWSGI_APP_READY = "WSGI app 0 (mountpoint='') ready"
UWSGI_APP_FAILED = "unable to load app"


def uwsgi_command(bind, config_path, processes=2, threads=8):
    """The uWSGI command line of docs/deployment.md serving glance_cache_mw.wsgi:application
    from ``config_path`` on ``bind`` (host:port) with ``processes`` x ``threads``; skips the
    test when uWSGI (from the test extra) is not installed."""
    uwsgi = serving.console_script("uwsgi")
    if not os.path.exists(uwsgi):
        pytest.skip("uwsgi is not installed (it comes with the test extra)")
    return [uwsgi, "--http-socket", bind, "--master", "--processes", str(processes),
            "--threads", str(threads), "--lazy-apps", "--die-on-term", "--harakiri", "0",
            "--need-app", "--virtualenv", sys.prefix,
            "--env", "GLANCE_CACHE_MW_CONFIG=%s" % config_path,
            "--module", "glance_cache_mw.wsgi:application"]


def wait_for_uwsgi_workers(process, log_path, processes, timeout_s=60):
    """Wait until each of the ``processes`` workers of uWSGI ``process`` (logging to
    ``log_path``) has loaded the app. With --lazy-apps each worker builds the app itself, at
    the same moment (in CI one of them once failed on the fresh cache.db, see
    tests/functional/test_db_wal.py): one worker answering is not enough, and a worker that
    cannot load the app fails at once. On failure uWSGI is killed and the log quoted."""
    def loaded():
        with open(log_path, errors="replace") as handle:
            log = handle.read()
        if UWSGI_APP_FAILED in log:
            raise AssertionError("a uWSGI worker could not load the app")
        return log.count(UWSGI_APP_READY) == processes
    try:
        wait_for(loaded, timeout_s=timeout_s, what="every uWSGI worker to load the app")
    except AssertionError as err:
        process.kill()
        process.wait()
        with open(log_path, errors="replace") as handle:
            raise AssertionError("%s:\n%s" % (err, handle.read())) from None


def start_uwsgi(tmp_path, testing=False, settings=None, origin_stall_s=None, processes=2):
    """uWSGI (from the test extra) serving glance_cache_mw.wsgi:application as docs/deployment.md
    runs it, on a fresh config: (url, process, log_path) once every worker has loaded the app."""
    path, env = wsgi_config(tmp_path, testing=testing, settings=settings,
                            origin_stall_s=origin_stall_s)
    url = "http://127.0.0.1:%d" % free_port()
    log_path = tmp_path / "uwsgi.log"
    process = start_wsgi_server(uwsgi_command(url[len("http://"):], path, processes), url, env,
                                str(log_path))
    wait_for_uwsgi_workers(process, log_path, processes)
    return url, process, log_path

# --- test-only Paste parts (run inside the server subprocess) ---------------------------------

class TestingFilter:
    """Answers ``/test/slow``, ``/test/pid``, ``/test/cache`` and ``/test/raise[-in-body]``
    (an app error); passes everything else.

    ``/test/slow?seconds=S&chunks=N&name=X`` streams N bytes over S seconds and, when its body
    is closed, writes ``{data_dir}/closed-X`` with the number of bytes it yielded.

    Right before the images app, it is where the cache's origin reads pass: each ``GET
    .../images/{id}/file`` is logged as a line ``{id} {Range or -}`` in
    ``{data_dir}/origin-reads``, and its body paced to ``origin_bytes_per_s`` if set. While
    ``{data_dir}/origin-delay`` exists (it holds seconds), each chunk of such a body also
    waits that long: a slow origin a test can switch on and off, so that concurrent downloads
    meet a fill in progress. With ``origin_stall_s`` (an option of the filter's section) the
    first whole-body read of each image stalls that long after its first chunk (a hung store
    or peer; see StallOnce).
    """

    def __init__(self, app, data_dir, origin_bytes_per_s=None, origin_stall_s=None):
        self.app = app
        self.data_dir = data_dir
        self.origin_bytes_per_s = origin_bytes_per_s
        self.origin_stall_s = origin_stall_s

    def __call__(self, environ, start_response):
        request = webob.Request(environ)
        match = _ORIGIN_FILE_RE.search(request.path_info)
        if match and request.method == "GET":
            os.makedirs(self.data_dir, exist_ok=True)
            with open(os.path.join(self.data_dir, "origin-reads"), "a",
                      encoding="utf-8") as log:
                log.write("%s %s\n" % (match.group(1), request.headers.get("Range", "-")))
            body = self.app(environ, start_response)
            if self.origin_stall_s and "Range" not in request.headers:
                body = StallOnce.first_of(body, self.data_dir, match.group(1),
                                          self.origin_stall_s)
            if self.origin_bytes_per_s:
                body = serving.PacedBody(body, 1.0 / self.origin_bytes_per_s)
            delay_s = _origin_delay_s(self.data_dir)
            return DelayedBody(body, delay_s) if delay_s else body
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
        elif request.path_info == "/test/pid":
            response = webob.Response(json_body={"pid": os.getpid()})
        elif request.path_info == "/test/cache":
            response = webob.Response(body=b"cached", content_type="text/plain")
            response.headers["X-Image-Cache"] = request.GET.get("status", "HIT")
        else:
            return self.app(environ, start_response)
        return response(environ, start_response)


def _origin_delay_s(data_dir):
    """The seconds in ``{data_dir}/origin-delay``, or None while it does not exist."""
    try:
        with open(os.path.join(data_dir, "origin-delay"), encoding="utf-8") as handle:
            return float(handle.read())
    except FileNotFoundError:
        return None


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


class SlowBody(serving.PacedBody):
    """``chunks`` single bytes, the first at once (the client then knows the request is in
    flight), the others spread over ``seconds``; close() records how many were yielded."""

    def __init__(self, seconds, chunks, marker_path):
        super().__init__(itertools.repeat(b"x", chunks), seconds / max(chunks - 1, 1))
        self.marker_path = marker_path

    def close(self):
        super().close()
        os.makedirs(os.path.dirname(self.marker_path), exist_ok=True)
        # Written aside and renamed: a test waiting for the marker never reads it empty.
        with open(self.marker_path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(str(self.sent))
        os.replace(self.marker_path + ".tmp", self.marker_path)


class StallOnce:
    """The origin's body, stalled for ``seconds`` after its first chunk (sleeping: green
    under eventlet, a blocked OS thread elsewhere). ``{data_dir}/origin-resumed-{id}`` is
    written when the stall ends and ``{data_dir}/origin-closed-{id}`` when it is closed."""

    def __init__(self, body, data_dir, image_id, seconds):
        self._body = body
        self._chunks = iter(body)
        self._marker = os.path.join(data_dir, "origin-%s-" + image_id)
        self._seconds = seconds
        self._count = 0

    @classmethod
    def first_of(cls, body, data_dir, image_id, seconds):
        """``body`` stalled if it is the first read of ``image_id`` (in any worker)."""
        try:
            os.close(os.open(os.path.join(data_dir, "origin-stalled-" + image_id),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return body
        return cls(body, data_dir, image_id, seconds)

    def __iter__(self):
        return self

    def __next__(self):
        if self._count == 1:
            time.sleep(self._seconds)
            self._mark("resumed")
        self._count += 1
        return next(self._chunks)

    def _mark(self, what):
        with open(self._marker % what, "w", encoding="utf-8"):
            pass

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._mark("closed")


def upload_image(url, data, name="image", timeout_s=120, ca_file=None):
    """A new active raw image holding ``data`` on the server at ``url`` (https: verified
    against ``ca_file``): its id."""
    status, _, body = http_request(
        url, "POST", "/v2/images", json.dumps({"name": name, "disk_format": "raw",
                                               "container_format": "bare"}).encode(),
        {"Content-Type": "application/json"}, ca_file=ca_file)
    assert status == 201, body
    image_id = json.loads(body)["id"]
    status, _, body = http_request(url, "PUT", "/v2/images/%s/file" % image_id, data,
                                   {"Content-Type": "application/octet-stream"},
                                   timeout_s=timeout_s, ca_file=ca_file)
    assert status == 204, body
    return image_id


def origin_reads(data_dir, image_id):
    """The Range headers (``-`` for none) of the origin reads of ``image_id`` so far."""
    try:
        with open(os.path.join(data_dir, "origin-reads"), encoding="utf-8") as log:
            lines = log.read().splitlines()
    except FileNotFoundError:
        return []
    return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == image_id]


class _TeardownMarker:
    """Writes a line if the interpreter's teardown collects it: a server process that ends
    with os._exit (cmd/api.py exit_now) never does, one that returns through the interpreter's
    shutdown does."""

    def __del__(self):
        os.write(2, b"testing filter: interpreter teardown\n")


def testing_filter_factory(global_conf, **local_conf):
    global _TEARDOWN_MARKER   # pylint: disable=global-statement
    _TEARDOWN_MARKER = _TeardownMarker()
    data_dir = global_conf.get("data_dir") or "./data"
    rate = local_conf.get("origin_bytes_per_s")
    stall_s = local_conf.get("origin_stall_s")
    return lambda app: TestingFilter(app, data_dir, float(rate) if rate else None,
                                     float(stall_s) if stall_s else None)


def stub_app(environ, start_response):
    """Stands in for the images app: 404 for everything."""
    body = json.dumps({"stub": True, "path": environ.get("PATH_INFO")}).encode()
    start_response("404 Not Found", [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def stub_app_factory(global_conf, **local_conf):
    return stub_app
