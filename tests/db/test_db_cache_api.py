"""The shared-cache DB functions on SQLite, PostgreSQL and MariaDB (the ``db`` fixture)."""

import datetime
import random
import threading
import time

import pytest
import sqlalchemy as sa

from glance_cache_mw import exception
from glance_cache_mw.db import cache_api, models
from glance_cache_mw.db import engine as db_engine

NODE_A = "http://node-a:9292"
NODE_B = "http://node-b:9292"
UTC = datetime.timezone.utc
# Whole seconds: MariaDB's DATETIME keeps no fraction.
T0 = datetime.datetime(2026, 1, 2, 3, 4, 5)


def _at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def _epoch(naive_utc):
    return naive_utc.replace(tzinfo=UTC).timestamp()


def _image_id(n):
    return "00000000-0000-0000-0000-%012d" % n


@pytest.fixture
def nodes(db):
    cache_api.node_reference_create(NODE_A)
    cache_api.node_reference_create(NODE_B)
    return db


@pytest.fixture
def local_tz_far_from_utc(monkeypatch):
    """A local time zone 5½ hours off UTC, so a local-time reading of naive UTC shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_node_reference_create_returns_the_row_and_ignores_duplicates(db):
    first = cache_api.node_reference_create(NODE_A)
    again = cache_api.node_reference_create(NODE_A)
    assert first == again
    assert first["node_reference_url"] == NODE_A
    assert cache_api.node_reference_get_by_url(NODE_A) == first
    other = cache_api.node_reference_create(NODE_B)
    assert other["node_reference_id"] != first["node_reference_id"]


def test_node_reference_get_by_url_unknown_is_not_found(db):
    with pytest.raises(exception.NotFound):
        cache_api.node_reference_get_by_url(NODE_A)


def test_functions_accept_an_explicit_engine(db):
    db_engine.dispose()  # nothing configured: only the engine passed in can work
    engine = db_engine.create_engine(db.url)
    try:
        cache_api.node_reference_create(NODE_A, engine=engine)
        cache_api.insert_cache_details("img", NODE_A, 5, engine=engine)
        assert cache_api.is_image_cached_for_node("img", NODE_A, engine=engine)
        with pytest.raises(exception.DBNotConfigured):
            cache_api.get_cached_images(NODE_A)
    finally:
        engine.dispose()


def test_insert_for_unknown_node_is_not_found(db):
    with pytest.raises(exception.NotFound):
        cache_api.insert_cache_details("img", NODE_A, 10)
    with pytest.raises(exception.NotFound):
        cache_api.insert_many_cache_details(NODE_A, [{"image_id": "img", "size": 1}])


def test_insert_cache_details_and_duplicates_are_ignored(nodes):
    cache_api.insert_cache_details("img", NODE_A, 10, checksum="c" * 32, last_accessed=_at(0))
    cache_api.insert_cache_details("img", NODE_A, 99, last_accessed=_at(50))  # ignored
    [entry] = cache_api.get_cached_images(NODE_A)
    assert entry["image_id"] == "img"
    assert entry["size"] == 10
    assert entry["checksum"] == "c" * 32
    assert entry["hits"] == 0
    assert entry["last_accessed"] == _epoch(_at(0))
    assert isinstance(entry["id"], int)
    assert cache_api.get_cached_images(NODE_B) == []


def test_insert_with_replace_overwrites_the_row(nodes):
    cache_api.insert_cache_details("img", NODE_A, 10, last_accessed=_at(0))
    cache_api.update_hit_count("img", NODE_A, accessed_at=_at(5))
    cache_api.insert_cache_details("img", NODE_B, 10, last_accessed=_at(0))
    cache_api.insert_cache_details("img", NODE_A, 20, checksum="d" * 32, last_accessed=_at(9),
                                   last_modified=_at(9), replace=True)
    entry = cache_api.get_cached_image("img", NODE_A)
    assert (entry["size"], entry["hits"], entry["checksum"]) == (20, 0, "d" * 32)
    assert entry["last_accessed"] == entry["last_modified"] == _epoch(_at(9))
    assert cache_api.get_cached_image("img", NODE_B)["size"] == 10
    assert cache_api.get_cached_image("missing", NODE_A) is None
    assert len(cache_api.get_cached_images(NODE_A)) == 1


def test_insert_defaults_times_to_now(nodes):
    before = time.time()
    cache_api.insert_cache_details("img", NODE_A, 1)
    [entry] = cache_api.get_cached_images(NODE_A)
    assert before - 1 <= entry["last_accessed"] <= time.time() + 1
    assert entry["last_modified"] == entry["last_accessed"]


def test_times_accept_epoch_and_aware_datetimes(nodes):
    cache_api.insert_cache_details("epoch", NODE_A, 1, last_accessed=_epoch(_at(1)))
    aware = _at(2).replace(tzinfo=UTC).astimezone(datetime.timezone(datetime.timedelta(hours=-7)))
    cache_api.insert_cache_details("aware", NODE_A, 1, last_accessed=aware)
    times = {e["image_id"]: e["last_accessed"] for e in cache_api.get_cached_images(NODE_A)}
    assert times == {"epoch": _epoch(_at(1)), "aware": _epoch(_at(2))}


def test_naive_utc_is_not_read_as_local_time(nodes, local_tz_far_from_utc):
    # Glance's _cached_image_format used .timestamp() on naive UTC: off by the UTC offset (W19).
    cache_api.insert_cache_details("img", NODE_A, 1, last_accessed=_at(0), last_modified=_at(0))
    [entry] = cache_api.get_cached_images(NODE_A)
    expected = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert entry["last_accessed"] == expected
    assert entry["last_modified"] == expected


def test_get_cached_images_is_ordered_by_image_id_and_per_node(nodes):
    for image_id in ("c", "a", "b"):
        cache_api.insert_cache_details(image_id, NODE_A, 1)
    cache_api.insert_cache_details("z", NODE_B, 1)
    assert [e["image_id"] for e in cache_api.get_cached_images(NODE_A)] == ["a", "b", "c"]
    assert [e["image_id"] for e in cache_api.get_cached_images(NODE_B)] == ["z"]
    assert cache_api.get_cached_images("http://unknown") == []


def test_update_hit_count(nodes):
    cache_api.insert_cache_details("img", NODE_A, 1, last_accessed=_at(0))
    cache_api.insert_cache_details("img", NODE_B, 1, last_accessed=_at(0))
    [before] = cache_api.get_cached_images(NODE_A)
    assert cache_api.update_hit_count("img", NODE_A, accessed_at=_at(30))
    assert cache_api.update_hit_count("img", NODE_A)
    assert cache_api.get_hit_count("img", NODE_A) == 2
    assert cache_api.get_hit_count("img", NODE_B) == 0
    [entry] = cache_api.get_cached_images(NODE_A)
    assert entry["last_accessed"] > _epoch(_at(30))
    assert entry["last_modified"] == before["last_modified"]


def test_update_hit_count_without_row_changes_nothing(nodes):
    assert cache_api.update_hit_count("missing", NODE_A) is False
    assert cache_api.update_hit_count("missing", "http://unknown") is False
    assert cache_api.get_cached_images(NODE_A) == []


def test_update_hit_counts_records_a_batch(nodes):
    for image_id in ("a", "b", "c"):
        cache_api.insert_cache_details(image_id, NODE_A, 1, last_accessed=_at(100))
    hits = {"a": (3, _at(130)), "b": (1, _at(120)), "c": (1, _at(50)), "gone": (2, _at(200))}
    assert cache_api.update_hit_counts(NODE_A, hits) == 3
    entries = {e["image_id"]: e for e in cache_api.get_cached_images(NODE_A)}
    assert {k: e["hits"] for k, e in entries.items()} == {"a": 3, "b": 1, "c": 1}
    assert entries["a"]["last_accessed"] == _epoch(_at(130))
    assert entries["b"]["last_accessed"] == _epoch(_at(120))
    # A late batch with older times counts its hits but never moves last_accessed back.
    assert entries["c"]["last_accessed"] == _epoch(_at(100))


def test_update_hit_counts_edge_cases(nodes):
    assert cache_api.update_hit_counts(NODE_A, {}) == 0
    assert cache_api.update_hit_counts("http://unknown", {"a": (1, None)}) == 0


def test_update_hit_counts_larger_than_one_chunk(nodes):
    ids = [_image_id(n) for n in range(1200)]
    cache_api.insert_many_cache_details(NODE_A, [{"image_id": i, "size": 1} for i in ids])
    hits = {i: (2 if n < 10 else 1, None) for n, i in enumerate(ids)}
    assert cache_api.update_hit_counts(NODE_A, hits) == 1200
    assert cache_api.get_hit_count(ids[0], NODE_A) == 2
    assert cache_api.get_hit_count(ids[-1], NODE_A) == 1


def test_concurrent_hit_batches_lose_nothing(nodes):
    ids = [_image_id(n) for n in range(40)]
    cache_api.insert_many_cache_details(NODE_A, [{"image_id": i, "size": 1} for i in ids])
    errors = []

    def record(seed):
        rng = random.Random(seed)
        try:
            for _ in range(10):
                batch = {}
                for _ in range(30):
                    image_id = rng.choice(ids)
                    batch[image_id] = (batch.get(image_id, (0, None))[0] + 1, None)
                cache_api.update_hit_counts(NODE_A, batch)
        except Exception as err:  # collected and reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=record, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(e["hits"] for e in cache_api.get_cached_images(NODE_A)) == 4 * 10 * 30


def test_get_hit_count_without_row_is_zero(nodes):
    assert cache_api.get_hit_count("missing", NODE_A) == 0


def test_delete_cached_image_only_touches_this_node(nodes):
    cache_api.insert_cache_details("img", NODE_A, 1)
    cache_api.insert_cache_details("img", NODE_B, 1)
    assert cache_api.delete_cached_image("img", NODE_A) is True
    assert cache_api.delete_cached_image("img", NODE_A) is False
    assert not cache_api.is_image_cached_for_node("img", NODE_A)
    assert cache_api.is_image_cached_for_node("img", NODE_B)


def test_delete_cached_images_in_one_call(nodes):
    ids = [_image_id(n) for n in range(1100)]
    cache_api.insert_many_cache_details(NODE_A, [{"image_id": i, "size": 1} for i in ids])
    cache_api.insert_cache_details(ids[0], NODE_B, 1)
    assert cache_api.delete_cached_images(ids[:1050] + ["missing"], NODE_A) == 1050
    assert [e["image_id"] for e in cache_api.get_cached_images(NODE_A)] == ids[1050:]
    assert cache_api.is_image_cached_for_node(ids[0], NODE_B)
    assert cache_api.delete_cached_images(ids, "http://unknown") == 0


def test_delete_all_cached_images_only_this_node(nodes):
    for image_id in ("a", "b"):
        cache_api.insert_cache_details(image_id, NODE_A, 1)
    cache_api.insert_cache_details("a", NODE_B, 1)
    assert cache_api.delete_all_cached_images(NODE_A) == 2
    assert cache_api.get_cached_images(NODE_A) == []
    assert [e["image_id"] for e in cache_api.get_cached_images(NODE_B)] == ["a"]
    assert cache_api.delete_all_cached_images(NODE_A) == 0


def test_least_recently_accessed_is_none_when_empty(nodes):
    # Glance's driver returned (None, 0) here and its prune loop never ended (W2).
    assert cache_api.get_least_recently_accessed(NODE_A) is None
    cache_api.insert_cache_details("other-node", NODE_B, 1)
    assert cache_api.get_least_recently_accessed(NODE_A) is None
    assert cache_api.get_least_recently_accessed("http://unknown") is None
    assert cache_api.get_least_recently_accessed_entries(NODE_A) == []


def test_least_recently_accessed_order(nodes):
    cache_api.insert_cache_details("new", NODE_A, 1, last_accessed=_at(30))
    cache_api.insert_cache_details("old", NODE_A, 2, last_accessed=_at(10))
    cache_api.insert_cache_details("tie-first", NODE_A, 3, last_accessed=_at(20))
    cache_api.insert_cache_details("tie-second", NODE_A, 4, last_accessed=_at(20))
    cache_api.insert_cache_details("elsewhere", NODE_B, 5, last_accessed=_at(0))
    assert cache_api.get_least_recently_accessed(NODE_A) == "old"
    entries = cache_api.get_least_recently_accessed_entries(NODE_A)
    assert [(e["image_id"], e["size"]) for e in entries] == [
        ("old", 2), ("tie-first", 3), ("tie-second", 4), ("new", 1)]
    limited = cache_api.get_least_recently_accessed_entries(NODE_A, limit=2)
    assert [e["image_id"] for e in limited] == ["old", "tie-first"]
    cache_api.update_hit_count("old", NODE_A, accessed_at=_at(40))
    assert cache_api.get_least_recently_accessed(NODE_A) == "tie-first"


def test_get_cached_nodes(nodes):
    assert cache_api.get_cached_nodes("img") == []
    cache_api.insert_cache_details("img", NODE_B, 1)
    cache_api.insert_cache_details("img", NODE_A, 1)
    cache_api.insert_cache_details("other", NODE_A, 1)
    assert cache_api.get_cached_nodes("img") == [NODE_A, NODE_B]
    assert cache_api.get_cached_nodes("other") == [NODE_A]


def test_insert_many_cache_details(nodes):
    cache_api.insert_cache_details(_image_id(0), NODE_A, 7)
    entries = [{"image_id": _image_id(n), "size": n, "hits": n % 3,
                "last_accessed": _at(n), "checksum": None} for n in range(6000)]
    cache_api.insert_many_cache_details(NODE_A, entries)
    cached = cache_api.get_cached_images(NODE_A)
    assert len(cached) == 6000
    assert cached[0]["size"] == 7  # the existing row is left alone
    assert cached[5999] == dict(cached[5999], size=5999, hits=5999 % 3,
                                last_accessed=_epoch(_at(5999)))
    cache_api.insert_many_cache_details(NODE_A, [])


def test_node_reference_delete_forgets_the_node_and_its_rows(nodes):
    cache_api.insert_cache_details("a", NODE_A, 1)
    cache_api.insert_cache_details("a", NODE_B, 1)
    assert cache_api.node_reference_delete(NODE_A) == 1
    with pytest.raises(exception.NotFound):
        cache_api.node_reference_get_by_url(NODE_A)
    assert cache_api.get_cached_nodes("a") == [NODE_B]
    assert cache_api.node_reference_delete(NODE_A) == 0


def test_get_stale_cached_images(nodes):
    rows = [("active", "active", False), ("deleted", "deleted", True),
            ("deactivated", "deactivated", False), ("pending", "pending_delete", True)]
    with db_engine.writer() as conn:
        conn.execute(models.images.insert(), [
            {"id": image_id, "status": status, "deleted": deleted, "visibility": "public"}
            for image_id, status, deleted in rows])
    for image_id in ("active", "deleted", "deactivated", "pending", "never-existed"):
        cache_api.insert_cache_details(image_id, NODE_A, 1)
    cache_api.insert_cache_details("deleted", NODE_B, 1)
    assert cache_api.get_stale_cached_images(NODE_A) == [
        "deactivated", "deleted", "never-existed", "pending"]
    assert cache_api.get_stale_cached_images(NODE_B) == ["deleted"]


def test_rows_are_plain_columns(nodes):
    cache_api.insert_cache_details("img", NODE_A, 3)
    with db_engine.reader() as conn:
        row = conn.execute(sa.select(models.cached_images)).one()
    assert row.last_accessed.tzinfo is None  # stored as naive UTC, like Glance
