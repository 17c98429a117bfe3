"""Maintenance on SQLite, PostgreSQL and MariaDB: prefetching and evicting images that are
gone, with the sqlite driver and with centralized_db (several nodes in one database)."""

import io
import os

import pytest

from glance_cache_mw import image_ids, store as store_mod
from glance_cache_mw.db import api as db_api
from glance_cache_mw.db import cache_api
from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.maintenance import Maintenance
from tests.db.helpers import admin_context
from tests.unit import cache_helpers as helpers

NODE_A = "http://node-a:9292"
NODE_B = "http://node-b:9292"


@pytest.fixture
def store(tmp_path):
    return store_mod.FileStore(str(tmp_path / "images"), chunk_size=4096)


@pytest.fixture
def make_node(db, tmp_path, store):
    made = []

    def make(node_url=None):
        name = node_url.split("//")[1].split(":")[0] if node_url else "local"
        settings = helpers.settings(tmp_path / name, "centralized_db" if node_url else "sqlite")
        if node_url:
            settings.update(sql_connection=db.url, worker_self_reference_url=node_url)
        cache = ImageCache.from_config(settings)
        maintenance = Maintenance(cache, db_api, store, workers=2)
        made.append(maintenance)
        return maintenance

    yield make
    for maintenance in made:
        maintenance.cache.close()


def add_image(store, image_id, size=5000, **values):
    """An active image in the database, its data in the store (when the store takes the id)."""
    data = helpers.body(size, image_id.encode())
    db_api.image_create(admin_context(), {"id": image_id, "status": "active", "size": size,
                                          **helpers.hashes(data), **values})
    if image_ids.is_store_id(image_id):
        store.add(image_id, io.BytesIO(data))
    return data


def cached(maintenance):
    return [entry["image_id"] for entry in maintenance.cache.get_cached_images()]


# Ids the cache accepts (the file store does not) that need quoting in an "in:" filter.
ODD_IDS = ["with,comma", 'with"quote', "with\\backslash", "with space", "plain-id"]


def test_evict_gone_on_odd_ids_keeps_the_active_ones(make_node, store):
    node = make_node()
    for image_id in ODD_IDS:
        data = add_image(store, image_id)
        assert node.cache.cache_image_iter(image_id, [data], len(data), **helpers.hashes(data))
    assert node.evict_gone() == 0 and cached(node) == sorted(ODD_IDS)
    db_api.image_destroy(admin_context(), "with,comma")
    assert node.evict_gone() == 1
    assert cached(node) == sorted(set(ODD_IDS) - {"with,comma"})


def test_evict_gone_batches_many_images(make_node, store):
    node = make_node()
    ids = ["img-%03d" % index for index in range(250)]
    for image_id in ids:
        add_image(store, image_id, size=100)
        node.cache.queue_image(image_id)
    assert node.prefetch_once().fetched == 250
    for image_id in ids[::50]:
        db_api.image_update(admin_context(), image_id, {"status": "deactivated"})
    assert node.evict_gone() == 5
    assert len(cached(node)) == 245


def test_centralized_nodes_each_evict_what_another_node_deleted(make_node, store):
    node_a, node_b = make_node(NODE_A), make_node(NODE_B)
    for image_id in ("keep", "drop"):
        add_image(store, image_id)
        for node in (node_a, node_b):
            node.cache.queue_image(image_id)
    for node in (node_a, node_b):
        assert node.prefetch_once().fetched == 2
    assert cache_api.get_cached_nodes("drop") == [NODE_A, NODE_B]

    db_api.image_destroy(admin_context(), "drop")   # through node B's API, say
    assert sorted(cache_api.get_stale_cached_images(NODE_A)) == ["drop"]
    assert node_a.evict_gone() == 1 and cached(node_a) == ["keep"]
    assert cache_api.get_cached_nodes("drop") == [NODE_B]
    assert node_b.evict_gone() == 1 and cache_api.get_cached_nodes("drop") == []
    assert cache_api.get_cached_nodes("keep") == [NODE_A, NODE_B]


def test_centralized_rows_without_files_are_evicted_too(make_node, store):
    node = make_node(NODE_A)
    add_image(store, "ghost")
    node.cache.queue_image("ghost")
    node.prefetch_once()
    os.unlink(node.cache.driver.get_image_filepath("ghost"))   # removed by hand
    db_api.image_update(admin_context(), "ghost", {"status": "deactivated"})
    assert node.evict_gone() == 1
    assert cache_api.get_cached_nodes("ghost") == []


def test_prefetch_on_every_database(make_node, store):
    node = make_node(NODE_A)
    good = add_image(store, "good")
    add_image(store, "bad")
    store.add("bad", io.BytesIO(b"x" * 5000))   # same size, other bytes
    for image_id in ("good", "bad", "unknown"):
        node.cache.queue_image(image_id)
    result = node.prefetch_once()
    assert (result.fetched, result.failed, result.dropped) == (1, 1, 1)
    assert cached(node) == ["good"] and cache_api.get_cached_nodes("good") == [NODE_A]
    with node.cache.open_hit("good") as handle:
        assert handle.read() == good
