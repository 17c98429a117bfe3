"""Fills across processes and under real faults: one writer per image among processes, SIGKILL
at any point, EFBIG from RLIMIT_FSIZE, a full disk, a dying filler."""

import os
import resource
import signal
import textwrap
import time

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache import verify
from tests.unit import cache_helpers as helpers
from tests.unit.cache_helpers import Origin, cached_bytes, incomplete

SIZE = 64 * 1024
DATA = helpers.body(SIZE, b"faults")
GOOD = helpers.hashes(DATA)


# -- crashes -----------------------------------------------------------------------------

BIG = helpers.body(verify.HASH_IN_THREADS_FROM + 1024 * 1024, b"faults")   # hashed in threads


def _fill_until_killed(conn, settings, image_id, stage, data=DATA):
    """Fill from an origin that reports ``stage`` and then stalls until SIGKILL."""
    cache = ImageCache.from_config(settings)
    parts = helpers.chunks(data, 65536 if data is BIG else 4096)
    stall_at = len(parts) - 2 if data is BIG else 4

    def origin():
        if stage == "admitted":
            conn.send(("ready",))
            time.sleep(3600)
        for index, part in enumerate(parts):
            yield part
            if stage == "mid-stream" and index == stall_at:
                conn.send(("ready",))
                time.sleep(3600)
        conn.send(("ready",))             # stage "all-written": every byte is on disk
        time.sleep(3600)

    tee = cache.fill(image_id, origin(), len(data), **helpers.hashes(data))
    assert tee.caching
    for _chunk in tee:
        pass


@pytest.mark.parametrize("stage", ["admitted", "mid-stream", "all-written"])
def test_a_sigkilled_fill_leaves_nothing_servable(settings, cache, stage):
    process, conn = helpers.run_child(_fill_until_killed, settings, "img", stage)
    assert helpers.recv(conn) == ("ready",)
    os.kill(process.pid, signal.SIGKILL)
    process.join(helpers.WAIT_S)
    conn.close()
    assert not cache.is_cached("img") and cache.get_cached_images() == []
    assert not cache.is_being_cached("img") and cache.follow("img", SIZE) is None
    assert "img" in incomplete(cache)           # the debris is there ...
    assert cache.clean(stall_time=0) >= 2       # ... the file and its reservation name
    assert incomplete(cache) == []
    tee = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **GOOD)
    assert tee.caching and helpers.drain(tee) == DATA
    assert cached_bytes(cache, "img") == DATA


@pytest.mark.parametrize("stage", ["mid-stream", "all-written"])
def test_a_sigkilled_fill_hashing_in_threads_leaves_nothing_servable(settings, cache, stage):
    process, conn = helpers.run_child(_fill_until_killed, settings, "img", stage, BIG)
    assert helpers.recv(conn) == ("ready",)
    os.kill(process.pid, signal.SIGKILL)
    process.join(helpers.WAIT_S)
    conn.close()
    assert not cache.is_cached("img") and cache.get_cached_images() == []
    assert cache.follow("img", len(BIG)) is None
    assert cache.clean(stall_time=0) >= 2 and incomplete(cache) == []


def test_the_next_fill_takes_over_debris_without_a_clean(settings, cache):
    process, conn = helpers.run_child(_fill_until_killed, settings, "img", "mid-stream")
    assert helpers.recv(conn) == ("ready",)
    os.kill(process.pid, signal.SIGKILL)
    process.join(helpers.WAIT_S)
    conn.close()
    assert len(incomplete(cache)) == 2     # incomplete/img and the dead writer's own name
    tee = cache.fill("img", Origin(helpers.chunks(DATA)), SIZE, **GOOD)
    assert tee.caching and helpers.drain(tee) == DATA
    assert cached_bytes(cache, "img") == DATA
    assert incomplete(cache) == []           # none of the dead writer's bytes stayed behind


def test_a_follower_survives_a_sigkilled_filler(settings, cache):
    process, conn = helpers.run_child(_fill_until_killed, settings, "img", "mid-stream")
    assert helpers.recv(conn) == ("ready",)
    follower = cache.follow("img", SIZE, fallback=lambda offset: Origin([DATA[offset:]]))
    first = next(follower)
    os.kill(process.pid, signal.SIGKILL)
    process.join(helpers.WAIT_S)
    conn.close()
    assert first + helpers.drain(follower) == DATA
    assert follower.fell_back


# -- write errors ------------------------------------------------------------------------

def _fill_with_file_size_limit(conn, settings, data, limit):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
    cache = ImageCache.from_config(settings)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    tee = cache.fill("img", Origin(helpers.chunks(data, 65536)), len(data),
                     **helpers.hashes(data))
    started, verifier = tee.caching, tee._verifier
    received = helpers.drain(tee)
    hashing_left = any(thread.is_alive() for thread in verifier.threads)
    conn.send(("done", received == data, started, tee.caching, cache.is_cached("img"),
               hashing_left))
    cache.close()


@pytest.mark.parametrize("size,limit", [(1024 * 1024, 256 * 1024),
                                        (verify.HASH_IN_THREADS_FROM + 2 * 1024 * 1024,
                                         verify.HASH_IN_THREADS_FROM + 1024 * 1024)],
                         ids=["hashed-inline", "hashed-in-threads"])
def test_a_write_error_stops_caching_but_not_the_download(settings, cache, size, limit):
    data = helpers.body(size, b"big")
    process, conn = helpers.run_child(_fill_with_file_size_limit, settings, data, limit)
    message = helpers.recv(conn)
    process.join(helpers.WAIT_S)
    conn.close()
    assert message == ("done", True, True, False, False, False)
    assert incomplete(cache) == [] and not cache.is_cached("img")
    tee = cache.fill("img", Origin(helpers.chunks(data)), len(data))   # no limit here
    assert helpers.drain(tee) == data and cache.is_cached("img")


FULL_DISK = textwrap.dedent("""
    import os, subprocess, sys
    from glance_cache_mw.image_cache import ImageCache
    directory = sys.argv[1]
    os.makedirs(directory)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", directory],
                           capture_output=True, text=True)
    if mount.returncode:
        print("skip: cannot mount a tmpfs: " + mount.stderr.strip())
        sys.exit(0)
    cache = ImageCache.from_config({"image_cache_dir": directory + "/cache"})
    data = os.urandom(600 * 1024)
    parts = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    tee = cache.fill("img", iter(parts), len(data))
    assert tee.caching                     # admitted: the disk had room then ...
    with open(directory + "/ballast", "wb") as ballast:
        ballast.write(b"x" * 600 * 1024)    # ... and then another writer filled it
    body = b"".join(tee)
    tee.close()
    assert body == data, "the client lost bytes"
    assert not tee.caching and not cache.is_cached("img")
    assert os.listdir(directory + "/cache/incomplete") == []   # the partial file is gone
    cache.close()
    print("ok")
""")


def test_a_full_disk_stops_caching_but_not_the_download(tmp_path):
    """ENOSPC from a real 1 MiB tmpfs, mounted in a private mount namespace (needs root)."""
    helpers.run_with_a_mount(FULL_DISK, tmp_path / "small", "a small tmpfs")


# -- one writer among processes ---------------------------------------------------------

def _try_to_fill(conn, settings, barrier):
    cache = ImageCache.from_config(settings)
    barrier.wait()
    writer = cache.admit("img", 4)
    conn.send(("tried", writer is not None))
    if writer is not None:
        conn.recv()          # keep the fill open until every process has tried
        writer.write(b"data")
        writer.commit()
    cache.close()


def test_one_writer_per_image_across_processes(settings, cache):
    barrier = helpers.MP.Barrier(6)
    children = [helpers.run_child(_try_to_fill, settings, barrier) for _ in range(6)]
    results = [helpers.recv(conn)[1] for _, conn in children]
    assert results.count(True) == 1
    for process, conn in children:
        if results[children.index((process, conn))]:
            conn.send(("finish",))
        process.join(helpers.WAIT_S)
        conn.close()
        assert process.exitcode == 0
    assert cached_bytes(cache, "img") == b"data"
