"""The healthcheck filter (middleware/healthcheck.py), driven with webob Request.blank."""

import pytest

from glance_cache_mw.middleware import healthcheck
from tests.unit.test_middleware_context import RecordingApp, get


def test_healthcheck_answers_ok_without_calling_the_app():
    app = RecordingApp()
    response = get(healthcheck.filter_factory({})(app), path="/healthcheck")
    assert (response.status_int, response.body) == (200, b"OK")
    assert response.content_type == "text/plain"
    assert app.calls == 0


def test_healthcheck_head_has_no_body_and_post_is_405():
    app = RecordingApp()
    middleware = healthcheck.HealthCheck(app)
    head = get(middleware, path="/healthcheck", method="HEAD")
    assert head.status_int == 200 and head.body == b""
    post = get(middleware, path="/healthcheck", method="POST")
    assert post.status_int == 405
    assert "GET" in post.headers["Allow"]
    assert app.calls == 0


@pytest.mark.parametrize("path", ["/", "/healthcheck/", "/healthcheckx", "/v2/images"])
def test_healthcheck_passes_other_paths(path):
    app = RecordingApp()
    response = get(healthcheck.HealthCheck(app), path=path)
    assert response.status_int == 200 and app.calls == 1


def test_healthcheck_disabled_by_file(tmp_path):
    flag = tmp_path / "disabled"
    middleware = healthcheck.filter_factory({}, disable_by_file_path=str(flag))(RecordingApp())
    assert get(middleware, path="/healthcheck").status_int == 200
    flag.write_text("")
    response = get(middleware, path="/healthcheck")
    assert (response.status_int, response.body) == (503, b"DISABLED BY FILE")


def test_healthcheck_custom_path():
    app = RecordingApp()
    middleware = healthcheck.filter_factory({}, path="/health")(app)
    assert get(middleware, path="/health").body == b"OK"
    assert get(middleware, path="/healthcheck").status_int == 200 and app.calls == 1
