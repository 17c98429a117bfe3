"""The ``keystone`` flavor with the real keystonemiddleware auth_token in front of the cache.

No Keystone runs here, so these tests pin what auth_token decides on its own, before it would
ask Keystone, and what it does when Keystone cannot be reached: requests without a valid token
never reach the context filter as an identity, forged identity headers are not trusted, and
every refusal is a 4xx/503 with a reason, never a 500 or a traceback.
"""

import configparser

import pytest

pytest.importorskip("keystonemiddleware",
                    reason="keystonemiddleware comes with the test extra: pip install -e .[test]")

from tests.functional import server as helpers  # noqa: E402

FORGED = {"X-Identity-Status": "Confirmed", "X-Roles": "admin", "X-Project-Id": "p1",
          "X-User-Id": "mallory"}


def _keystone_ini(tmp_path, **authtoken):
    path = helpers.write_config(tmp_path / "base.ini", tmp_path / "data", flavor="keystone",
                                testing=False)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    keystone = "http://127.0.0.1:%d" % helpers.free_port()   # nobody there: Keystone "down"
    options = {"www_authenticate_uri": keystone, "auth_url": keystone, "auth_type": "password",
               "username": "glance", "password": "secret", "project_name": "service",
               "user_domain_name": "Default", "project_domain_name": "Default",
               "http_connect_timeout": "2", "http_request_max_retries": "0"}
    options.update(authtoken)
    for key, value in options.items():
        parser.set("filter:authtoken", key, value)
    text_path = tmp_path / "keystone.ini"
    with open(text_path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    return text_path.read_text(encoding="utf-8"), keystone


@pytest.fixture
def keystone_server(start_server, tmp_path):
    ini_text, keystone = _keystone_ini(tmp_path)
    return start_server(ini_text=ini_text), keystone


def _no_traceback(body):
    assert b"Traceback" not in body and b'File "' not in body


def test_the_health_check_needs_no_token(keystone_server):
    server, _ = keystone_server
    status, _, _ = server.request("GET", "/healthcheck")
    assert status == 200


@pytest.mark.parametrize("headers", [{}, FORGED], ids=["no-token", "forged-identity"])
def test_without_a_token_401_names_keystone(keystone_server, headers):
    server, keystone = keystone_server
    for path in ("/v2/images", "/v2/images/%s/file" % ("a" * 8 + "-aaaa-aaaa-aaaa-" + "a" * 12),
                 "/v2/cache"):
        status, response_headers, body = server.request("GET", path, headers=headers)
        assert status == 401, (path, body)
        assert keystone in response_headers.get("www-authenticate", "")
        _no_traceback(body)


def test_a_token_while_keystone_is_down_is_503_not_500(keystone_server):
    server, _ = keystone_server
    status, _, body = server.request("GET", "/v2/images",
                                     headers={"X-Auth-Token": "some-token", **FORGED})
    assert status == 503, body
    _no_traceback(body)
    assert "Traceback" not in server.stderr()   # logged as a warning, not a crash


def test_delayed_decision_still_ignores_forged_identity_headers(start_server, tmp_path):
    """delay_auth_decision passes token-less requests on, marked Invalid: the headers a
    client forged are replaced, so the context filter refuses them (401, not an admin)."""
    ini_text, _ = _keystone_ini(tmp_path, delay_auth_decision="true")
    server = start_server(ini_text=ini_text)
    status, _, body = server.request("GET", "/v2/cache", headers=FORGED)
    assert status == 401, body
    assert b"Invalid" in body
    _no_traceback(body)
