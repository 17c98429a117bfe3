"""glance-cache-mw-pruner, -cleaner and -prefetcher as real processes, on every database.

No timing assertions: a test waits for a state (a file, a log line) with a generous bound,
and a process is frozen with SIGSTOP where a signal must land in the middle of a pass.
"""

import multiprocessing
import os
import pty
import signal
import subprocess
import sys
import time
import types

import pytest

from glance_cache_mw.db import api as db_api
from glance_cache_mw.image_cache.drivers import ondisk
from glance_cache_mw.maintenance import task_lock
from tests.functional.maintenance_env import (ADMIN, COMMAND_TIMEOUT_S, Node, command,
                                              command_env)

MP = multiprocessing.get_context("fork")
WAIT_S = 60


@pytest.fixture
def node(db, tmp_path):
    return Node(tmp_path / "node-a", db)


def wait_for(predicate, what):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def read(path):
    return path.read_text() if path.exists() else ""


def test_prefetcher_caches_the_good_images_and_names_the_broken_ones(node):
    good = ["good-%d" % index for index in range(4)]
    for image_id in good:
        node.add_image(image_id)
    node.add_image("corrupt", corrupt=True)
    node.add_image("missing", stored=False)
    node.add_image("saving", status="saving")
    node.queue(*good[:2], "corrupt", "missing", "saving", *good[2:])

    result = node.run("prefetcher")
    assert result.returncode == 1, result.stderr
    assert node.cached_ids() == good
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert any("corrupt" in line and "does not match" in line for line in errors)
    assert any("missing" in line and "no data" in line for line in errors)
    assert "dropped image saving" in result.stderr
    assert "4 images fetched, 2 failed, 1 dropped" in result.stderr

    again = node.run("prefetcher")
    assert again.returncode == 0 and "no image is queued" in again.stderr


def test_pruner_evicts_deleted_images_then_prunes_to_the_limit(node):
    for image_id in ("a", "b", "c", "d", "e"):
        node.add_image(image_id, size=10000)
    node.queue("a", "b", "c", "d", "e")
    node.write_ini(cache_prefetcher_workers=1)   # cached in queue order: "a" is the LRU
    assert node.run("prefetcher").returncode == 0
    db_api.image_destroy(ADMIN, "b")
    db_api.image_update(ADMIN, "c", {"status": "deactivated"})
    node.write_ini(image_cache_max_size=20000)

    result = node.run("pruner")
    assert result.returncode == 0, result.stderr
    assert "evicted 2 cached images deleted, deactivated or gone from the database: b, c" \
        in result.stderr
    assert "pruned 1 files, 10000 bytes" in result.stderr
    assert node.cached_ids() == ["d", "e"]


def test_pruner_on_centralized_db_evicts_images_deleted_through_another_node(db, tmp_path):
    node_a = Node(tmp_path / "node-a", db, "centralized_db", "http://node-a:9292")
    node_b = Node(tmp_path / "node-b", db, "centralized_db", "http://node-b:9292")
    node_a.add_image("shared")
    node_a.add_image("kept")
    for one in (node_a, node_b):
        one.queue("shared", "kept")
        assert one.run("prefetcher").returncode == 0
    cache = node_b.cache()
    try:
        assert cache.get_cached_nodes("shared") == ["http://node-a:9292", "http://node-b:9292"]
        # Node B handles DELETE /v2/images/shared: it evicts its own copy and the DB row.
        db_api.image_destroy(ADMIN, "shared")
        cache.delete_cached_image("shared")
        assert cache.get_cached_nodes("shared") == ["http://node-a:9292"]
    finally:
        cache.close()
    result = node_a.run("pruner")
    assert result.returncode == 0, result.stderr
    assert node_a.cached_ids() == ["kept"]
    cache = node_a.cache()
    try:
        assert cache.get_cached_nodes("shared") == []
    finally:
        cache.close()


def test_a_pruner_skips_while_another_holds_the_lock(node):
    node.cache().close()   # creates the cache directory
    with task_lock(node.settings["image_cache_dir"], "prune") as held:
        assert held
        result = node.run("pruner")
    assert result.returncode == 0
    assert "skipping prune: another prune" in result.stderr


def test_two_pruners_at_once_leave_a_consistent_cache(node):
    ids = ["img-%02d" % index for index in range(12)]
    for image_id in ids:
        node.add_image(image_id, size=5000)
    node.queue(*ids)
    assert node.run("prefetcher").returncode == 0
    cache = node.cache()
    try:
        lru_first = cache.driver.get_entries_by_last_accessed()
        newest = sorted(entry.image_id for entry in lru_first[8:])
    finally:
        cache.close()
    node.write_ini(image_cache_max_size=20000)
    first = node.popen("pruner", stderr_path=node.dir / "first.log")
    second = node.popen("pruner", stderr_path=node.dir / "second.log")
    assert first.wait(COMMAND_TIMEOUT_S) == 0 and second.wait(COMMAND_TIMEOUT_S) == 0
    logs = read(node.dir / "first.log") + read(node.dir / "second.log")
    assert "pruned 8 files, 40000 bytes" in logs
    assert logs.count("pruned 8 files") == 1   # the other skipped or found nothing to do
    assert node.cached_ids() == newest
    cache = node.cache()
    try:
        assert cache.get_cache_size() == 20000
        assert sorted(os.listdir(cache.driver.get_path(ondisk.INCOMPLETE))) == []
    finally:
        cache.close()


def _hold_a_fill(settings, started, release, committed):
    """Child process: fill 'live' half-way, wait, then finish and commit it."""
    from glance_cache_mw.image_cache import ImageCache

    cache = ImageCache.from_config(settings)
    writer = cache.driver.open_for_write("live", 8)
    writer.write(b"1234")
    started.set()
    release.wait(WAIT_S)
    writer.write(b"5678")
    committed.value = writer.commit()
    cache.close()


def test_the_cleaner_never_removes_a_live_fill(node):
    node.write_ini(image_cache_stall_time=0)
    cache = node.cache()
    cache.close()
    started, release = MP.Event(), MP.Event()
    committed = MP.Value("b", 0)
    child = MP.Process(target=_hold_a_fill, args=(node.settings, started, release, committed))
    child.start()
    try:
        assert started.wait(WAIT_S)
        incomplete = os.path.join(node.settings["image_cache_dir"], ondisk.INCOMPLETE)
        old = time.time() - 10 * 86400
        os.utime(os.path.join(incomplete, "live"), (old, old))
        abandoned = os.path.join(incomplete, "abandoned")
        with open(abandoned, "wb") as handle:
            handle.write(b"left by a killed writer")
        os.utime(abandoned, (old, old))
        invalid = os.path.join(node.settings["image_cache_dir"], ondisk.INVALID, "bad")
        with open(invalid, "wb") as handle:
            handle.write(b"did not match")

        result = node.run("cleaner")
        assert result.returncode == 0, result.stderr
        assert "cleaned 2 files" in result.stderr
        assert os.path.exists(os.path.join(incomplete, "live"))
        assert not os.path.exists(abandoned) and not os.path.exists(invalid)
    finally:
        release.set()
        child.join(WAIT_S)
    assert child.exitcode == 0 and committed.value == 1
    assert node.cached_ids() == ["live"]


def test_sigterm_during_a_prefetch_leaves_a_consistent_cache(node):
    big = 1024 ** 3
    node.write_ini(image_cache_max_size=2 * big)
    os.makedirs(node.store.datadir, exist_ok=True)
    with open(os.path.join(node.store.datadir, "big"), "wb") as handle:
        handle.truncate(big)   # sparse: cheap to create, slow enough to copy
    db_api.image_create(ADMIN, {"id": "big", "status": "active", "size": big})
    node.add_image("small")
    node.queue("big")
    log = node.dir / "daemon.log"
    daemon = node.popen("prefetcher", "--daemon", "--interval", "3600", stderr_path=log)
    try:
        partial = os.path.join(node.settings["image_cache_dir"], ondisk.INCOMPLETE, "big")
        wait_for(lambda: os.path.exists(partial) and os.path.getsize(partial) > 0,
                 "the fill of 'big' to start")
        daemon.send_signal(signal.SIGSTOP)   # freeze it mid-image: the signal lands there
        daemon.send_signal(signal.SIGTERM)
        daemon.send_signal(signal.SIGCONT)
        assert daemon.wait(COMMAND_TIMEOUT_S) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    text = read(log)
    assert "received SIGTERM" in text and "prefetch of image big interrupted" in text
    cache = node.cache()
    try:
        assert not cache.is_cached("big") and not cache.is_being_cached("big")
        assert cache.get_queued_images() == ["big"]
        cache.delete_queued_image("big")
        cache.queue_image("small")
    finally:
        cache.close()
    again = node.run("prefetcher")
    assert again.returncode == 0, again.stderr
    assert node.cached_ids() == ["small"]
    cleaned = node.run("cleaner")
    assert cleaned.returncode == 0 and "cleaned 1 files" in cleaned.stderr


@pytest.mark.parametrize("command,done", [("pruner", "pruned 0 files"),
                                          ("cleaner", "cleaned 0 files"),
                                          ("prefetcher", "no image is queued")])
def test_a_daemon_stops_cleanly_on_sigterm(node, command, done):
    log = node.dir / ("%s.log" % command)
    daemon = node.popen(command, "--daemon", "--interval", "3600", stderr_path=log)
    try:
        wait_for(lambda: done in read(log), "the first pass")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(COMMAND_TIMEOUT_S) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert "stopped" in read(log)


@pytest.mark.parametrize("name", ["pruner", "cleaner", "prefetcher"])
@pytest.mark.parametrize("setting,message", [
    ("image_cache_max_size = 10G", "image_cache_max_size='10G' is not an integer"),
    ("image_cache_driver = nonesuch", "'nonesuch' is not one of"),
])
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, name, setting, message):
    ini = tmp_path / "bad.ini"
    ini.write_text("[DEFAULT]\ndata_dir = %s\n%s\n" % (tmp_path, setting))
    result = subprocess.run(command(name, ini), capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, cwd=str(tmp_path),
                            env=command_env())
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_interval_without_daemon_is_a_usage_error(tmp_path):
    result = subprocess.run(command("pruner", None, "--interval", "5"),
                            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            cwd=str(tmp_path), env=command_env())
    assert result.returncode == 2 and "--interval needs --daemon" in result.stderr


def test_an_unreachable_database_fails_the_evict_but_the_prune_still_runs(tmp_path):
    node = Node(tmp_path / "node-a", types.SimpleNamespace(
        url="postgresql://nobody@127.0.0.1:1/none"))
    cache = node.cache()
    try:
        assert cache.cache_image_iter("cached", [b"data"], 4)
    finally:
        cache.close()
    result = node.run("pruner")
    assert result.returncode == 1
    assert "cache maintenance task evict failed" in result.stderr
    assert "pruned 0 files" in result.stderr and "Traceback" not in result.stderr
    assert node.cached_ids() == ["cached"]


def test_a_pruner_on_the_wrong_database_evicts_nothing_and_exits_1(node, db):
    for image_id in ("one", "two", "three"):
        node.add_image(image_id, size=1000)
    node.queue("one", "two", "three")
    assert node.run("prefetcher").returncode == 0
    # A cron job's config without sql_connection: the embedded SQLite default (empty).
    # Its default database exists (a server once ran there) but holds other images or none.
    del node.settings["sql_connection"]
    node.write_ini(data_dir=node.dir / "data")
    (node.dir / "data").mkdir()
    assert node.run("manage", "db", "sync").returncode == 0
    result = node.run("pruner")
    assert result.returncode == 1, result.stderr
    assert node.cached_ids() == ["one", "three", "two"]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert any("knows 0 of the 3 images" in line and "glance-cache-mw.sqlite" in line
               for line in errors), result.stderr
    assert "Traceback" not in result.stderr


def test_the_prefetcher_shows_progress_on_a_terminal(node):
    node.add_image("shown", size=200000)
    node.queue("shown")
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(node.command("prefetcher"), cwd=str(node.dir),
                                   stdout=subprocess.DEVNULL, stderr=follower,
                                   env=command_env())
        os.close(follower)
        follower = None
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(COMMAND_TIMEOUT_S) == 0
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    text = output.decode("utf-8", "replace")
    assert "\r\x1b[K" in text and "prefetch 1/1 images" in text and "/s" in text
    assert "prefetched image shown (200000 bytes)" in text


def test_piped_stderr_gets_no_progress_line(node):
    node.add_image("quiet")
    node.queue("quiet")
    result = node.run("prefetcher")
    assert result.returncode == 0 and "\x1b[K" not in result.stderr


GREEN_LOOP = """
import os, sys, warnings
warnings.filterwarnings("ignore")
import eventlet
eventlet.monkey_patch()
from glance_cache_mw import config
from glance_cache_mw.maintenance import Maintenance

maintenance = Maintenance.from_config(config.Config.from_file(sys.argv[1]))
incomplete = maintenance.cache.driver.get_path("incomplete")
ticks_during_fills = []

def ticker():   # another green thread, like a request being served
    while True:
        if any(not name.startswith(".") for name in os.listdir(incomplete)):
            ticks_during_fills.append(1)
        eventlet.sleep(0.001)

eventlet.spawn(ticker)
maintenance.start(3600)
while len(maintenance.cache.get_cached_images()) < 3:
    eventlet.sleep(0.01)
assert maintenance.stop(60), "the loop did not stop"
maintenance.close()
print("cached", len(maintenance.cache.get_cached_images()), "ran during fills",
      bool(ticks_during_fills))
"""


def test_the_in_process_loop_under_eventlet_lets_other_green_threads_run(node):
    ids = ["green-%d" % index for index in range(3)]
    for image_id in ids:
        node.add_image(image_id, size=2 * 1024 * 1024)
    node.queue(*ids)
    result = subprocess.run([sys.executable, "-c", GREEN_LOOP, str(node.ini)],
                            cwd=str(node.dir), capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, env=command_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cached 3 ran during fills True"
    assert node.cached_ids() == ids
