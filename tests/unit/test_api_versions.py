"""The versions document (api/versions.py) through the images app."""

from tests.unit.api_helpers import api, migrated_template  # noqa: F401  (fixtures)


def test_root_is_300_and_versions_200(api):
    root = api.call("GET", "/", None)
    versions = api.call("GET", "/versions", None)
    assert root.status_int == 300 and versions.status_int == 200
    assert root.json == versions.json
    listed = versions.json["versions"]
    assert listed[0]["status"] == "CURRENT"
    assert all(v["status"] == "SUPPORTED" for v in listed[1:])
    assert {"v2.0", "v2.14"} <= {v["id"] for v in listed}
    assert listed[0]["links"] == [{"rel": "self", "href": "http://localhost/v2/"}]
