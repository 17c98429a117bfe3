"""The centralized_db driver on SQLite, PostgreSQL and MariaDB: the whole driver contract
suite (tests/unit/ and tests/functional/test_image_cache_drivers.py, re-collected here with this
module's fixtures) plus
what only a shared database has: several nodes, each with its own rows."""

import dataclasses
import inspect
import os

import pytest

from glance_cache_mw import config as cfg
from glance_cache_mw import exception
from glance_cache_mw.db import cache_api, models
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.image_cache import ImageCache, drivers
from tests.functional import test_image_cache_drivers as process_contract
from tests.unit import cache_helpers as helpers
from tests.unit import test_image_cache_drivers as contract

NODE_A = "http://node-a:9292"
NODE_B = "http://node-b:9292"

# Every contract test that works on a configured driver runs here once per database.
for _name, _test in [*vars(contract).items(), *vars(process_contract).items()]:
    if _name.startswith("test_") and "driver" in inspect.signature(_test).parameters:
        globals()[_name] = _test


@pytest.fixture
def shared_db(scratch_db):
    """An emptied database that no global engine points at: drivers open their own."""
    scratch_db.empty()
    return scratch_db


def node_settings(database, tmp_path, node_url, **overrides):
    return helpers.settings(tmp_path / node_url.split("//")[1].split(":")[0], "centralized_db",
                            sql_connection=database.url, worker_self_reference_url=node_url,
                            **overrides)


@pytest.fixture
def settings(shared_db, tmp_path):
    return node_settings(shared_db, tmp_path, NODE_A)


@pytest.fixture
def driver(settings):
    instance = drivers.load_driver("centralized_db", settings)
    yield instance
    instance.close()


@pytest.fixture
def node_b(shared_db, tmp_path):
    instance = drivers.load_driver("centralized_db", node_settings(shared_db, tmp_path, NODE_B))
    yield instance
    instance.close()


def store(driver, image_id, data=b"data"):
    with driver.open_for_write(image_id, len(data)) as writer:
        writer.write(data)


def rows(driver):
    return {e["image_id"]: e for e in cache_api.get_cached_images(driver.node_url,
                                                                  engine=driver.engine)}


# -- configuration -------------------------------------------------------------------------

def test_configure_registers_the_node(driver):
    node = cache_api.node_reference_get_by_url(NODE_A, engine=driver.engine)
    assert node["node_reference_url"] == NODE_A


def test_configure_without_node_url_is_refused(shared_db, tmp_path):
    settings = node_settings(shared_db, tmp_path, NODE_A)
    del settings["worker_self_reference_url"]
    with pytest.raises(exception.BadDriverConfiguration) as err:
        drivers.load_driver("centralized_db", settings)
    assert "worker_self_reference_url is not set" in str(err.value)


def test_configure_without_sql_connection_is_refused(shared_db, tmp_path):
    conf = cfg.Config.from_mapping(node_settings(shared_db, tmp_path, NODE_A))
    with pytest.raises(exception.BadDriverConfiguration) as err:
        drivers.load_driver("centralized_db", dataclasses.replace(conf, sql_connection=None))
    assert "sql_connection is not set" in str(err.value)


@pytest.mark.parametrize("url, reason", [
    ("not a url", "cannot be used"),
    ("oracle://scott@127.0.0.1/orcl", "cannot be used"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot register node"),
])
def test_configure_with_an_unusable_database_is_refused(tmp_path, url, reason):
    settings = helpers.settings(tmp_path, "centralized_db", sql_connection=url,
                                worker_self_reference_url=NODE_A)
    with pytest.raises(exception.BadDriverConfiguration) as err:
        drivers.load_driver("centralized_db", settings)
    assert reason in str(err.value)


def test_configure_on_a_database_without_schema_says_to_sync(tmp_path):
    settings = helpers.settings(tmp_path, "centralized_db",
                                sql_connection="sqlite:///%s" % (tmp_path / "empty.sqlite"),
                                worker_self_reference_url=NODE_A)
    with pytest.raises(exception.BadDriverConfiguration) as err:
        drivers.load_driver("centralized_db", settings)
    assert "db sync" in str(err.value) and "node_reference" in str(err.value)


def test_the_process_engine_is_shared_not_disposed(db, tmp_path):
    instance = drivers.load_driver("centralized_db", node_settings(db, tmp_path, NODE_A))
    assert instance.engine is db_engine.get_engine()
    store(instance, "img")
    instance.close()
    assert cache_api.is_image_cached_for_node("img", NODE_A)  # the global engine still works


SESSION_ID_SQL = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()",
                  "sqlite": None}


def _session_id(driver, backend):
    if SESSION_ID_SQL[backend] is None:
        return None
    with driver.engine.connect() as conn:
        return conn.exec_driver_sql(SESSION_ID_SQL[backend]).scalar()


def _use_in_child(conn, driver):
    for n in range(5):
        store(driver, "child-%d" % n)
    nodes = driver.get_cached_nodes("child-4")
    driver.close()   # disposing the pool must not close the parent's connections
    conn.send(("ok", nodes))


def test_a_forked_child_does_not_share_the_parents_connections(driver, shared_db):
    store(driver, "parent-0")   # the pool now holds an open connection
    before = _session_id(driver, shared_db.backend)
    process, conn = helpers.run_child(_use_in_child, driver)
    assert helpers.recv(conn) == ("ok", [NODE_A])
    process.join(helpers.WAIT_S)
    conn.close()
    assert process.exitcode == 0
    # Same server session: the child neither used nor closed the parent's connection.
    assert _session_id(driver, shared_db.backend) == before
    store(driver, "parent-1")
    assert len(driver.get_cached_images()) == 7


# -- one node's bookkeeping ----------------------------------------------------------------

def test_commit_records_size_and_a_fresh_row(driver):
    store(driver, "img", b"12345")
    driver.record_hit("img")
    driver.flush_hits()
    assert rows(driver)["img"]["hits"] == 1
    # The file vanishes behind the driver's back; a new copy must not inherit the old row.
    os.unlink(driver.get_image_filepath("img"))
    store(driver, "img", b"1234567")
    row = rows(driver)["img"]
    assert (row["size"], row["hits"]) == (7, 0)


def test_a_hit_on_an_untracked_file_gives_it_a_row(driver):
    with open(os.path.join(driver.base_dir, "orphan"), "wb") as handle:
        handle.write(b"123")
    store(driver, "tracked")
    for image_id in ("orphan", "orphan", "tracked", "evicted"):
        driver.record_hit(image_id)
    driver.flush_hits()
    found = rows(driver)
    assert (found["orphan"]["size"], found["orphan"]["hits"]) == (3, 2)
    assert found["tracked"]["hits"] == 1
    assert "evicted" not in found


def test_commit_registers_the_node_again_if_it_was_removed(driver):
    cache_api.node_reference_delete(NODE_A, engine=driver.engine)
    store(driver, "img")
    assert cache_api.get_cached_nodes("img", engine=driver.engine) == [NODE_A]


def test_prune_terminates_when_this_node_has_no_rows(shared_db, tmp_path, node_b):
    # Glance's driver looped forever here: files on disk, no rows, LRU (None, 0) (W2).
    cache = ImageCache.from_config(node_settings(shared_db, tmp_path, NODE_A,
                                                 image_cache_max_size=0))
    try:
        for image_id in ("x", "y"):
            with open(cache.driver.get_image_filepath(image_id), "wb") as handle:
                handle.write(b"abc")
        store(node_b, "x")
        assert cache.prune() == (2, 6)
        assert cache.get_cached_images() == []
    finally:
        cache.close()
    assert node_b.is_cached("x") and list(rows(node_b)) == ["x"]


def test_switching_from_the_sqlite_driver_keeps_hits_and_lru_order(shared_db, tmp_path):
    settings = node_settings(shared_db, tmp_path, NODE_A)
    old = drivers.load_driver("sqlite", dict(settings, image_cache_driver="sqlite"))
    try:
        for image_id in ("first", "second", "third", "evicted"):
            store(old, image_id)
        old.record_hit("first")
        old.record_hit("first")
        old.flush_hits()
        os.unlink(old.get_image_filepath("evicted"))   # a row without its file
        expected = {e["image_id"]: e for e in old.get_cached_images()}
    finally:
        old.close()
    with open(os.path.join(settings["image_cache_dir"], "untracked"), "wb") as handle:
        handle.write(b"x")
    for _ in range(2):   # the second start must not import again or double anything
        new = drivers.load_driver("centralized_db", settings)
        try:
            found = rows(new)
            assert sorted(found) == ["first", "second", "third"]
            assert found["first"]["hits"] == 2
            for image_id, entry in found.items():
                assert entry["last_accessed"] == pytest.approx(
                    expected[image_id]["last_accessed"], abs=1e-3)
            order = [e.image_id for e in new.get_entries_by_last_accessed()]
            assert [i for i in order if i != "untracked"][-1] == "first"   # hit last
        finally:
            new.close()


# -- several nodes on one database ---------------------------------------------------------

def test_two_nodes_see_each_other_in_get_cached_nodes(driver, node_b):
    store(driver, "both")
    store(node_b, "both")
    store(node_b, "only-b")
    assert driver.get_cached_nodes("both") == [NODE_A, NODE_B]
    assert node_b.get_cached_nodes("both") == [NODE_A, NODE_B]
    assert driver.get_cached_nodes("only-b") == [NODE_B]
    assert driver.get_cached_nodes("nowhere") == []
    assert [e["image_id"] for e in driver.get_cached_images()] == ["both"]
    assert [e["image_id"] for e in node_b.get_cached_images()] == ["both", "only-b"]


def test_hits_count_per_node(driver, node_b):
    store(driver, "img")
    store(node_b, "img")
    for _ in range(3):
        driver.record_hit("img")
    node_b.record_hit("img")
    driver.flush_hits()
    node_b.flush_hits()
    assert driver.get_hit_count("img") == 3
    assert node_b.get_hit_count("img") == 1


def test_each_node_prunes_only_its_own_rows(shared_db, tmp_path, node_b):
    cache = ImageCache.from_config(node_settings(shared_db, tmp_path, NODE_A,
                                                 image_cache_max_size=8))
    try:
        for image_id in ("a1", "a2", "a3"):
            store(cache.driver, image_id)
            store(node_b, image_id)
        assert cache.prune() == (1, 4)
        assert [e["image_id"] for e in cache.get_cached_images()] == ["a2", "a3"]
        assert cache.driver.get_cached_nodes("a1") == [NODE_B]
    finally:
        cache.close()
    assert sorted(rows(node_b)) == ["a1", "a2", "a3"]
    assert all(node_b.is_cached(i) for i in ("a1", "a2", "a3"))


def test_delete_all_and_clean_touch_only_this_node(driver, node_b):
    for image_id in ("a", "b"):
        store(driver, image_id)
        store(node_b, image_id)
    assert driver.delete_all_cached_images() == 2
    assert rows(driver) == {}
    assert sorted(rows(node_b)) == ["a", "b"]
    os.unlink(node_b.get_image_filepath("a"))  # removed by hand: clean drops its row only
    driver.clean()
    node_b.clean()
    assert sorted(rows(node_b)) == ["b"]


def test_stale_images_are_found_through_the_shared_database(driver):
    with db_engine.writer(driver.engine) as conn:
        conn.execute(models.images.insert(), [
            {"id": "live", "status": "active", "visibility": "public"},
            {"id": "gone", "status": "deleted", "deleted": True, "visibility": "public"},
            {"id": "off", "status": "deactivated", "visibility": "public"}])
    for image_id in ("live", "gone", "off"):
        store(driver, image_id)
    assert driver.get_stale_cached_images() == ["gone", "off"]
