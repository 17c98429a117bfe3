"""The server's in-process maintenance loop (image_cache_maintenance_interval > 0)."""

import json
import os
import sqlite3
import time

import pytest

from tests.functional.server import upload_image

DATA = os.urandom(300_000)


def upload(server, data=DATA):
    return upload_image(server.url, data)


def cached_ids(server):
    status, _headers, body = server.request("GET", "/v2/cache")
    assert status == 200, body
    return [entry["image_id"] for entry in json.loads(body)["cached_images"]]


def wait_for(predicate, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_queued_image_is_prefetched_without_a_download(start_server, workers):
    server = start_server(settings={"image_cache_maintenance_interval": "1",
                                    "workers": workers}, testing=False)
    image_id = upload(server)
    assert server.request("PUT", "/v2/cache/%s" % image_id)[0] == 202
    assert wait_for(lambda: image_id in cached_ids(server)), server.stderr()
    status, headers, body = server.request("GET", "/v2/images/%s/file" % image_id)
    assert (status, headers["x-image-cache"], body) == (200, "HIT", DATA)


@pytest.mark.parametrize("change", ["status = 'deactivated'", "deleted = 1"])
def test_the_loop_evicts_images_changed_through_another_node(start_server, change):
    server = start_server(settings={"image_cache_maintenance_interval": "1"}, testing=False)
    image_id = upload(server)
    assert server.request("GET", "/v2/images/%s/file" % image_id)[1]["x-image-cache"] == "MISS"
    assert image_id in cached_ids(server)
    # Another API node sharing the database changes the image: this node's filter never saw
    # the request, so only its maintenance loop can drop the local copy.
    database = sqlite3.connect(os.path.join(server.data_dir, "glance-cache-mw.sqlite"))
    with database:
        database.execute("UPDATE images SET %s WHERE id = ?" % change, (image_id,))
    database.close()
    assert wait_for(lambda: image_id not in cached_ids(server)), server.stderr()


def test_without_an_interval_nothing_is_prefetched(start_server):
    server = start_server(testing=False)
    image_id = upload(server)
    assert server.request("PUT", "/v2/cache/%s" % image_id)[0] == 202
    time.sleep(2)
    assert image_id not in cached_ids(server)
