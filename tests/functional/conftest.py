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

from tests.functional import server as server_helpers


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
