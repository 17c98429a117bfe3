"""Shared fixtures of the images-app tests (imported by tests/unit/test_api_*.py; no tests here).

``api`` is the app from ``router.app_factory`` on a fresh SQLite database in ``tmp_path`` (a copy
of one migrated template per session) with a store under ``tmp_path/images``. ``api.call`` runs a
request through ``wsgiref.validate`` with the given context put into ``environ['glance.context']``.
"""

import json as jsonlib
import shutil
import wsgiref.validate

import pytest
import webob

from glance_cache_mw.api import router
from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import engine as db_engine, migration

ADMIN = RequestContext.admin(project_id="admin-project")
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


def user(project, *roles):
    return RequestContext(user_id="u-" + project, project_id=project, roles=roles or ["member"])


OWNER = user("owner")
OTHER = user("other")


def with_context(app, context):
    """The tiny wrapper standing in for the context middleware."""
    def wrapped(environ, start_response):
        if context is not None:
            environ["glance.context"] = context
        return app(environ, start_response)
    return wrapped


class Api:
    """Call the images app with a context, decoding JSON bodies."""

    def __init__(self, app, store_dir):
        self.app = app
        self.store_dir = store_dir

    def call(self, method, path, context=ADMIN, json=None, body=None, content_type=None,
             headers=None, validate=True):
        # JSON errors by default (WebOb's error bodies follow Accept, api/faults.py).
        req = webob.Request.blank(path, method=method,
                                  headers=dict({"Accept": "application/json"}, **headers or {}))
        if json is not None:
            req.body = jsonlib.dumps(json).encode()
            req.content_type = content_type or "application/json"
        elif body is not None:
            req.body = body
            req.content_type = content_type or "application/octet-stream"
        elif content_type is not None:
            req.content_type = content_type
        app = with_context(self.app, context)
        resp = req.get_response(wsgiref.validate.validator(app) if validate else app)
        resp.body  # noqa: B018  (reads and closes the body; WebOb checks Content-Length)
        return resp

    def create(self, context=OWNER, **values):
        resp = self.call("POST", "/v2/images", context, json=values)
        assert resp.status_int == 201, resp.text
        return resp.json

    def upload(self, image_id, data, context=OWNER):
        resp = self.call("PUT", "/v2/images/%s/file" % image_id, context, body=data)
        assert resp.status_int == 204, resp.text
        return resp

    def active(self, data=b"image data", context=OWNER, **values):
        image = self.create(context, **values)
        self.upload(image["id"], data, context)
        return self.get(image["id"], context)

    def get(self, image_id, context=ADMIN):
        resp = self.call("GET", "/v2/images/%s" % image_id, context)
        assert resp.status_int == 200, resp.text
        return resp.json

    def patch(self, image_id, changes, context=OWNER):
        return self.call("PATCH", "/v2/images/%s" % image_id, context, json=changes,
                         content_type=PATCH_TYPE)


def assert_error(resp, status, fragment=""):
    """A JSON error document (Glance's: WebOb's) with ``status`` whose message mentions
    ``fragment``."""
    assert resp.status_int == status, resp.text
    assert resp.content_type == "application/json"
    error = resp.json
    assert error["code"] == resp.status and error["title"] == resp.status.split(" ", 1)[1]
    assert fragment.lower() in error["message"].lower()
    assert "<br" not in error["message"]
    assert "Traceback" not in resp.text


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "images.sqlite"
    engine = db_engine.create_engine("sqlite:///%s" % path)
    try:
        migration.sync(engine)
    finally:
        engine.dispose()
    return path


def make_api(tmp_path, template, **local_conf):
    db_path = tmp_path / "images.sqlite"
    if not db_path.exists():
        shutil.copy(template, db_path)
    store_dir = tmp_path / "images"
    app = router.app_factory({}, sql_connection="sqlite:///%s" % db_path,
                             filesystem_store_datadir=str(store_dir), **local_conf)
    return Api(app, store_dir)


@pytest.fixture
def api(tmp_path, migrated_template):
    yield make_api(tmp_path, migrated_template)
    db_engine.dispose()
