"""Fixtures that run the real server: ``start_server`` (a factory) and ``api_server``.

    def test_download(start_server):
        server = start_server(flavor="noauth", settings={"image_cache_max_size": 10**6})
        status, headers, body = server.request("GET", "/versions")

    def test_versions(api_server):          # the embedded-default pipeline, flavor noauth
        status, headers, body = http_request(api_server, "GET", "/versions")

Each server runs ``glance-cache-mw-api --config FILE`` in a subprocess on 127.0.0.1 (port 0),
with its data_dir in its own temporary directory, and is stopped with SIGTERM after the test.
"""

import pytest

from tests import dbfixtures
from tests.functional import keystone_server, server as server_helpers


@pytest.fixture
def start_server(tmp_path_factory):
    """Factory: ``start_server(flavor="noauth", settings=None, testing=True, stub_app=False,
    extra_args=(), ini_text=None, origin_bytes_per_s=None)`` starts a server and returns its
    ServerProcess (``.url``, ``.data_dir``, ``.request()``, ``.stdout()``, ``.stderr()``,
    ``.signal()``, ``.wait()``, ``.stop()``). ``testing`` adds the test-only /test/... filter
    (which paces the origin to ``origin_bytes_per_s``), ``stub_app`` replaces the images app,
    ``ini_text`` is written verbatim instead of the etc/ sample."""
    servers = []

    def start(flavor="noauth", settings=None, testing=True, stub_app=False, extra_args=(),
              ini_text=None, origin_bytes_per_s=None):
        workdir = tmp_path_factory.mktemp("server")
        server = server_helpers.ServerProcess(workdir, flavor=flavor, settings=settings,
                                              testing=testing, stub_app=stub_app,
                                              extra_args=extra_args, ini_text=ini_text,
                                              origin_bytes_per_s=origin_bytes_per_s)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api_server(start_server):
    """Base URL of a server with the real noauth pipeline (no test-only filter)."""
    return start_server(flavor="noauth", testing=False).url


@pytest.fixture(scope="session")
def keystone(tmp_path_factory):
    """One real Keystone for the session (its start costs about a minute on 2 busy cores):
    (KeystoneServer, {user: project id}). Users, all with password
    ``keystone_server.TEST_PASSWORD``: ``glance`` (admin of ``service``: auth_token's service
    user), ``alice`` and ``bob`` (member of ``proj-alice`` / ``proj-bob``), ``carol`` (admin
    of ``proj-carol``). Tests only read from it."""
    python = keystone_server.keystone_python()
    if python is None:
        pytest.skip("no Keystone venv: run tools/keystone-venv and set %s to its python "
                    "(tools/test does both)" % keystone_server.PYTHON_ENV)
    server = keystone_server.KeystoneServer(tmp_path_factory.mktemp("keystone"), python)
    server.start()
    try:
        password = keystone_server.TEST_PASSWORD
        server.add_user("glance", password, "service", "admin")
        projects = {name: server.add_user(name, password, "proj-" + name, "member")
                    for name in ("alice", "bob")}
        projects["carol"] = server.add_user("carol", password, "proj-carol", "admin")
        yield server, projects
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A scratch PostgreSQL database (tests/dbfixtures.py) for one module's tests, such as a
    cluster's shared database; dropped after them."""
    db = dbfixtures.ScratchDatabase("postgresql", tmp_path_factory.mktemp("pg"))
    yield db
    db.close()
