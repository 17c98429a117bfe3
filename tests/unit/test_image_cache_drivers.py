"""One contract suite for every cache driver: the seed interface and the directory protocol.
Its tests that run other processes are in tests/functional/test_image_cache_drivers.py."""

import importlib.util
import io
import os
import shutil
import time

import pytest

from glance_cache_mw import exception
from glance_cache_mw.image_cache import drivers
from glance_cache_mw.image_cache.drivers import ondisk
from tests.unit import cache_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER_NAMES = ["sqlite", "xattr"]
if importlib.util.find_spec("glance_cache_mw.image_cache.drivers.centralized_db"):
    DRIVER_NAMES.append("centralized_db")


def _driver_settings(name, tmp_path):
    values = helpers.settings(tmp_path, name)
    if name == "centralized_db":
        from tests import dbfixtures
        database = dbfixtures.ScratchDatabase("sqlite", tmp_path)
        database.engine.dispose()
        values.update(sql_connection=database.url,
                      worker_self_reference_url="http://node-1:9292")
    return values


@pytest.fixture(params=DRIVER_NAMES)
def settings(request, tmp_path):
    if request.param == "xattr" and not helpers.xattr_supported(tmp_path):
        pytest.skip("the filesystem of %s has no user xattrs" % tmp_path)
    return _driver_settings(request.param, tmp_path)


@pytest.fixture
def driver(settings):
    instance = drivers.load_driver(settings["image_cache_driver"], settings)
    yield instance
    instance.close()


def store(driver, image_id, data=b"data"):
    with driver.open_for_write(image_id, len(data)) as writer:
        writer.write(data)


BAD_IDS = ["", "a/b", "..", "../etc", "x..y", "a\0b", "x" * 37, ".hidden", "cache.db",
           "incomplete", "queue", None, 42]


def test_configure_creates_the_directory_protocol(driver):
    for sub in ("incomplete", "invalid", "queue"):
        assert os.path.isdir(os.path.join(driver.base_dir, sub))


def test_unknown_driver_is_a_clear_error(tmp_path):
    with pytest.raises(exception.BadDriverConfiguration) as err:
        drivers.load_driver("sqlite3", helpers.settings(tmp_path))
    assert "image_cache_driver='sqlite3'" in str(err.value)
    assert not os.path.exists(tmp_path / "cache")


def test_driver_names_ignore_case_like_glance(tmp_path):
    driver = drivers.load_driver(" SQLite ", helpers.settings(tmp_path))
    try:
        assert driver.name == "sqlite"
    finally:
        driver.close()


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_ids_are_validated_before_touching_the_filesystem(driver, bad_id):
    for call in (driver.is_cached, driver.is_queued, driver.queue_image,
                 driver.open_for_write, driver.delete_cached_image, driver.get_image_filepath,
                 driver.is_being_cached, driver.delete_queued_image):
        with pytest.raises(ondisk.InvalidImageId):
            call(bad_id)


def test_a_committed_image_is_cached_listed_and_readable(driver):
    store(driver, "img-b", b"bbbb")
    store(driver, "img-a", b"aa")
    assert driver.is_cached("img-a") and not driver.is_cacheable("img-a")
    assert driver.get_image_size("img-b") == 4
    listed = driver.get_cached_images()
    assert [item["image_id"] for item in listed] == ["img-a", "img-b"]
    assert set(listed[0]) == {"image_id", "hits", "last_modified", "last_accessed", "size"}
    assert listed[0]["size"] == 2 and listed[0]["hits"] == 0
    with driver.open_for_read("img-b") as handle:
        assert handle.read() == b"bbbb"
    assert driver.get_hit_count("img-b") == 1
    assert driver.get_hit_count("never-cached") == 0
    assert helpers.listing(os.path.join(driver.base_dir, "incomplete")) == []


def test_hits_are_batched_and_reach_other_instances(driver, settings):
    store(driver, "img", b"x")
    for _ in range(3):
        driver.record_hit("img")
    driver.flush_hits()
    other = drivers.load_driver(settings["image_cache_driver"], settings)
    try:
        assert other.get_hit_count("img") == 3
    finally:
        other.close()


def test_a_failed_write_goes_to_invalid_and_is_never_served(driver):
    with pytest.raises(RuntimeError):
        with driver.open_for_write("img", 10) as writer:
            writer.write(b"half")
            raise RuntimeError("origin failed")
    assert not driver.is_cached("img") and driver.is_cacheable("img")
    assert helpers.listing(os.path.join(driver.base_dir, "invalid")) == ["img"]
    assert driver.get_cached_images() == []


def test_open_for_write_yields_a_writable_binary_file(driver):
    # Code written against Glance's interface (a real file) flushes, tells and closes.
    source = io.BytesIO(b"0123456789" * 1000)
    with driver.open_for_write("img", 10000) as cache_file:
        assert cache_file.writable() and not cache_file.readable()
        assert not cache_file.seekable() and not cache_file.closed
        assert cache_file.write(b"") == 0 and cache_file.tell() == 0
        shutil.copyfileobj(source, cache_file, 3000)
        cache_file.flush()
        assert cache_file.tell() == 10000
        assert os.fstat(cache_file.fileno()).st_size == 10000
        cache_file.close()
        cache_file.close()
        assert cache_file.closed
        for call in (lambda: cache_file.write(b"x"), cache_file.flush, cache_file.tell):
            with pytest.raises(ValueError):
                call()
        assert not driver.is_cached("img")   # published by the block's exit, not close()
    assert driver.is_cached("img") and driver.get_image_size("img") == 10000
    with driver.open_for_read("img") as handle:
        assert handle.read() == source.getvalue()


def test_closing_a_writer_without_commit_discards_it(driver):
    cache_file = driver.open_for_write("img", 4)
    cache_file.write(b"data")
    cache_file.close()
    assert cache_file.closed and cache_file.commit() is False
    assert not driver.is_cached("img") and driver.is_cacheable("img")
    assert helpers.listing(os.path.join(driver.base_dir, "incomplete")) == []


def test_an_exception_after_close_still_invalidates(driver):
    with pytest.raises(RuntimeError):
        with driver.open_for_write("img", 4) as cache_file:
            cache_file.write(b"data")
            cache_file.close()
            raise RuntimeError("checksum mismatch")
    assert not driver.is_cached("img")
    assert helpers.listing(os.path.join(driver.base_dir, "invalid")) == ["img"]


def test_one_writer_per_image(driver):
    writer = driver.open_for_write("img", 4)
    try:
        assert driver.is_being_cached("img") and not driver.is_cacheable("img")
        with pytest.raises(ondisk.AlreadyBeingCached):
            driver.open_for_write("img", 4)
    finally:
        writer.discard()
    assert not driver.is_being_cached("img")
    assert helpers.listing(os.path.join(driver.base_dir, "incomplete")) == []


def test_lru_order_follows_hits(driver):
    assert driver.get_least_recently_accessed() is None
    for image_id in ("first", "second", "third"):
        store(driver, image_id)
    assert driver.get_least_recently_accessed() == ("first", 4)
    driver.record_hit("first")
    assert [e.image_id for e in driver.get_entries_by_last_accessed()] == [
        "second", "third", "first"]


def test_lru_does_not_depend_on_atime(driver):
    store(driver, "old")
    store(driver, "new")
    driver.record_hit("old")
    driver.flush_hits()
    # noatime / relatime mounts: atime says nothing useful; it must not change the order.
    for image_id, atime in (("old", 0), ("new", time.time() + 3600)):
        path = driver.get_image_filepath(image_id)
        os.utime(path, (atime, os.stat(path).st_mtime))
    assert driver.get_least_recently_accessed()[0] == "new"


def test_cache_size_counts_images_only(driver):
    store(driver, "img", b"12345")
    for stray in (".lock", "cache.db-journal"):
        with open(os.path.join(driver.base_dir, stray), "wb") as handle:
            handle.write(b"x" * 100)
    with open(os.path.join(driver.base_dir, "invalid", "other"), "wb") as handle:
        handle.write(b"y" * 100)
    assert driver.get_cache_size() == 5


def test_cache_size_is_the_size_of_the_listed_entries(driver):
    store(driver, "img", b"12345")
    base = driver.base_dir
    outside = os.path.join(os.path.dirname(base), "outside")
    with open(outside, "wb") as handle:
        handle.write(b"o" * 1000)
    os.symlink(outside, os.path.join(base, "link"))
    os.mkfifo(os.path.join(base, "fifo"))
    os.mkdir(os.path.join(base, "dir"))
    with open(os.path.join(base, "dir", "inner"), "wb") as handle:
        handle.write(b"i" * 1000)
    entries = driver.get_cached_images()
    assert [entry["image_id"] for entry in entries] == ["img"]
    assert driver.get_cache_size() == sum(entry["size"] for entry in entries) == 5


def test_untracked_files_are_listed_and_evictable(driver):
    # A crash between rename and metadata insert leaves a complete file without metadata.
    with open(os.path.join(driver.base_dir, "orphan"), "wb") as handle:
        handle.write(b"123")
    assert driver.get_least_recently_accessed() == ("orphan", 3)
    assert driver.get_cache_size() == 3
    driver.delete_cached_image("orphan")
    assert driver.get_least_recently_accessed() is None


def test_delete_cached_images(driver):
    store(driver, "a")
    store(driver, "b")
    store(driver, "c")
    driver.delete_cached_image("a")
    driver.delete_cached_image("a")   # already gone: no error
    assert [item["image_id"] for item in driver.get_cached_images()] == ["b", "c"]
    assert driver.delete_all_cached_images() == 2
    assert driver.get_cached_images() == [] and driver.get_cache_size() == 0
    assert driver.is_cacheable("b")


def test_queue(driver):
    store(driver, "cached")
    writer = driver.open_for_write("filling", 1)
    try:
        assert driver.queue_image("cached") is False
        assert driver.queue_image("filling") is False
    finally:
        writer.discard()
    assert driver.queue_image("z-first") is True
    assert driver.queue_image("a-second") is True
    assert driver.queue_image("z-first") is False
    assert driver.is_queued("a-second")
    assert driver.get_queued_images() == ["z-first", "a-second"]
    driver.delete_queued_image("z-first")
    assert driver.get_queued_images() == ["a-second"]
    assert driver.delete_all_queued_images() == 1
    assert driver.get_queued_images() == []


def test_a_commit_pops_the_queue(driver):
    assert driver.queue_image("img")
    store(driver, "img")
    assert not driver.is_queued("img") and driver.get_queued_images() == []


def test_clean_removes_debris_but_never_a_live_fill(driver):
    incomplete = os.path.join(driver.base_dir, "incomplete")
    with open(os.path.join(driver.base_dir, "invalid", "bad"), "wb"):
        pass
    with open(os.path.join(incomplete, "dead"), "wb"):   # no writer holds it
        pass
    live = driver.open_for_write("live", 10)
    try:
        live.write(b"12345")
        assert driver.clean() == 1          # default stall time: only invalid/ goes
        assert "dead" in helpers.listing(incomplete)
        assert driver.clean(stall_time=0) == 1
        assert helpers.listing(os.path.join(driver.base_dir, "invalid")) == []
        assert "dead" not in helpers.listing(incomplete)
        assert driver.is_being_cached("live")
        live.write(b"67890")
        assert live.commit()
    finally:
        live.discard()
    assert driver.is_cached("live") and driver.get_image_size("live") == 10


def test_cached_nodes(driver, settings):
    if settings["image_cache_driver"] != "centralized_db":
        with pytest.raises(NotImplementedError):
            driver.get_cached_nodes("img")
        return
    store(driver, "img")
    assert driver.get_cached_nodes("img") == [settings["worker_self_reference_url"]]
