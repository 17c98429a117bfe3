"""The drop-in, against real Glance 33: our filter in Glance's own Paste pipeline under uWSGI.

Each server is Glance as an operator deploys it (tests/functional/glance_server.py): Glance's
glance-api-paste.ini with only ``[filter:cache]`` (and ``[filter:cachemanage]``) changed to our
factories, glance-api.conf giving the cache's settings (which our filter reads from Glance),
``glance-manage db_sync``, 2 uWSGI processes x 8 threads. Clients are python-glanceclient and
plain HTTP. Store reads are counted from Glance's own ``image.send`` notifications (logged by
the ``log`` notification driver): Glance emits one each time its data path has sent an image,
and cache hits never go through it.

The ``caching`` servers run on SQLite (sqlite and xattr cache drivers) and PostgreSQL
(centralized_db driver), so Glance's /v2/cache API and cache worker use what our drivers
wrote with each, and the other way round; the ``cachemanagement`` server has our cache
management filter in place of Glance's; the ``keystone+caching`` and
``keystone+cachemanagement`` servers take real Keystone tokens (the session's Keystone,
conftest.py) through Glance's auth_token and context middleware. A ``caching`` server in
cluster mode has our peer filter in Glance's pipeline too.
"""

import concurrent.futures
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from glance_cache_mw import cluster
from glance_cache_mw.cluster import signing
from tests import dbfixtures
from tests.functional import glance_server, keystone_server, server as helpers

pytestmark = pytest.mark.realservice
glanceclient = pytest.importorskip("glanceclient")

# Glance's noauth context is an admin without roles: allow the cache API to it, and make
# download_image deny an image whose property deny_download is "yes" (the policy check a
# cached image must pass, like any other).
POLICY = {"cache_image": "", "cache_list": "", "cache_delete": "",
          "download_image": "not 'yes':%(deny_download)s"}
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def glance_python():
    python = glance_server.glance_python()
    if python is None:
        pytest.skip("no Glance venv: run tools/glance-venv and set %s to its python "
                    "(tools/test does both)" % glance_server.PYTHON_ENV)
    return python


class PostgresDatabase:
    """A scratch PostgreSQL database for Glance (its own schema: glance-manage db_sync)."""

    def __init__(self):
        self.admin_url = dbfixtures.server_url("postgresql")
        self.name = "gcm_glance_%s" % uuid.uuid4().hex[:12]
        self._admin("CREATE DATABASE %s" % self.name)
        self.url = self.admin_url.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self, statement):
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def close(self):
        self._admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.name)


@pytest.fixture(scope="module", params=[
    pytest.param(("sqlite", "sqlite"), id="sqlite"),
    pytest.param(("sqlite", "xattr"), id="sqlite-xattr"),
    pytest.param(("postgresql", "centralized_db"), id="postgresql",
                 marks=pytest.mark.realdb)])
def glance(request, glance_python, tmp_path_factory):
    """glance-api with the ``caching`` flavor and our filter, on (database, cache driver):
    SQLite with the sqlite or xattr driver, PostgreSQL with the centralized_db driver."""
    backend, driver = request.param
    workdir = tmp_path_factory.mktemp("glance-%s-%s" % (backend, driver))
    database = None
    if backend == "sqlite":
        db_url = "sqlite:///%s/glance.sqlite" % workdir
    else:
        database = PostgresDatabase()
        db_url = database.url
    server = glance_server.GlanceServer(workdir, glance_python, db_url, flavor="caching",
                                        driver=driver, policy=POLICY)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if database is not None:
            database.close()


@pytest.fixture(scope="module")
def glance_manage(glance_python, tmp_path_factory):
    """glance-api with the ``cachemanagement`` flavor: our cache and cachemanage filters."""
    workdir = tmp_path_factory.mktemp("glance-cachemanagement")
    server = glance_server.GlanceServer(workdir, glance_python,
                                        "sqlite:///%s/glance.sqlite" % workdir,
                                        flavor="cachemanagement", policy=POLICY)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def client(server):
    return glanceclient.Client(endpoint=server.url + "/v2")


def upload(server, data, **properties):
    """An active image with ``data``: created with glanceclient, the data PUT with a
    Content-Length (glanceclient's chunked upload fails in Glance's uWSGI read here: "unable
    to receive chunked part", with --http-chunked-input too)."""
    image = client(server).images.create(name="img", disk_format="raw",
                                         container_format="bare", **properties)
    status, _, body = server.request("PUT", "/v2/images/%s/file" % image.id, body=data,
                                     headers=OCTET)
    assert status == 204, body
    return image.id


def get(server, image_id, **headers):
    return server.request("GET", "/v2/images/%s/file" % image_id, headers=headers)


def wait_cached(server, image_id):
    """The cache file is renamed into place once the fill has verified the last byte, which
    may be just after the client has it."""
    helpers.wait_for(lambda: os.path.exists(server.cached_file(image_id)), timeout_s=10,
                     what="image %s to be cached" % image_id)


def wait_store_reads(server, image_id, expected):
    helpers.wait_for(lambda: server.store_reads(image_id) >= expected, timeout_s=10,
                     what="%d image.send notifications for %s" % (expected, image_id))
    return server.store_reads(image_id)


def test_glanceclient_download_misses_then_hits_byte_identical(glance):
    data = os.urandom(2 * 1024 * 1024 + 11)
    image_id = upload(glance, data)
    glance_client = client(glance)
    assert b"".join(glance_client.images.data(image_id)) == data   # MISS; client checks md5
    wait_cached(glance, image_id)
    assert wait_store_reads(glance, image_id, 1) == 1
    status, headers, body = get(glance, image_id)
    assert (status, headers["x-image-cache"]) == (200, "HIT") and body == data
    assert headers["content-md5"] == hashlib.md5(data).hexdigest()
    assert b"".join(glance_client.images.data(image_id)) == data   # a HIT too
    assert glance.store_reads(image_id) == 1


def test_range_is_served_from_the_cache(glance):
    data = os.urandom(1024 * 1024)
    image_id = upload(glance, data)
    # Glance itself answers a range (what a follower whose fill died asks it for the rest).
    status, headers, body = get(glance, image_id, Range="bytes=5-")
    assert (status, headers["x-image-cache"], body) == (206, "BYPASS", data[5:])
    assert get(glance, image_id)[1]["x-image-cache"] == "MISS"
    wait_cached(glance, image_id)
    status, headers, body = get(glance, image_id, Range="bytes=1000-1999")
    assert (status, headers["x-image-cache"]) == (206, "HIT")
    assert headers["content-range"] == "bytes 1000-1999/%d" % len(data)
    assert body == data[1000:2000]
    status, headers, body = get(glance, image_id, Range="bytes=-10")
    assert (status, body) == (206, data[-10:])
    assert wait_store_reads(glance, image_id, 2) == 2   # the BYPASS range and the MISS


def test_16_concurrent_cold_downloads_read_the_store_once(glance):
    data = os.urandom(24 * 1024 * 1024 + 5)
    image_id = upload(glance, data)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: get(glance, image_id), range(16)))
    statuses = sorted(headers["x-image-cache"] for _, headers, _ in results)
    assert all(status == 200 and body == data for status, _, body in results), statuses
    assert statuses.count("MISS") == 1, statuses
    assert set(statuses) <= {"MISS", "COALESCED", "HIT"}, statuses
    assert wait_store_reads(glance, image_id, 1) == 1
    time.sleep(0.5)
    assert glance.store_reads(image_id) == 1, statuses


def test_download_image_policy_governs_cached_bytes(glance):
    data = os.urandom(300 * 1024)
    image_id, other_id = upload(glance, data), upload(glance, data)
    for cached in (image_id, other_id):
        assert get(glance, cached)[0] == 200
        wait_cached(glance, cached)
    # A rule on the image: Glance's policy, evaluated on Glance's view of the image.
    client(glance).images.update(image_id, deny_download="yes")
    status, headers, body = get(glance, image_id)
    assert status == 403 and data not in body
    assert get(glance, image_id, Range="bytes=0-99")[0] == 403
    assert get(glance, other_id)[1]["x-image-cache"] == "HIT"
    # The experiment: "download_image": "!" in the policy file (reloaded by Glance).
    glance.write_policy({**POLICY, "download_image": "!"})
    try:
        helpers.wait_for(lambda: get(glance, other_id)[0] == 403, timeout_s=10,
                         what="the policy file to be reloaded")
        assert get(glance, other_id, Range="bytes=0-9")[0] == 403
    finally:
        glance.write_policy(POLICY)
    helpers.wait_for(lambda: get(glance, other_id)[0] == 200, timeout_s=10,
                     what="the policy file to be reloaded")
    assert os.path.exists(glance.cached_file(image_id))   # refused, not evicted


def test_glance_cache_api_lists_and_deletes_our_entries(glance):
    data = os.urandom(200 * 1024)
    image_id = upload(glance, data)
    assert get(glance, image_id)[1]["x-image-cache"] == "MISS"
    wait_cached(glance, image_id)
    assert get(glance, image_id)[1]["x-image-cache"] == "HIT"

    def glance_lists():
        status, _, body = glance.request("GET", "/v2/cache")
        assert status == 200, body
        return {entry["image_id"]: entry for entry in json.loads(body)["cached_images"]}
    assert glance_lists()[image_id]["size"] == len(data)
    # Our hit counts are written within a second or so, where Glance's driver reads them.
    helpers.wait_for(lambda: glance_lists()[image_id]["hits"] == 1, timeout_s=10,
                     what="Glance's /v2/cache to show our hit")
    status, _, body = glance.request("DELETE", "/v2/cache/%s" % image_id)
    assert status == 204, body
    assert not os.path.exists(glance.cached_file(image_id))
    listed = json.loads(glance.request("GET", "/v2/cache")[2])["cached_images"]
    assert image_id not in [entry["image_id"] for entry in listed]
    assert get(glance, image_id)[1]["x-image-cache"] == "MISS"


def test_an_image_cached_by_glances_prefetcher_is_our_hit(glance):
    data = os.urandom(500 * 1024)
    image_id = upload(glance, data)
    status, _, body = glance.request("PUT", "/v2/cache/%s" % image_id)
    assert status == 202, body
    helpers.wait_for(lambda: os.path.exists(glance.cached_file(image_id)), timeout_s=30,
                     what="Glance's cache worker to prefetch the image")
    status, headers, body = get(glance, image_id)
    assert (status, headers["x-image-cache"]) == (200, "HIT") and body == data


def test_image_delete_and_deactivate_evict(glance):
    data = os.urandom(100 * 1024)
    deleted, deactivated = upload(glance, data), upload(glance, data)
    for image_id in (deleted, deactivated):
        assert get(glance, image_id)[0] == 200
        wait_cached(glance, image_id)
    assert glance.request("DELETE", "/v2/images/%s" % deleted)[0] == 204
    assert not os.path.exists(glance.cached_file(deleted))
    assert get(glance, deleted)[0] == 404
    status, _, body = glance.request("POST", "/v2/images/%s/actions/deactivate" % deactivated)
    assert status == 204, body
    assert not os.path.exists(glance.cached_file(deactivated))
    # Glance's noauth context is admin: Glance itself streams a deactivated image to admins.
    status, headers, body = get(glance, deactivated)
    assert (status, headers["x-image-cache"], body) == (200, "BYPASS", data)
    assert not os.path.exists(glance.cached_file(deactivated))


def test_cachemanagement_flavor_runs_our_cache_management(glance_manage):
    data = os.urandom(200 * 1024)
    image_id, queued_id = upload(glance_manage, data), upload(glance_manage, data)
    assert get(glance_manage, image_id)[1]["x-image-cache"] == "MISS"
    wait_cached(glance_manage, image_id)
    assert get(glance_manage, image_id)[1]["x-image-cache"] == "HIT"
    # PUT goes on to Glance's own /v2/cache: its cache worker prefetches through its stores.
    status, _, body = glance_manage.request("PUT", "/v2/cache/%s" % queued_id)
    assert status == 202, body
    wait_cached(glance_manage, queued_id)
    assert get(glance_manage, queued_id)[1]["x-image-cache"] == "HIT"
    listing = json.loads(glance_manage.request("GET", "/v2/cache")[2])
    assert sorted(entry["image_id"] for entry in listing["cached_images"]) == sorted(
        [image_id, queued_id])
    status, _, body = glance_manage.request("POST", "/v2/cache/prune")
    assert status == 200 and json.loads(body)["total_files_pruned"] == 0
    assert glance_manage.request("DELETE", "/v2/cache/%s" % image_id)[0] == 204
    assert not os.path.exists(glance_manage.cached_file(image_id))
    assert get(glance_manage, image_id)[1]["x-image-cache"] == "MISS"
    status, _, _ = glance_manage.request("DELETE", "/v2/cache",
                                         headers={"x-image-cache-clear-target": "cache"})
    assert status == 204
    assert not os.path.exists(glance_manage.cached_file(queued_id))
    assert [line for line in glance_manage.log().splitlines()   # our filter answered
            if "glance_cache_mw.api.cache_manage" in line and "cleared" in line]


# -- keystone+caching: Glance's own authtoken and context middleware, a real Keystone ---------

PASSWORD = keystone_server.TEST_PASSWORD   # the session Keystone (conftest.py)


@pytest.fixture(scope="module", params=["keystone+caching", "keystone+cachemanagement"])
def glance_keystone(request, glance_python, keystone, tmp_path_factory):
    """(glance-api with a keystone flavor, Keystone) — Glance's default policies."""
    keystone, _ = keystone
    workdir = tmp_path_factory.mktemp("glance-" + request.param.replace("+", "-"))
    extra = "\n".join(["[keystone_authtoken]", "www_authenticate_uri = " + keystone.url,
                       "auth_url = " + keystone.url, "auth_type = password",
                       "username = glance", "password = " + PASSWORD,
                       "project_name = service", "user_domain_name = Default",
                       "project_domain_name = Default", ""])
    server = glance_server.GlanceServer(workdir, glance_python,
                                        "sqlite:///%s/glance.sqlite" % workdir,
                                        flavor=request.param, extra_conf=extra)
    try:
        server.start()
        yield server, keystone
    finally:
        server.stop()


def test_keystone_caching_private_image_of_another_project_is_404_even_cached(glance_keystone):
    server, keystone = glance_keystone
    alice = {"X-Auth-Token": keystone.token("alice", "proj-alice", PASSWORD)}
    bob = {"X-Auth-Token": keystone.token("bob", "proj-bob", PASSWORD)}
    data = os.urandom(400 * 1024)
    alice_client = glanceclient.Client(endpoint=server.url + "/v2", token=alice["X-Auth-Token"])
    image = alice_client.images.create(name="private", disk_format="raw",
                                       container_format="bare", visibility="private")
    status, _, body = server.request("PUT", "/v2/images/%s/file" % image.id, body=data,
                                     headers={**OCTET, **alice})
    assert status == 204, body
    assert b"".join(alice_client.images.data(image.id)) == data        # MISS, checked
    wait_cached(server, image.id)
    status, headers, body = get(server, image.id, **alice)
    assert (status, headers["x-image-cache"], body) == (200, "HIT", data)  # her policy: allow
    status, headers, body = get(server, image.id, **bob)
    assert status == 404 and data[:64] not in body
    assert get(server, image.id, Range="bytes=0-99", **bob)[0] == 404
    bob_client = glanceclient.Client(endpoint=server.url + "/v2", token=bob["X-Auth-Token"])
    with pytest.raises(glanceclient.exc.HTTPNotFound):
        b"".join(bob_client.images.data(image.id))
    assert get(server, image.id)[0] == 401                              # no token at all
    assert os.path.exists(server.cached_file(image.id))


def test_our_pruner_and_cleaner_work_from_glance_api_conf(glance):
    """Pointed at glance-api.conf (its [DEFAULT] cache keys and [database] connection), our
    commands act on the cache Glance and our filter share, in place of glance-cache-*."""
    data = os.urandom(100 * 1024)
    image_id = upload(glance, data)
    assert get(glance, image_id)[0] == 200
    wait_cached(glance, image_id)
    stale = os.path.join(glance.cache_dir, "invalid", "0b1f4ac0-8f0f-4d1f-9d6b-2f3c6f7a5e02")
    with open(stale, "wb") as handle:
        handle.write(b"a fill that did not match")
    conf = os.path.join(glance.workdir, "glance-api.conf")
    bin_dir = os.path.dirname(sys.executable)
    for command in ("glance-cache-mw-pruner", "glance-cache-mw-cleaner"):
        done = subprocess.run([os.path.join(bin_dir, command), "--config", conf],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert not os.path.exists(stale)
    assert os.path.exists(glance.cached_file(image_id))   # active in Glance's DB: kept
    assert get(glance, image_id)[1]["x-image-cache"] == "HIT"


# -- cluster mode: our peer filter in Glance's pipeline (docs/glance.md) ----------------------

CLUSTER_SECRET = "glance-cluster-secret-of-the-tests"


@pytest.fixture(scope="module")
def glance_cluster_node(glance_python, tmp_path_factory):
    """glance-api (``caching``, centralized_db) with our peer filter before
    versionnegotiation, cluster_secret in the paste file's [DEFAULT], and our table of fill
    claims added to Glance's database by our db sync, as docs/glance.md says."""
    workdir = tmp_path_factory.mktemp("glance-cluster")
    server = glance_server.GlanceServer(workdir, glance_python,
                                        "sqlite:///%s/glance.sqlite" % workdir,
                                        flavor="caching", driver="centralized_db",
                                        policy=POLICY, cluster_secret=CLUSTER_SECRET)
    try:
        server.start()
        synced = glance_command(server, workdir, "manage", "--config",
                                os.path.join(server.workdir, "glance-api.conf"), "db", "sync")
        assert synced.returncode == 0, synced.stderr
        yield server
    finally:
        server.stop()


def test_the_peer_filter_serves_what_glance_cached_to_signed_requests_only(glance_cluster_node):
    server = glance_cluster_node
    data = os.urandom(1024 * 1024 + 3)
    image_id = upload(server, data)
    assert get(server, image_id)[::2] == (200, data)
    wait_cached(server, image_id)
    path = cluster.peer_path(image_id)
    signed = signing.signed_headers(CLUSTER_SECRET, "GET", path, image_id,
                                    "http://127.0.0.1:1", 30)
    status, headers, body = server.request("GET", path, headers=signed)
    assert (status, headers["x-image-cache"], body) == (200, "PEER-HIT", data)
    status, headers, body = server.request("GET", path, headers={**signed, "Range": "bytes=7-"})
    assert (status, body) == (206, data[7:])
    for refused in ({}, {**signed, signing.SIGNATURE_HEADER: "0" * 64}):
        status, _, body = server.request("GET", path, headers=refused)
        assert status == 403 and b"Peer request refused" in body, body
    assert server.store_reads(image_id) == 1


# -- our prefetcher, pointed at glance-api.conf, reads through Glance's stores -------------

def prefetcher_conf(server, tmp_path):
    """Glance's glance-api.conf plus our own ``filesystem_store_datadir`` pointing at an empty
    directory: were the prefetcher to read our file store, it would find nothing there."""
    with open(os.path.join(server.workdir, "glance-api.conf")) as handle:
        text = handle.read()
    decoy = tmp_path / "our-empty-datadir"
    decoy.mkdir()
    text = text.replace("[DEFAULT]\n", "[DEFAULT]\nfilesystem_store_datadir = %s\n" % decoy, 1)
    conf = tmp_path / "glance-api.conf"
    conf.write_text(text)
    return str(conf), decoy


def glance_command(server, tmp_path, *argv):
    """``glance-cache-mw-{argv[0]}`` as installed in Glance's venv (where glance_store is),
    run from an empty directory (our embedded defaults would point under it)."""
    return subprocess.run([server.bin("glance-cache-mw-" + argv[0]), *argv[1:]],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))


def queue_and_prefetch(server, tmp_path, conf, *image_ids):
    for image_id in image_ids:
        done = glance_command(server, tmp_path, "manage", "--config", conf, "cache", "queue",
                              image_id)
        assert done.returncode == 0, done.stderr
    return glance_command(server, tmp_path, "prefetcher", "--config", conf)


def test_our_prefetcher_reads_through_glances_stores(glance, tmp_path):
    data = os.urandom(700 * 1024 + 3)
    image_id = upload(glance, data)
    conf, decoy = prefetcher_conf(glance, tmp_path)
    done = queue_and_prefetch(glance, tmp_path, conf, image_id)
    assert done.returncode == 0, done.stderr
    assert "prefetching through Glance's stores ([glance_store] stores = file" in done.stderr
    assert "1 images fetched, 0 failed" in done.stderr
    assert os.listdir(decoy) == []
    assert os.path.exists(glance.cached_file(image_id))
    status, headers, body = get(glance, image_id)
    assert (status, headers["x-image-cache"]) == (200, "HIT") and body == data
    assert glance.store_reads(image_id) == 0   # Glance's data path never sent it


@pytest.fixture(scope="module")
def glance_multistore(glance_python, tmp_path_factory):
    """glance-api (one process) with two file stores in Glance's multi-store form."""
    workdir = tmp_path_factory.mktemp("glance-multistore")
    server = glance_server.GlanceServer(workdir, glance_python,
                                        "sqlite:///%s/glance.sqlite" % workdir, processes=1,
                                        policy=POLICY, backends=["fast", "cheap"])
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_our_prefetcher_reads_each_image_from_its_own_backend(glance_multistore, tmp_path):
    """enabled_backends: each location is read with the backend its metadata names."""
    server = glance_multistore
    data = {"fast": os.urandom(200 * 1024), "cheap": os.urandom(300 * 1024 + 1)}
    ids = {}
    for backend, payload in data.items():
        image = client(server).images.create(name=backend, disk_format="raw",
                                             container_format="bare")
        status, _, body = server.request("PUT", "/v2/images/%s/file" % image.id, body=payload,
                                         headers={**OCTET, "X-Image-Meta-Store": backend})
        assert status == 204, body
        assert client(server).images.get(image.id)["stores"] == backend
        ids[backend] = image.id
    conf, decoy = prefetcher_conf(server, tmp_path)
    done = queue_and_prefetch(server, tmp_path, conf, *ids.values())
    assert done.returncode == 0, done.stderr
    assert "[DEFAULT] enabled_backends = fast:file,cheap:file" in done.stderr
    assert "2 images fetched, 0 failed" in done.stderr
    assert "searching all backends" not in done.stderr   # the location named its backend
    assert os.listdir(decoy) == []
    for backend, image_id in ids.items():
        status, headers, body = get(server, image_id)
        assert (status, headers["x-image-cache"]) == (200, "HIT") and body == data[backend]
    # A node whose configuration lacks the image's store ("fast", the default): a clear
    # failure naming it, nothing cached.
    image_id = upload(server, data["cheap"])
    with open(conf) as handle:
        text = handle.read()
    with open(conf, "w") as handle:
        handle.write(text.replace("enabled_backends = fast:file,cheap:file",
                                  "enabled_backends = cheap:file"))
    done = queue_and_prefetch(server, tmp_path, conf, image_id)
    assert done.returncode == 1, done.stderr
    assert image_id in done.stderr and "UnknownScheme" in done.stderr
    assert not os.path.exists(server.cached_file(image_id))


def test_our_prefetcher_does_not_cache_a_corrupt_store_file(glance, tmp_path):
    data = os.urandom(300 * 1024)
    image_id = upload(glance, data)
    stored = os.path.join(glance.workdir, "images", image_id)
    with open(stored, "r+b") as handle:      # same size, one byte flipped
        handle.seek(1000)
        handle.write(bytes([data[1000] ^ 0xFF]))
    conf, _ = prefetcher_conf(glance, tmp_path)
    done = queue_and_prefetch(glance, tmp_path, conf, image_id)
    assert done.returncode == 1, done.stderr
    assert image_id in done.stderr and "does not match the image record" in done.stderr
    assert not os.path.exists(glance.cached_file(image_id))
    listed = glance_command(glance, tmp_path, "manage", "--config", conf, "cache", "list",
                            "--format", "json")
    assert listed.returncode == 0 and image_id not in listed.stdout   # dropped from the queue


def test_our_prefetcher_names_the_key_when_glances_stores_are_unusable(glance, tmp_path):
    conf, _ = prefetcher_conf(glance, tmp_path)
    with open(conf) as handle:
        text = handle.read()
    with open(conf, "w") as handle:
        handle.write(text.replace("stores = file\n", "stores = nosuchstore\n"))
    done = glance_command(glance, tmp_path, "prefetcher", "--config", conf)
    assert done.returncode == 2
    assert "stores = nosuchstore" in done.stderr and "Traceback" not in done.stderr
    # Our own venv has no glance_store: the prefetcher says so, where the pruner needs none.
    bin_dir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bin_dir, "glance-cache-mw-prefetcher"), "--config",
                           conf], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "[glance_store] in %s" % conf in done.stderr and "glance_store library" in done.stderr


def test_switching_back_to_glances_filter_keeps_the_cache(glance_manage, glance_python):
    """One line back in glance-api-paste.ini: Glance's own filter serves what ours cached
    (sqlite driver, WAL cache.db) and counts its hits where ours did. Runs last on the
    cachemanagement server's files (that server is stopped for it)."""
    data = os.urandom(300 * 1024)
    image_id = upload(glance_manage, data)
    assert get(glance_manage, image_id)[1]["x-image-cache"] == "MISS"
    wait_cached(glance_manage, image_id)

    def recorded():   # the row follows the rename into place (as with Glance's driver)
        conn = sqlite3.connect(os.path.join(glance_manage.cache_dir, "cache.db"))
        try:
            return conn.execute("SELECT hits FROM cached_images WHERE image_id = ?",
                                (image_id,)).fetchone() == (0,)
        finally:
            conn.close()
    helpers.wait_for(recorded, timeout_s=10, what="our cache.db row")
    glance_manage.stop()
    theirs = glance_server.GlanceServer(glance_manage.workdir, glance_python,
                                        glance_manage.db_url, policy=POLICY, our_filters=False)
    theirs.log_path += ".glance-filter"
    theirs.start()
    try:
        status, headers, body = get(theirs, image_id)
        assert status == 200 and body == data and "x-image-cache" not in headers
        # hits: 0 after our fill; 1 = Glance's filter read it from the cache. Glance counts
        # the hit after the last chunk, when the server asks its iterator for the next one,
        # which can be after the client has every byte: wait for it.
        def hits():
            listed = json.loads(theirs.request("GET", "/v2/cache")[2])["cached_images"]
            return {entry["image_id"]: entry["hits"] for entry in listed}.get(image_id)
        helpers.wait_for(lambda: hits() == 1, timeout_s=10, what="Glance's hit count of 1")
    finally:
        theirs.stop()


def test_keystone_flavors_cache_management_is_for_admins(glance_keystone):
    """keystone+caching: Glance's /v2/cache; keystone+cachemanagement: ours, reading the
    admin from Glance's context (it answered 403 to the admin before)."""
    server, keystone = glance_keystone
    carol = {"X-Auth-Token": keystone.token("carol", "proj-carol", PASSWORD)}   # admin
    alice = {"X-Auth-Token": keystone.token("alice", "proj-alice", PASSWORD)}
    data = os.urandom(100 * 1024)
    status, _, body = server.request("POST", "/v2/images", body=json.dumps(
        {"name": "x", "disk_format": "raw", "container_format": "bare"}).encode(),
        headers={"Content-Type": "application/json", **alice})
    image_id = json.loads(body)["id"]
    assert server.request("PUT", "/v2/images/%s/file" % image_id, body=data,
                          headers={**OCTET, **alice})[0] == 204
    assert get(server, image_id, **alice)[1]["x-image-cache"] == "MISS"
    wait_cached(server, image_id)
    status, _, body = server.request("GET", "/v2/cache", headers=carol)
    assert status == 200, body
    assert image_id in [entry["image_id"] for entry in json.loads(body)["cached_images"]]
    assert server.request("GET", "/v2/cache", headers=alice)[0] == 403
    assert server.request("DELETE", "/v2/cache/%s" % image_id, headers=alice)[0] == 403
    assert server.request("DELETE", "/v2/cache/%s" % image_id, headers=carol)[0] == 204
    assert not os.path.exists(server.cached_file(image_id))
