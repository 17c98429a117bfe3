"""GET /metrics of a real glance-cache-mw-api (two workers) after real downloads: exact counts.

Then ``glance-cache-mw-manage cache stats`` reads the same numbers from the metric files.
The origin is slowed down by the test filter (``{data_dir}/origin-delay``) so that 15 requests
sent while the first one fills the cache all follow that fill, in either worker.
"""

import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.parse

from prometheus_client import parser

from tests.functional import server as helpers

MIB = 1024 * 1024
SIZE = 2 * MIB
FOLLOWERS = 15


def scrape(server):
    """{(sample name, sorted label items): value} of one GET /metrics."""
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    samples = {}
    for family in parser.text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get(("glance_cache_mw_" + name, tuple(sorted(labels.items()))), 0.0)


def upload(url, data, name):
    return "/v2/images/%s/file" % helpers.upload_image(url, data, name)


def worker_pid(server):
    return json.loads(server.request("GET", "/test/pid")[2])["pid"]


def worker_pids(server, count):
    """At least ``count`` pids of workers that answer requests."""
    pids = set()

    def enough():
        pids.add(worker_pid(server))
        return len(pids) >= count
    helpers.wait_for(enough, what="%d workers answering" % count)
    return pids


def test_counters_of_real_downloads_under_two_workers(start_server):
    server = start_server(settings={"workers": 2, "chunk_size": 65536,
                                    "image_cache_max_size": 3 * MIB})
    data_a, data_b = os.urandom(SIZE), os.urandom(SIZE)
    path_a, path_b = upload(server.url, data_a, "a"), upload(server.url, data_b, "b")
    with open(os.path.join(server.data_dir, "origin-delay"), "w") as handle:
        handle.write("0.05")   # 32 chunks: the fill takes 1.6 s

    # 1 MISS: its headers are there, the fill runs; then 15 more while it runs.
    parts = urllib.parse.urlsplit(server.url)
    first = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        first.request("GET", path_a)
        response = first.getresponse()
        assert response.getheader("X-Image-Cache") == "MISS"
        with concurrent.futures.ThreadPoolExecutor(FOLLOWERS) as pool:
            others = list(pool.map(lambda _: server.request("GET", path_a, timeout_s=60),
                                   range(FOLLOWERS)))
        assert response.read() == data_a
    finally:
        first.close()
    assert all(status == 200 and body == data_a for status, _, body in others)
    assert [headers["x-image-cache"] for _, headers, _ in others] == ["COALESCED"] * FOLLOWERS
    os.unlink(os.path.join(server.data_dir, "origin-delay"))
    helpers.wait_for(lambda: value(scrape(server), "fills_committed_total") == 1,
                     what="the fill's commit")

    samples = scrape(server)
    assert value(samples, "downloads_total", cache="MISS", code="2xx") == 1
    assert value(samples, "downloads_total", cache="COALESCED", code="2xx") == FOLLOWERS
    assert value(samples, "download_bytes_total", cache="MISS") == SIZE
    assert value(samples, "download_bytes_total", cache="COALESCED") == FOLLOWERS * SIZE
    assert value(samples, "origin_reads_total", reason="miss") == 1
    assert value(samples, "origin_bytes_total", reason="miss") == SIZE
    assert value(samples, "coalesced_followers_total") == FOLLOWERS
    assert value(samples, "fills_started_total") == 1
    assert value(samples, "first_byte_seconds_count", cache="MISS") == 1
    assert value(samples, "first_byte_seconds_count", cache="COALESCED") == FOLLOWERS
    assert value(samples, "fill_duration_seconds_count") == 1
    assert value(samples, "cache_entries") == 1
    assert value(samples, "cache_size_bytes") == SIZE
    assert value(samples, "cache_max_size_bytes") == 3 * MIB

    # A HIT, then B's admission evicts A (3 MiB hold one 2 MiB image).
    status, headers, body = server.request("GET", path_a)
    assert (status, headers["x-image-cache"], body) == (200, "HIT", data_a)
    status, headers, body = server.request("GET", path_b)
    assert (status, headers["x-image-cache"], body) == (200, "MISS", data_b)
    helpers.wait_for(lambda: value(scrape(server), "fills_committed_total") == 2,
                     what="the second fill's commit")
    samples = scrape(server)
    assert value(samples, "downloads_total", cache="HIT", code="2xx") == 1
    assert value(samples, "download_bytes_total", cache="HIT") == SIZE
    assert value(samples, "downloads_total", cache="MISS", code="2xx") == 2
    assert value(samples, "origin_reads_total", reason="miss") == 2
    assert value(samples, "origin_bytes_total", reason="miss") == 2 * SIZE
    assert value(samples, "evictions_total", reason="admission") == 1
    assert value(samples, "evictions_total", reason="prune") == 0
    assert value(samples, "fills_failed_total", reason="admission") == 0
    assert (value(samples, "cache_entries"), value(samples, "cache_size_bytes")) == (1, SIZE)

    # Every worker killed with SIGKILL, one after the other: their counts stay.
    counters = {key: v for key, v in samples.items() if not key[0].startswith(
        ("glance_cache_mw_cache_", "glance_cache_mw_queued_"))}
    old = worker_pids(server, 2)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
        helpers.wait_for(lambda: worker_pid(server) not in old, what="a new worker")
    after = scrape(server)
    assert {key: after.get(key) for key in counters} == counters

    # The same numbers for people, from the metric files and the cache metadata.
    result = subprocess.run(
        [sys.executable, "-m", "glance_cache_mw.cmd.manage", "--config", server.config_path,
         "cache", "stats", "--format", "json"], capture_output=True, text=True, timeout=60,
        env=helpers.subprocess_env())
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["downloads"] == {"HIT": 1, "MISS": 2, "COALESCED": FOLLOWERS, "BYPASS": 0,
                                  "PEER": 0}
    assert stats["hit_ratio"] == 1 / (3 + FOLLOWERS)
    assert stats["bytes_served_from_cache"] == (1 + FOLLOWERS) * SIZE
    assert stats["bytes_read_from_origin"] == 2 * SIZE
    assert stats["evictions"] == {"admission": 1}
    assert (stats["cache"]["entries"], stats["cache"]["size"]) == (1, SIZE)
    assert server.stop() == 0


def test_metrics_only_for_allowed_clients(start_server):
    server = start_server(testing=False, settings={"metrics_allowed_clients": "10.0.0.0/8"})
    status, _, body = server.request("GET", "/metrics")
    assert status == 403
    assert b"127.0.0.1" in body and b"metrics_allowed_clients" in body
    assert server.request("GET", "/healthcheck")[0] == 200


def test_gunicorn_workers_share_their_counts(tmp_path):
    """Two gunicorn workers, no PROMETHEUS_MULTIPROC_DIR: glance_cache_mw.wsgi gives them one
    directory (per process group) under metrics_dir, so every scrape, whichever worker answers
    it, shows the downloads of both."""
    url, process = helpers.start_gunicorn(tmp_path, "--workers", "2")
    try:
        class Server:
            def request(self, method, path, body=None, headers=None, timeout_s=30):
                return helpers.http_request(url, method, path, body, headers, timeout_s)
        server = Server()
        data = os.urandom(100000)
        path = upload(url, data, "g")
        assert server.request("GET", path)[1]["x-image-cache"] == "MISS"
        helpers.wait_for(lambda: value(scrape(server), "fills_committed_total") == 1,
                         what="the fill's commit")
        for _ in range(6):
            assert server.request("GET", path)[1]["x-image-cache"] == "HIT"
        for _ in range(6):   # scraped by either worker
            samples = scrape(server)
            assert value(samples, "downloads_total", cache="HIT", code="2xx") == 6
            assert value(samples, "downloads_total", cache="MISS", code="2xx") == 1
        groups = os.listdir(tmp_path / "data" / "metrics")
        assert groups == ["pgid-%d" % os.getpgrp()]   # gunicorn runs in the test's group
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
