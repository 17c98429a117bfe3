"""The ``keystone`` flavor against a real Keystone: tokens, projects and roles decide.

A Keystone from PyPI (tests/functional/keystone_server.py) issues real fernet tokens; the
server runs keystonemiddleware's auth_token configured with a real service user. Clients are
python-glanceclient with a user's token. This is the path an OpenStack cloud takes.
"""

import configparser
import hashlib
import io
import os

import pytest

from tests.functional import keystone_server, server as helpers

pytestmark = pytest.mark.realservice
glanceclient = pytest.importorskip("glanceclient")
pytest.importorskip("keystonemiddleware")

PASSWORD = keystone_server.TEST_PASSWORD   # the session Keystone (conftest.py)


@pytest.fixture(scope="module")
def cloud(keystone, tmp_path_factory):
    """(our server, keystone, {user: project id}) with the keystone flavor."""
    ks, projects = keystone
    workdir = tmp_path_factory.mktemp("glance-cache-mw")
    path = helpers.write_config(workdir / "base.ini", workdir / "data", flavor="keystone",
                                testing=False)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    for key, value in {"www_authenticate_uri": ks.url, "auth_url": ks.url,
                       "auth_type": "password", "username": "glance", "password": PASSWORD,
                       "project_name": "service", "user_domain_name": "Default",
                       "project_domain_name": "Default"}.items():
        parser.set("filter:authtoken", key, value)
    text = io.StringIO()
    parser.write(text)
    server = helpers.ServerProcess(workdir, ini_text=text.getvalue())
    server.start()
    yield server, ks, projects
    server.stop()


def client(cloud, user):
    server, ks, projects = cloud
    token = ks.token(user, "proj-" + user, PASSWORD)
    return glanceclient.Client(endpoint=server.url + "/v2", token=token), token


def test_a_users_token_uploads_downloads_and_hits_the_cache(cloud):
    server, _, projects = cloud
    alice, token = client(cloud, "alice")
    data = os.urandom(256 * 1024)
    image = alice.images.create(name="a", disk_format="raw", container_format="bare")
    alice.images.upload(image.id, io.BytesIO(data))
    image = alice.images.get(image.id)
    assert image.owner == projects["alice"] and image.visibility == "shared"
    assert b"".join(alice.images.data(image.id)) == data      # glanceclient checks the hash
    status, headers, body = server.request("GET", "/v2/images/%s/file" % image.id,
                                           headers={"X-Auth-Token": token})
    assert status == 200 and headers["x-image-cache"] == "HIT" and body == data
    assert headers["content-md5"] == hashlib.md5(data).hexdigest()


def test_another_projects_token_cannot_download_a_cached_image(cloud):
    server, _, _ = cloud
    alice, alice_token = client(cloud, "alice")
    image = alice.images.create(name="private", disk_format="raw", container_format="bare",
                                visibility="private")
    alice.images.upload(image.id, io.BytesIO(b"secret" * 1000))
    url = "/v2/images/%s/file" % image.id
    status, headers, _ = server.request("GET", url, headers={"X-Auth-Token": alice_token})
    assert status == 200 and headers["x-image-cache"] == "MISS"
    _, bob_token = client(cloud, "bob")
    status, _, body = server.request("GET", url, headers={"X-Auth-Token": bob_token})
    assert status == 404 and b"secret" not in body
    # Identity headers next to a valid token do not change who the caller is.
    status, _, _ = server.request("GET", url, headers={
        "X-Auth-Token": bob_token, "X-Project-Id": alice.images.get(image.id).owner,
        "X-Roles": "admin", "X-Identity-Status": "Confirmed"})
    assert status == 404


def test_cache_management_needs_the_admin_role_from_keystone(cloud):
    server, _, _ = cloud
    _, bob_token = client(cloud, "bob")
    status, _, _ = server.request("GET", "/v2/cache", headers={"X-Auth-Token": bob_token})
    assert status == 403
    _, carol_token = client(cloud, "carol")
    status, _, body = server.request("GET", "/v2/cache", headers={"X-Auth-Token": carol_token})
    assert status == 200 and b"cached_images" in body


def test_a_token_keystone_does_not_know_is_refused(cloud):
    server, _, _ = cloud
    status, headers, body = server.request("GET", "/v2/images",
                                           headers={"X-Auth-Token": "gAAAAAnot-a-real-token"})
    assert status == 401 and b"Traceback" not in body
