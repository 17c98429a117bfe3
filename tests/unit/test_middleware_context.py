"""The context, noauth and authtoken filters (middleware/context.py), driven with webob
Request.blank."""

import json
import sys

import pytest
import webob
from wsgiref.validate import validator

from glance_cache_mw import exception
from glance_cache_mw.middleware import context as context_mw


class RecordingApp:
    """The wrapped app: remembers the context it saw and answers 200 with it as JSON."""

    def __init__(self):
        self.calls = 0
        self.context = None

    def __call__(self, environ, start_response):
        self.calls += 1
        self.context = environ.get("glance.context")
        body = json.dumps(self.context.to_dict() if self.context else None).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def get(middleware, path="/v2/images", headers=None, method="GET"):
    request = webob.Request.blank(path, headers=headers or {}, method=method)
    response = request.get_response(validator(middleware))
    response.body  # closes the app iterator (the validator checks that it is closed)
    return response


CONFIRMED = {"X-Identity-Status": "Confirmed", "X-User-Id": "u1", "X-Project-Id": "p1",
             "X-Roles": "member, reader", "X-Auth-Token": "tok"}


# --- context -------------------------------------------------------------------------------

def test_context_trusts_confirmed_identity_headers():
    app = RecordingApp()
    response = get(context_mw.context_filter_factory({})(app), headers=CONFIRMED)
    assert response.status_int == 200
    ctx = app.context
    assert (ctx.user_id, ctx.project_id, ctx.owner) == ("u1", "p1", "p1")
    assert ctx.roles == ["member", "reader"]
    assert ctx.auth_token == "tok"
    assert ctx.is_admin is False
    assert response.headers["x-openstack-request-id"] == ctx.request_id
    assert ctx.request_id.startswith("req-")


def test_context_admin_role_makes_an_admin_context():
    app = RecordingApp()
    get(context_mw.ContextMiddleware(app), headers={**CONFIRMED, "X-Roles": " Admin ,member"})
    assert app.context.is_admin is True
    assert app.context.roles == ["Admin", "member"]


def test_context_accepts_legacy_tenant_and_user_headers():
    app = RecordingApp()
    get(context_mw.ContextMiddleware(app),
        headers={"X-Identity-Status": "Confirmed", "X-Tenant-Id": "t1", "X-User": "legacy"})
    assert (app.context.project_id, app.context.user_id) == ("t1", "legacy")
    assert app.context.roles == []


@pytest.mark.parametrize("status, reason", [
    (None, "missing X-Identity-Status"),
    ("Invalid", "'Invalid'"),
    ("confirmed", "'confirmed'"),
])
def test_context_refuses_unconfirmed_identity_with_401_and_reason(status, reason):
    app = RecordingApp()
    headers = {key: value for key, value in CONFIRMED.items() if key != "X-Identity-Status"}
    if status is not None:
        headers["X-Identity-Status"] = status
    response = get(context_mw.ContextMiddleware(app), headers=headers)
    assert response.status_int == 401
    assert reason in response.text
    assert app.calls == 0


def test_context_keeps_a_request_id_set_by_an_earlier_filter():
    app = RecordingApp()
    request = webob.Request.blank("/", headers=CONFIRMED)
    request.environ["openstack.request_id"] = "req-earlier"
    response = request.get_response(validator(context_mw.ContextMiddleware(app)))
    response.body
    assert app.context.request_id == "req-earlier"
    assert response.headers["x-openstack-request-id"] == "req-earlier"


def test_context_does_not_duplicate_a_request_id_set_by_the_app():
    def app(environ, start_response):
        start_response("204 No Content", [("X-OpenStack-Request-Id", "req-app")])
        return []
    response = get(context_mw.ContextMiddleware(app), headers=CONFIRMED)
    assert response.headers.getall("x-openstack-request-id") == ["req-app"]


# --- noauth --------------------------------------------------------------------------------

def test_noauth_gives_an_admin_context_without_any_header():
    app = RecordingApp()
    response = get(context_mw.noauth_filter_factory({})(app))
    assert response.status_int == 200
    assert app.context.is_admin is True
    assert app.context.project_id is None
    assert "x-openstack-request-id" in response.headers


def test_noauth_ignores_identity_status_and_roles_but_honours_project_and_user():
    app = RecordingApp()
    get(context_mw.NoAuthMiddleware(app),
        headers={"X-Identity-Status": "Invalid", "X-Roles": "reader", "X-Project-Id": "p9",
                 "X-User-Id": "u9"})
    assert app.context.is_admin is True
    assert (app.context.owner, app.context.user_id) == ("p9", "u9")
    assert app.context.roles == ["admin"]


# --- authtoken -----------------------------------------------------------------------------

def test_authtoken_without_keystonemiddleware_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keystonemiddleware", None)   # import fails: not there
    with pytest.raises(exception.InvalidConfiguration) as err:
        context_mw.authtoken_filter_factory({}, www_authenticate_uri="http://keystone")
    assert "pip install glance_cache_mw[keystone]" in str(err.value)
    assert "keystonemiddleware" in str(err.value)

