"""api/faults.py: Glance's (WebOb's) error bodies, negotiated by Accept."""

import pytest
import webob

from glance_cache_mw.api import faults


def _render(status, message, accept=None, method="GET", headers=None):
    req = webob.Request.blank("/x", method=method,
                              headers={"Accept": accept} if accept else {})
    return req.get_response(faults.error(status, message, headers))


@pytest.mark.parametrize("accept,content_type", [
    ("*/*", "text/html"), ("application/json", "application/json"),
    (None, "text/plain"), ("text/plain", "text/plain"), ("image/png", "text/plain")])
def test_the_body_follows_accept_as_webob_renders_it(accept, content_type):
    resp = _render(404, "No image found with ID x", accept)
    assert resp.status == "404 Not Found" and resp.content_type == content_type
    assert "No image found with ID x" in resp.text


def test_json_is_the_message_alone():
    resp = _render(405, "The method PUT is not allowed.", "application/json", "PUT",
                   {"Allow": "GET, HEAD"})
    assert resp.json == {"message": "The method PUT is not allowed.",
                         "code": "405 Method Not Allowed", "title": "Method Not Allowed"}
    assert resp.headers["Allow"] == "GET, HEAD"


def test_405_html_says_the_message_not_webobs_template():
    resp = _render(405, "Not here: use GET.", "*/*", "PUT")
    assert "Not here: use GET." in resp.text


@pytest.mark.parametrize("accept", ["*/*", "application/json", None])
def test_a_lone_surrogate_in_a_message_cannot_break_the_rendering(accept):
    resp = _render(400, "bad name '\ud800'", accept)
    assert resp.status_int == 400 and "\\ud800" in resp.text


def test_head_has_no_body():
    resp = _render(404, "gone", "*/*", "HEAD")
    assert resp.status_int == 404 and resp.body == b""
