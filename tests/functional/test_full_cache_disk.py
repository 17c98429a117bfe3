"""A full cache disk: the management API, the pruner and the cleaner keep working and free it.

The cache directory is a real 20 MiB tmpfs (mounted by the test; CI runs as root) that the
test fills to the last byte, as the issue's reproduction does with dd. With the sqlite driver
the metadata database lives there too: its WAL index (cache.db-shm) must not have to be
created again on the full disk.
"""

import contextlib
import errno
import json
import os
import subprocess

import pytest

from tests.functional.maintenance_env import COMMAND_TIMEOUT_S, command, command_env
from tests.functional.server import upload_image, wait_for

pytestmark = pytest.mark.realservice

DATA = os.urandom(2 * 1024 * 1024)
FS_SIZE = "20m"


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MiB tmpfs at tmp_path/cachefs (unmounted after the test)."""
    mountpoint = tmp_path / "cachefs"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % FS_SIZE,
                              "tmpfs", str(mountpoint)], capture_output=True, text=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs (needs root / CAP_SYS_ADMIN): %s"
                    % mounted.stderr.strip())
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory):
    """Write a dot-file (never taken for an image) until the filesystem is full."""
    fd = os.open(os.path.join(directory, ".filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert free_bytes(directory) < 4096
    fd = os.open(os.path.join(directory, ".probe"), os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as caught:
            os.write(fd, b"x" * 4096)
        assert caught.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
        os.unlink(os.path.join(directory, ".probe"))


def free_bytes(directory):
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def upload(server):
    return upload_image(server.url, DATA)


def cached_ids(server):
    status, _headers, body = server.request("GET", "/v2/cache")
    assert status == 200, body
    return [entry["image_id"] for entry in json.loads(body)["cached_images"]]


def cache_by_download(server, image_id, cache_dir):
    status, _headers, body = server.request("GET", "/v2/images/%s/file" % image_id)
    assert status == 200 and body == DATA
    wait_for(lambda: os.path.isfile(os.path.join(cache_dir, image_id)), what="the fill")


def test_a_full_cache_disk_can_still_be_managed_and_freed(start_server, small_fs):
    server = start_server(testing=False, settings={
        "image_cache_dir": str(small_fs), "image_cache_driver": "sqlite",
        "image_cache_min_free": str(1024 * 1024)})
    image_id = upload(server)
    cache_by_download(server, image_id, str(small_fs))
    fill(str(small_fs))

    # The management API reads and changes the metadata on the full disk.
    assert cached_ids(server) == [image_id]
    status, _headers, body = server.request("POST", "/v2/cache/clean")
    assert status == 200, body
    status, _headers, body = server.request("POST", "/v2/cache/prune")
    assert status == 200, body
    assert json.loads(body)["total_files_pruned"] == 1   # below image_cache_min_free
    assert cached_ids(server) == []
    assert free_bytes(str(small_fs)) > len(DATA) - 65536   # the image's blocks are back
    # Downloads were never at stake: every byte, cached or not.
    status, _headers, body = server.request("GET", "/v2/images/%s/file" % image_id)
    assert status == 200 and body == DATA

    # The commands, with no server holding the database open.
    os.unlink(os.path.join(str(small_fs), ".filler"))
    cache_by_download(server, image_id, str(small_fs))
    assert server.stop() == 0
    # Nobody has the database open: its WAL index is gone (SQLite deletes it with the last
    # connection; a server that exits without closing leaves it, so remove it as SQLite would).
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(str(small_fs), "cache.db-shm"))
    fill(str(small_fs))
    for name in ("cleaner", "pruner"):
        result = subprocess.run(command(name, server.config_path), capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT_S, cwd=server.workdir,
                                env=command_env())
        assert result.returncode == 0, result.stderr
    assert "pruned 1 files" in result.stderr
    assert "using an exclusive connection" in result.stderr
    assert not os.path.exists(os.path.join(str(small_fs), image_id))
    assert free_bytes(str(small_fs)) > len(DATA) - 65536   # the image's blocks are back
