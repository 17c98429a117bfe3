"""Image tags through the images app (api/tags.py)."""

from tests.unit.api_helpers import (  # noqa: F401  (fixtures)
    OTHER, OWNER, api, assert_error, make_api, migrated_template)


def tag_url(image_id, tag):
    return "/v2/images/%s/tags/%s" % (image_id, tag)


def test_tags_add_and_delete(api):
    image = api.create()
    assert api.call("PUT", tag_url(image["id"], "red"), OWNER).status_int == 204
    assert api.call("PUT", tag_url(image["id"], "red"), OWNER).status_int == 204
    assert api.call("PUT", tag_url(image["id"], "caf%C3%A9"), OWNER).status_int == 204
    assert api.get(image["id"])["tags"] == ["red", "café"]
    assert api.call("DELETE", tag_url(image["id"], "red"), OWNER).status_int == 204
    assert api.get(image["id"])["tags"] == ["café"]
    assert_error(api.call("DELETE", tag_url(image["id"], "red"), OWNER), 404, "red")


def test_tag_errors_and_permissions(tmp_path, migrated_template):
    api = make_api(tmp_path, migrated_template, image_tag_quota="1")
    image = api.create(visibility="community")
    assert_error(api.call("PUT", tag_url(image["id"], "x" * 256), OWNER), 400)
    assert_error(api.call("PUT", tag_url(image["id"], "a"), OTHER), 403)
    api.call("PUT", tag_url(image["id"], "a"), OWNER)
    assert_error(api.call("DELETE", tag_url(image["id"], "a"), OTHER), 403)
    assert_error(api.call("PUT", tag_url(image["id"], "b"), OWNER), 413)
    private = api.create(visibility="private")
    assert_error(api.call("PUT", tag_url(private["id"], "a"), OTHER), 404)
    assert_error(api.call("PUT", tag_url(private["id"], "%FF"), OWNER), 400, "utf-8")
