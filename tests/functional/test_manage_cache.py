"""glance-cache-mw-manage cache list|queue|delete|clear|nodes|stats as a real command, on every
database, without a server: table output for people, --format json for scripts."""

import json
import types

import pytest

from glance_cache_mw.db import api as db_api, fill_claims, migration
from tests.functional.maintenance_env import ADMIN, Node


@pytest.fixture
def node(db, tmp_path):
    return Node(tmp_path / "node-a", db)


@pytest.fixture
def no_db_node(tmp_path):
    """A node for checks that never reach the database (run once, not per backend)."""
    return Node(tmp_path / "node-a", types.SimpleNamespace(url="sqlite:///%s"
                                                            % (tmp_path / "unused.sqlite")))


def manage(node, *args):
    return node.run("manage", "cache", *args)


def prefetched(node, *image_ids):
    for image_id in image_ids:
        node.add_image(image_id, size=1000)
    node.queue(*image_ids)
    result = node.run("prefetcher")
    assert result.returncode == 0, result.stderr


def test_list_as_a_table_and_as_json(node):
    prefetched(node, "cached-1", "cached-2")
    node.add_image("waiting")
    node.queue("waiting")

    table = manage(node, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "Cached images (2, 2000 bytes):"
    assert lines[1].split() == ["ID", "SIZE", "HITS", "LAST", "ACCESSED", "(UTC)", "CACHED",
                                "AT", "(UTC)"]
    assert lines[2].split()[:3] == ["cached-1", "1000", "0"]
    assert lines[3].split()[:3] == ["cached-2", "1000", "0"]
    assert lines[4:] == ["Queued images (1, oldest first):", "ID", "waiting"]

    listed = json.loads(manage(node, "list", "--format", "json").stdout)
    assert [entry["image_id"] for entry in listed["cached_images"]] == ["cached-1", "cached-2"]
    assert {"size", "hits", "last_accessed", "last_modified"} <= set(listed["cached_images"][0])
    assert listed["queued_images"] == ["waiting"]


def test_queue_checks_the_image_in_the_database(node):
    node.add_image("ready")
    node.add_image("saving", status="saving")
    node.add_image("gone")
    db_api.image_destroy(ADMIN, "gone")

    queued = manage(node, "queue", "ready")
    assert queued.returncode == 0 and queued.stdout.strip() == "image ready: queued"
    again = manage(node, "queue", "ready", "--format", "json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"image_id": "ready", "queued": False,
                                        "state": "already queued"}

    for image_id, problem in (("saving", "is saving"), ("gone", "is deleted"),
                              ("nonesuch", "does not exist")):
        result = manage(node, "queue", image_id)
        assert result.returncode == 1
        assert result.stderr.strip().startswith("error: image %s %s" % (image_id, problem))
    assert json.loads(manage(node, "list", "--format", "json").stdout)["queued_images"] == [
        "ready"]


@pytest.mark.parametrize("command,bad_id", [("queue", "../etc"), ("delete", "a" * 37),
                                            ("nodes", ".prune.lock"), ("delete", "queue")])
def test_malformed_ids_are_refused_naming_the_id(no_db_node, command, bad_id):
    result = manage(no_db_node, command, bad_id)
    assert result.returncode == 2
    assert repr(bad_id) in result.stderr and "Traceback" not in result.stderr


def test_delete_removes_a_cached_or_queued_image(node):
    prefetched(node, "cached")
    node.add_image("waiting")
    node.queue("waiting")

    deleted = manage(node, "delete", "cached")
    assert deleted.returncode == 0 and deleted.stdout.strip() == \
        "image cached: removed from the cache"
    as_json = manage(node, "delete", "waiting", "--format", "json")
    assert json.loads(as_json.stdout) == {"image_id": "waiting", "deleted_cached": False,
                                          "deleted_queued": True}
    unknown = manage(node, "delete", "cached")
    assert unknown.returncode == 1
    assert "image cached is neither cached nor queued" in unknown.stderr
    assert node.cached_ids() == []


@pytest.mark.parametrize("target,left_cached,left_queued", [
    ("cache", [], ["waiting"]), ("queue", ["cached"], []), (None, [], [])])
def test_clear_with_a_target(node, target, left_cached, left_queued):
    prefetched(node, "cached")
    node.add_image("waiting")
    node.queue("waiting")
    args = ("clear", "--format", "json") + (("--target", target) if target else ())
    result = manage(node, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "cached_images_deleted": 0 if left_cached else 1,
        "queued_images_deleted": 0 if left_queued else 1}
    listed = json.loads(manage(node, "list", "--format", "json").stdout)
    assert [entry["image_id"] for entry in listed["cached_images"]] == left_cached
    assert listed["queued_images"] == left_queued


def test_clear_as_a_table(node):
    prefetched(node, "cached")
    result = manage(node, "clear")
    assert result.returncode == 0 and result.stdout.strip() == \
        "removed 1 cached and 0 queued images"


def test_clear_refuses_an_unknown_target(no_db_node):
    result = manage(no_db_node, "clear", "--target", "both")
    assert result.returncode == 2 and "invalid choice: 'both'" in result.stderr


def test_nodes_needs_the_centralized_db_driver(no_db_node):
    result = manage(no_db_node, "nodes", "anything")
    assert result.returncode == 2
    assert "needs image_cache_driver = centralized_db" in result.stderr


def test_nodes_lists_every_node_caching_the_image(db, tmp_path):
    node_a = Node(tmp_path / "a", db, "centralized_db", "http://node-a:9292")
    node_b = Node(tmp_path / "b", db, "centralized_db", "http://node-b:9292")
    prefetched(node_a, "shared")
    node_b.queue("shared")
    assert node_b.run("prefetcher").returncode == 0

    table = manage(node_a, "nodes", "shared")
    assert table.returncode == 0, table.stderr
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["NODE", "STATE"], ["http://node-a:9292", "cached"], ["http://node-b:9292", "cached"]]
    as_json = json.loads(manage(node_b, "nodes", "shared", "--format", "json").stdout)
    assert as_json == {"image_id": "shared", "filling": None,
                       "nodes": ["http://node-a:9292", "http://node-b:9292"]}
    nowhere = manage(node_a, "nodes", "elsewhere")
    assert nowhere.returncode == 0 and "not cached on any node" in nowhere.stdout


def test_nodes_shows_the_node_filling_the_image_now(db, tmp_path):
    """A cluster's fill claim (db/fill_claims.py): shown while its lease runs, not after."""
    node_a = Node(tmp_path / "a", db, "centralized_db", "http://node-a:9292")
    prefetched(node_a, "shared")
    fill_claims.claim("shared", "http://node-c:9292", 600, engine=db.engine)
    fill_claims.claim("cold", "http://node-b:9292", 600, engine=db.engine)

    table = manage(node_a, "nodes", "shared")
    assert table.returncode == 0, table.stderr
    assert [line.split(None, 1) for line in table.stdout.splitlines()] == [
        ["NODE", "STATE"], ["http://node-a:9292", "cached"],
        ["http://node-c:9292", "filling from the origin"]]
    cold = manage(node_a, "nodes", "cold")
    assert "not cached on any node" in cold.stdout
    assert cold.stdout.splitlines()[-1].split(None, 1) == ["http://node-b:9292",
                                                            "filling from the origin"]
    as_json = json.loads(manage(node_a, "nodes", "cold", "--format", "json").stdout)
    assert as_json == {"image_id": "cold", "nodes": [], "filling": "http://node-b:9292"}

    fill_claims.release("cold", "http://node-b:9292", engine=db.engine)
    as_json = json.loads(manage(node_a, "nodes", "cold", "--format", "json").stdout)
    assert as_json["filling"] is None


def test_db_commands_still_work_next_to_cache_commands(node):
    result = node.run("manage", "db", "version")
    assert result.returncode == 0 and result.stdout.strip() == migration.head()


def hit(node, image_id, times):
    cache = node.cache()
    try:
        for _ in range(times):
            cache.open_hit(image_id).close()
    finally:
        cache.close()   # flushes the batched hit counts


def test_stats_per_node_and_cluster_wide(db, tmp_path):
    node_a = Node(tmp_path / "a", db, "centralized_db", "http://node-a:9292")
    node_b = Node(tmp_path / "b", db, "centralized_db", "http://node-b:9292")
    prefetched(node_a, "small", "big")
    node_b.add_image("other", size=5000)
    node_b.queue("other")
    assert node_b.run("prefetcher").returncode == 0
    hit(node_a, "small", 3)
    hit(node_a, "big", 1)
    hit(node_b, "other", 2)
    result = manage(node_a, "stats", "--format", "json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    local = stats["cache"]
    assert (local["entries"], local["size"], local["max_size"]) == (2, 2000, 10 * 1024 * 1024)
    assert local["fullness"] == 2000 / (10 * 1024 * 1024)
    assert [(e["image_id"], e["hits"]) for e in local["top_by_hits"]] == [("small", 3),
                                                                          ("big", 1)]
    assert [(e["image_id"], e["bytes_saved"]) for e in local["top_by_bytes_saved"]] == [
        ("small", 3000), ("big", 1000)]
    assert local["oldest_entry"]["image_id"] in ("small", "big")
    # No server ran: no download counters yet.
    assert stats["downloads"] == {"HIT": 0, "MISS": 0, "COALESCED": 0, "BYPASS": 0, "PEER": 0}
    assert stats["hit_ratio"] is None
    cluster = stats["cluster"]
    assert [(n["node_url"], n["entries"], n["size"], n["hits"], n["bytes_saved"])
            for n in cluster["nodes"]] == [("http://node-a:9292", 2, 2000, 4, 4000),
                                           ("http://node-b:9292", 1, 5000, 2, 10000)]
    assert (cluster["entries"], cluster["hits"], cluster["bytes_saved"]) == (3, 6, 14000)
    assert all(n["oldest"] is not None for n in cluster["nodes"])

    table = manage(node_a, "stats")
    assert table.returncode == 0, table.stderr
    assert "hit ratio -" in table.stdout
    assert "Cache: 2 images, 2000 of 10485760 bytes" in table.stdout
    assert "Cluster (centralized_db): 3 images, 7000 bytes, 6 hits, 14000 bytes saved" \
        in table.stdout


def test_stats_of_a_sqlite_node_has_no_cluster_part(node):
    prefetched(node, "one")
    stats = json.loads(manage(node, "stats", "--format", "json").stdout)
    assert "cluster" not in stats and stats["cache"]["entries"] == 1
    assert stats["cache"]["top_by_hits"] == []
