"""Whoever can write to image_cache_dir cannot make the server serve another file, hang a
worker or fail downloads: only regular files are served, anything else is evicted and logged.

Real server process, real HTTP: each test plants a symlink, FIFO or directory where the cache
keeps an image and downloads the image.
"""

import json
import os

import pytest

from tests.functional.server import upload_image, wait_for

DATA = os.urandom(200_000)
TIMEOUT_S = 20   # a FIFO opened without O_NONBLOCK would block far longer than this


def upload(server, data=DATA):
    return upload_image(server.url, data)


def download(server, image_id):
    return server.request("GET", "/v2/images/%s/file" % image_id, timeout_s=TIMEOUT_S)


def plant(kind, path, tmp_path):
    """Put a ``kind`` entry at ``path``; return what a symlink points to (a decoy file of the
    image's size: if it were followed, its bytes would be served)."""
    if kind == "symlink":
        decoy = tmp_path / "decoy"
        decoy.write_bytes(b"S" * len(DATA))
        os.symlink(decoy, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
        with open(os.path.join(path, "inner"), "wb") as handle:
            handle.write(b"D" * 10)
    else:
        raise ValueError(kind)


@pytest.fixture
def server(start_server):
    return start_server(testing=False)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_foreign_entry_at_a_cached_path_is_evicted_and_served_as_a_miss(server, tmp_path,
                                                                          kind):
    image_id = upload(server)
    cache_dir = os.path.join(server.data_dir, "image-cache")
    path = os.path.join(cache_dir, image_id)
    plant(kind, path, tmp_path)

    status, headers, body = download(server, image_id)
    assert (status, headers.get("x-image-cache"), body == DATA) == (200, "MISS", True)
    log = server.stderr()
    assert path in log and "where the cache keeps only regular files" in log, log
    expected = {"symlink": "symlink to", "fifo": "FIFO", "directory": "directory"}[kind]
    assert any(path in line and expected in line for line in log.splitlines())
    # The miss filled the cache: a regular file now, served as a hit.
    wait_for(lambda: os.path.isfile(path) and not os.path.islink(path), what="the fill")
    status, headers, body = download(server, image_id)
    assert (status, headers.get("x-image-cache"), body == DATA) == (200, "HIT", True)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_foreign_entry_at_incomplete_does_not_fail_downloads(server, tmp_path, kind):
    image_id = upload(server)
    path = os.path.join(server.data_dir, "image-cache", "incomplete", image_id)
    plant(kind, path, tmp_path)

    status, headers, body = download(server, image_id)
    assert status == 200 and body == DATA, body[:200]
    assert headers.get("x-image-cache") in ("MISS", "BYPASS")
    wait_for(lambda: os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(path)),
                                                 image_id)), what="the fill")
    status, headers, body = download(server, image_id)
    assert (status, headers.get("x-image-cache"), body == DATA) == (200, "HIT", True)
    assert path in server.stderr()
    assert not os.path.lexists(path)   # the fill's own name is gone after its commit


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_the_management_api_copes_with_foreign_entries(server, tmp_path, kind):
    image_id = upload(server)
    cache_dir = os.path.join(server.data_dir, "image-cache")
    (tmp_path / "a").mkdir()
    plant(kind, os.path.join(cache_dir, image_id), tmp_path / "a")
    (tmp_path / "b").mkdir()
    plant(kind, os.path.join(cache_dir, "incomplete", "x" + image_id[1:]), tmp_path / "b")
    status, _headers, body = server.request("GET", "/v2/cache", timeout_s=TIMEOUT_S)
    assert status == 200 and json.loads(body)["cached_images"] == []
    assert server.request("DELETE", "/v2/cache/%s" % image_id,
                          timeout_s=TIMEOUT_S)[0] in (204, 404)
    assert not os.path.lexists(os.path.join(cache_dir, image_id))
    for action in ("prune", "clean"):
        status, _headers, body = server.request("POST", "/v2/cache/%s" % action,
                                                timeout_s=TIMEOUT_S)
        assert status == 200, body
