"""glance-cache-mw-api and glance_cache_mw.wsgi: real servers in subprocesses, real HTTP.

Also the Paste side in-process: the etc/ sample's settings and flavors, loaded with loadapp.
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

import pytest
import webob

from glance_cache_mw import config, exception, wsgi
from glance_cache_mw.db import engine as db_engine
from tests.functional import server as helpers


def access_lines(server, fragment):
    return [line for line in server.stderr().splitlines()
            if "glance_cache_mw.access" in line and fragment in line]


wait_for = helpers.wait_for


def is_alive(pid):
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def is_port_free(port):
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- the built-in eventlet server ----------------------------------------------------------

def test_healthcheck_and_versions_through_the_real_pipeline(start_server):
    server = start_server(testing=False)
    assert server.request("GET", "/healthcheck")[::2] == (200, b"OK")
    status, headers, body = server.request("GET", "/versions")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert any(v["status"] == "CURRENT" for v in json.loads(body)["versions"])
    wait_for(lambda: access_lines(server, '"GET /versions" 200'), what="access log")
    assert server.stop() == 0


def test_access_log_has_the_cache_status_of_real_downloads(start_server):
    server = start_server(testing=False)
    status, _, body = server.request(
        "POST", "/v2/images", body=json.dumps(
            {"name": "log", "disk_format": "raw", "container_format": "bare"}),
        headers={"Content-Type": "application/json"})
    assert status == 201, body
    image_id = json.loads(body)["id"]
    path = "/v2/images/%s/file" % image_id
    assert server.request("PUT", path, body=b"0123456789",
                          headers={"Content-Type": "application/octet-stream"})[0] == 204
    assert server.request("GET", path)[1].get("x-image-cache") == "MISS"
    wait_for(lambda: access_lines(server, "cache=MISS"), what="fill")
    assert server.request("GET", path)[1].get("x-image-cache") == "HIT"
    wait_for(lambda: len(access_lines(server, '"GET %s" 200 10' % path)) == 2, what="log")
    lines = access_lines(server, '"GET %s" 200 10' % path)
    assert lines[0].endswith("cache=MISS") and lines[1].endswith("cache=HIT")
    wait_for(lambda: access_lines(server, '"PUT %s" 204 0' % path), what="log")
    assert access_lines(server, '"PUT %s" 204 0' % path)[0].endswith("cache=-")


def test_workers_share_the_database_and_the_cache(start_server):
    server = start_server(testing=False, settings={"workers": 3})
    status, _, body = server.request(
        "POST", "/v2/images", body=json.dumps(
            {"name": "w", "disk_format": "raw", "container_format": "bare"}),
        headers={"Content-Type": "application/json"})
    path = "/v2/images/%s/file" % json.loads(body)["id"]
    data = os.urandom(100000)
    assert server.request("PUT", path, body=data,
                          headers={"Content-Type": "application/octet-stream"})[0] == 204
    first = server.request("GET", path)
    assert (first[1]["x-image-cache"], first[2]) == ("MISS", data)
    # The fill is committed before the access log line is written (at close()).
    wait_for(lambda: access_lines(server, "cache=MISS"), what="fill")
    results = [server.request("GET", path) for _ in range(5)]
    assert all(result[2] == data for result in results)
    assert [result[1]["x-image-cache"] for result in results] == ["HIT"] * 5
    assert server.stop() == 0


def test_access_log_line_format(start_server):
    server = start_server(stub_app=True)
    assert server.request("GET", "/test/cache?status=COALESCED")[0] == 200
    wait_for(lambda: access_lines(server, "/test/cache"), what="log")
    line = access_lines(server, "/test/cache")[0]
    assert re.search(r'127\.0\.0\.1 "GET /test/cache\?status=COALESCED" 200 6 '
                     r'\d+\.\d{3}s cache=COALESCED$', line), line


def test_listening_line_names_the_actual_port(start_server):
    server = start_server(stub_app=True)
    assert server.port not in (0, None)
    assert "listening on http://127.0.0.1:%d" % server.port in server.stdout()


def test_sigterm_lets_the_in_flight_request_finish_then_exits_0(start_server):
    server = start_server(stub_app=True)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/test/slow?seconds=2&chunks=10")
        response = conn.getresponse()
        first = response.read(1)          # the request is now in flight
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        wait_for(lambda: "no longer accepting" in server.stderr(), what="stop")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        rest = response.read()
        assert time.monotonic() - signalled > 1   # the body really was still streaming
    finally:
        conn.close()
    assert (response.status, first + rest) == (200, b"x" * 10)
    assert server.wait(timeout_s=15) == 0
    assert access_lines(server, '"GET /test/slow?seconds=2&chunks=10" 200 10')
    assert "all requests done" in server.stderr()


def test_graceful_timeout_bounds_the_drain(start_server):
    server = start_server(stub_app=True, extra_args=["--graceful-timeout", "0.5"])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/test/slow?seconds=60&chunks=100")
        response = conn.getresponse()
        response.read(1)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout_s=15) == 0
        assert time.monotonic() - started < 10
    finally:
        conn.close()
    assert "still running after 0.5 s" in server.stderr()


def test_two_workers_serve_and_stop_cleanly(start_server):
    server = start_server(stub_app=True, settings={"workers": 2})
    assert "2 workers" in server.stdout()
    pids = {json.loads(server.request("GET", "/test/pid")[2])["pid"] for _ in range(20)}
    assert pids and server.process.pid not in pids
    assert server.request("GET", "/healthcheck")[::2] == (200, b"OK")
    assert server.stop() == 0
    assert not any(is_alive(pid) for pid in pids)


def test_workers_drain_in_flight_requests_and_dead_workers_are_replaced(start_server):
    server = start_server(stub_app=True, settings={"workers": 2})
    victim = json.loads(server.request("GET", "/test/pid")[2])["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "worker %d exited" % victim in server.stderr(), what="respawn")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/test/slow?seconds=2&chunks=5")
        response = conn.getresponse()
        first = response.read(1)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)            # to the parent, which forwards it
        rest = response.read()
        assert time.monotonic() - signalled > 1
    finally:
        conn.close()
    assert (response.status, first + rest) == (200, b"x" * 5)
    assert server.wait(timeout_s=20) == 0
    assert server.stderr().count("all requests done") == 2


def _is_refused_or_answered(port):
    """True if a new connection is refused, or answered (or reset) within 2 s; False if
    the kernel accepted it for nobody (the request hangs)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return True
    try:
        sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(100) is not None
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


def test_with_workers_a_stop_refuses_new_connections_during_the_drain(start_server):
    server = start_server(stub_app=True, settings={"workers": 2})
    wait_for(lambda: len({json.loads(server.request("GET", "/test/pid")[2])["pid"]
                          for _ in range(10)}) == 2, timeout_s=30, what="both workers serving")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", "/test/slow?seconds=40&chunks=40")
        response = conn.getresponse()
        response.read(1)                          # in flight: the drain lasts 40 s
        server.signal(signal.SIGTERM)
        # (A worker still starting when the signal comes simply ends: it served nothing.)
        wait_for(lambda: "no longer accepting" in server.stderr(), timeout_s=15,
                 what="the busy worker stopping")
        wait_for(lambda: _is_refused_or_answered(server.port), timeout_s=10,
                 what="new connections refused (not queued for nobody)")
        assert server.process.poll() is None      # still draining the slow request
    finally:
        conn.close()                              # the drain ends with its client
    assert server.wait(timeout_s=30) == 0


def test_a_stop_skips_the_interpreter_teardown(start_server):
    # With nothing in flight the process ends as soon as it is done: no seconds spent
    # collecting every module's objects after "all requests done".
    server = start_server(stub_app=True)
    assert server.request("GET", "/healthcheck")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait(timeout_s=30) == 0
    stderr = server.stderr()
    assert "all requests done, exiting" in stderr
    assert "interpreter teardown" not in stderr


def run_api(*args, cwd, timeout_s=60):
    return subprocess.run(helpers.api_command() + list(args), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout_s, env=helpers.subprocess_env())


@pytest.mark.parametrize("settings, expected", [
    ({"bind_port": "abc"}, "bind_port='abc' is not an integer"),
    ({"workers": "-1"}, "workers='-1' must be at least 0"),
    ({"debug": "maybe"}, "debug='maybe' is not a boolean"),
    ({"image_cache_max_size": "10G"}, "image_cache_max_size='10G' is not an integer"),
    ({"flavor": "bogus"}, "unknown flavor bogus; known: context, keystone, noauth"),
    ({"bind_host": "256.1.1.1"}, "cannot listen on bind_host='256.1.1.1'"),
    ({"bind_port": "70000"}, "bind_port='70000' must be at most 65535"),
    ({"bind_port": ""}, "bind_port is empty"),
    ({"image_cache_max_sise": "1000"},
     "unknown key image_cache_max_sise in [DEFAULT] of"),
    ({"auth_url": "http://keystone:5000"}, "auth_url in [DEFAULT] of"),
    ({"image_cache_driver": "sqlight"},
     "image_cache_driver='sqlight' is not one of centralized_db, sqlite, xattr"),
    ({"image_cache_driver": "centralized_db"},
     "image_cache_driver=centralized_db needs worker_self_reference_url"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, settings, expected):
    path = helpers.write_config(tmp_path / "bad.ini", tmp_path / "data", testing=False,
                                settings=settings)
    result = run_api("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout
    # Found before anything is written: no database, no cache directory.
    assert not (tmp_path / "data").exists() or settings.get("bind_host")


def test_an_unknown_key_names_the_nearest_known_one(tmp_path):
    path = helpers.write_config(tmp_path / "bad.ini", tmp_path / "data", testing=False,
                                settings={"image_cache_max_sise": "1000"})
    result = run_api("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean image_cache_max_size?" in result.stderr


def test_keys_of_paste_sections_stay_allowed_there(start_server):
    # keystonemiddleware's keys in [filter:authtoken], the health check's in its section,
    # the images app's limits in [DEFAULT] (its factory reads global_conf) and interpolation
    # variables are all fine.
    server = start_server(testing=False, settings={
        "api_limit_max": "500", "base": "%(here)s", "image_cache_dir": "%(base)s/c"})
    assert server.request("GET", "/healthcheck")[0] == 200
    assert os.path.isdir(os.path.join(server.workdir, "c"))


def test_a_directory_as_config_says_so(tmp_path):
    result = run_api("--config", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "is a directory" in result.stderr and "Traceback" not in result.stderr


def _without_keystonemiddleware(tmp_path):
    """A PYTHONPATH entry whose keystonemiddleware fails to import, as when not installed."""
    shadow = tmp_path / "shadow" / "keystonemiddleware"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('No module named keystonemiddleware (shadowed by the test)')\n")
    return str(shadow.parent)


def test_keystone_flavor_without_keystonemiddleware_names_the_extra(tmp_path):
    path = helpers.write_config(tmp_path / "ks.ini", tmp_path / "data", flavor="keystone",
                                testing=False)
    env = helpers.subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([_without_keystonemiddleware(tmp_path),
                                         env["PYTHONPATH"]])
    result = subprocess.run(helpers.api_command() + ["--config", str(path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "pip install glance_cache_mw[keystone]" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exit_2(tmp_path):
    result = run_api("--config", str(tmp_path / "nope.ini"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.ini does not exist" in result.stderr


def test_embedded_defaults_without_any_config(tmp_path):
    if not is_port_free(9292):
        pytest.skip("port 9292 is in use")
    stdout, stderr = tmp_path / "out", tmp_path / "err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(helpers.api_command(), cwd=tmp_path, stdout=out, stderr=err,
                                   env=helpers.subprocess_env())
    try:
        wait_for(lambda: "listening on" in stdout.read_text() or process.poll() is not None,
                 timeout_s=30, what="start")
        banner = stdout.read_text()
        assert "listening on http://127.0.0.1:9292" in banner, stderr.read_text()
        assert "glance --os-image-url http://127.0.0.1:9292" in banner
        assert "curl -X PUT http://127.0.0.1:9292/v2/images/IMAGE_ID/file" in banner
        assert "embedded defaults" in banner
        assert (tmp_path / "data" / "glance-cache-mw.sqlite").exists()
        status, _, body = helpers.http_request("http://127.0.0.1:9292", "GET", "/v2/images")
        assert (status, json.loads(body)["images"]) == (200, [])
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


# --- gunicorn --------------------------------------------------------------------------------

def test_gunicorn_serves_the_wsgi_application(tmp_path):
    url, process = helpers.start_gunicorn(tmp_path, "--workers", "2")
    try:
        assert helpers.http_request(url, "GET", "/healthcheck")[::2] == (200, b"OK")
        assert helpers.http_request(url, "GET", "/versions")[0] == 200
        status, _, body = helpers.http_request(url, "GET", "/v2/images")
        assert (status, json.loads(body)["images"]) == (200, [])
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


# --- Paste, in-process -----------------------------------------------------------------------

@pytest.fixture
def clean_engine():
    yield
    db_engine.dispose()


def _sample_defaults():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(helpers.SAMPLE_CONFIG)
    return parser


def test_sample_ini_documents_every_setting_with_its_default():
    with open(helpers.SAMPLE_CONFIG, encoding="utf-8") as handle:
        text = handle.read()
    for setting in config.SETTINGS:
        assert re.search(r"^#%s =" % setting.name, text, re.M), setting.name
        if not callable(setting.default):
            value = setting.default
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif value is None:
                value = ""
            assert re.search(r"^#%s = ?%s$" % (setting.name, re.escape(str(value))), text,
                             re.M), setting.name
    # Everything is commented out, so the sample means "the embedded defaults".
    assert dict(_sample_defaults().defaults()) == {}
    assert config.Config.from_file(helpers.SAMPLE_CONFIG).as_dict() == \
        config.Config.from_mapping({}).as_dict()


def test_flavor_precedence(tmp_path):
    path = tmp_path / "f.ini"
    path.write_text("[DEFAULT]\nflavor = context\n")
    assert wsgi.read_flavor(str(path)) == "context"
    path.write_text("[DEFAULT]\nflavor = context\n[paste_deploy]\nflavor = keystone\n")
    assert wsgi.read_flavor(str(path)) == "keystone"
    path.write_text("[DEFAULT]\n")
    assert wsgi.read_flavor(str(path)) == "noauth"


def test_importing_wsgi_builds_nothing():
    assert wsgi._application is None
    assert "application" not in vars(wsgi)


@pytest.mark.usefixtures("clean_engine")
def test_context_flavor_needs_confirmed_identity_but_not_for_healthcheck(tmp_path):
    path = helpers.write_config(tmp_path / "c.ini", tmp_path / "data", flavor="context",
                                testing=False)
    app = wsgi.load_app(str(path))
    assert webob.Request.blank("/healthcheck").get_response(app).body == b"OK"
    refused = webob.Request.blank("/versions").get_response(app)
    assert refused.status_int == 401 and "X-Identity-Status" in refused.text
    allowed = webob.Request.blank("/versions", headers={
        "X-Identity-Status": "Confirmed", "X-Project-Id": "p1"}).get_response(app)
    assert allowed.status_int == 200 and "versions" in allowed.json


@pytest.mark.usefixtures("clean_engine")
def test_the_sample_as_it_is_serves_the_noauth_flavor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                   # its data_dir is ./data
    assert wsgi.read_flavor(helpers.SAMPLE_CONFIG) == "noauth"
    app = wsgi.load_app(helpers.SAMPLE_CONFIG)    # noauth: no identity headers needed
    response = webob.Request.blank("/versions").get_response(app)
    assert response.status_int == 200 and response.json["versions"]


def test_keystone_flavor_in_process_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keystonemiddleware", None)   # import fails: not there
    path = helpers.write_config(tmp_path / "k.ini", tmp_path / "data", flavor="keystone",
                                testing=False)
    with pytest.raises(exception.InvalidConfiguration, match=r"glance_cache_mw\[keystone\]"):
        wsgi.load_app(str(path))


def test_broken_pipeline_names_the_file(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text("[composite:main]\nuse = call:glance_cache_mw.wsgi:flavor_factory\n"
                    "noauth = missing-pipeline\n")
    with pytest.raises(exception.InvalidConfiguration, match="broken.ini"):
        wsgi.load_app(str(path))


def test_embedded_pipeline_matches_the_sample_noauth_pipeline():
    parser = _sample_defaults()
    names = parser.get("pipeline:glance-cache-mw-noauth", "pipeline").split()
    uses = [parser.get(("app:" if name == names[-1] else "filter:") + name, "use")
            for name in names]
    assert uses == ["egg:glance_cache_mw#" + name for name in wsgi.EMBEDDED_PIPELINE]


@pytest.mark.usefixtures("clean_engine")
def test_embedded_pipeline_without_the_sample_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = wsgi.load_embedded_app(sample_path=str(tmp_path / "not-installed.ini"))
    assert webob.Request.blank("/healthcheck").get_response(app).body == b"OK"
    response = webob.Request.blank("/versions").get_response(app)
    assert response.status_int == 200 and response.json["versions"]
    assert (tmp_path / "data").is_dir()


def test_settings_only_config_gets_the_embedded_pipeline(start_server, tmp_path):
    server = start_server(ini_text="[DEFAULT]\ndata_dir = %s\nbind_port = 0\n" % tmp_path)
    status, _, body = server.request("GET", "/v2/images")
    assert (status, json.loads(body)["images"]) == (200, [])
    assert (tmp_path / "glance-cache-mw.sqlite").exists()
    assert "embedded pipeline: healthcheck metrics peer noauth" in server.stderr()


def test_settings_only_config_with_another_flavor_is_an_error(tmp_path):
    path = tmp_path / "s.ini"
    path.write_text("[DEFAULT]\ndata_dir = %s\nflavor = context\n" % tmp_path)
    result = run_api("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "flavor='context' needs the Paste sections" in result.stderr


def test_settings_only_config_with_a_misspelled_flavor_says_unknown(tmp_path):
    path = tmp_path / "s.ini"
    path.write_text("[DEFAULT]\ndata_dir = %s\nflavor = noath\n" % (tmp_path / "data"))
    result = run_api("--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown flavor noath; known: context, keystone, noauth" in result.stderr
    assert not (tmp_path / "data").exists()


def test_unreachable_database_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "db.ini"
    path.write_text("[DEFAULT]\nsql_connection = postgresql://u:secret@127.0.0.1:1/db\n")
    result = run_api("--config", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: database postgresql"), errors
    assert "secret" not in result.stderr


def test_client_disconnect_closes_the_body_and_is_logged(start_server):
    server = start_server(stub_app=True)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/test/slow?seconds=20&chunks=200&name=gone")
        response = conn.getresponse()
        assert response.read(1) == b"x"
    finally:
        conn.close()                      # the client goes away mid-body
    marker = os.path.join(server.data_dir, "closed-gone")
    wait_for(lambda: os.path.exists(marker), timeout_s=15, what="close() of the body")
    with open(marker) as handle:
        assert 1 <= int(handle.read()) < 200
    wait_for(lambda: access_lines(server, "name=gone"), what="access log")
    line = access_lines(server, "name=gone")[0]
    sent = int(re.search(r'" 200 (\d+) ', line).group(1))
    assert 1 <= sent < 200


def test_workers_stop_when_the_parent_is_killed(start_server):
    server = start_server(stub_app=True, settings={"workers": 2})
    pids = {json.loads(server.request("GET", "/test/pid")[2])["pid"] for _ in range(10)}
    server.signal(signal.SIGKILL)
    server.wait()
    wait_for(lambda: not any(is_alive(pid) for pid in pids), timeout_s=15,
             what="orphaned workers to stop")
    assert "the parent process is gone" in server.stderr()


@pytest.mark.parametrize("path", ["/test/raise", "/test/raise?after_start=1"])
def test_an_unhandled_error_is_a_500_with_a_reason_and_a_logged_traceback(start_server, path):
    server = start_server()
    status, headers, body = server.request("GET", path, headers={"Accept": "application/json"})
    assert status == 500
    assert json.loads(body)["message"].startswith("The server could not complete the request")
    assert b"Traceback" not in body and b"ZeroDivisionError" not in body
    wait_for(lambda: "ZeroDivisionError: raised by /test/raise" in server.stderr())
    log = server.stderr()
    assert "unhandled error in GET /test/raise" in log and "Traceback" in log
    assert server.request("GET", "/versions")[0] == 200   # the worker lives on


def test_an_error_in_a_body_is_logged_with_its_traceback(start_server):
    server = start_server()
    status, _, body = server.request("GET", "/test/raise-in-body")
    assert status == 500 and b"Traceback" not in body
    wait_for(lambda: "LookupError: raised by /test/raise-in-body" in
                            server.stderr())
    assert "unhandled error in the body of GET /test/raise-in-body" in server.stderr()
