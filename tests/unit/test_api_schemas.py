"""The JSON schemas (api/schemas.py) python-glanceclient builds its models from."""

import pytest

from glance_cache_mw.api import schemas
from tests.unit.api_helpers import (  # noqa: F401  (fixtures)
    api, assert_error, migrated_template)


@pytest.mark.parametrize("name", ["image", "images", "member", "members"])
def test_schemas(api, name):
    resp = api.call("GET", "/v2/schemas/" + name)
    assert resp.status_int == 200 and resp.json["name"] == name


def test_image_schema_matches_what_glanceclient_needs(api):
    schema = api.call("GET", "/v2/schemas/image").json
    assert schema["additionalProperties"] == {"type": "string"}
    for name in ("id", "name", "status", "visibility", "checksum", "os_hash_value", "size",
                 "tags", "min_ram", "protected", "os_hidden", "self", "file", "schema"):
        assert name in schema["properties"]
    assert schema["properties"]["status"]["readOnly"] is True
    assert schema["properties"]["os_distro"]["is_base"] is False


def test_image_schema_validates_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft4Validator.check_schema(schemas.image_schema())
    jsonschema.validate({"name": None, "disk_format": "raw", "foo": "bar"},
                        schemas.image_schema())


def test_unknown_schema_is_404(api):
    assert_error(api.call("GET", "/v2/schemas/task"), 404, "task")
