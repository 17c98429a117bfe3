#!/usr/bin/env python3
"""Hits inside real Glance 33: our filter vs Glance's own, same machine, interleaved.

    GLANCE_CACHE_MW_TEST_GLANCE_PYTHON=$(tools/glance-venv) .venv/bin/python tools/bench_glance.py

Starts two glance-api servers under uWSGI (2 processes x 8 threads, SQLite, sqlite cache
driver, ``caching`` flavor) from tests/functional/glance_server.py: one with our filter in
[filter:cache], one with Glance's. Each gets the same images, cached by one download; then
tools/bench_download.py measures hits, the servers taking turns (``--rounds``): 16 images of
64 KiB at C=16, and one 64 MiB image at C=1. Prints one line per run. Never
imported by the package.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.functional import glance_server, server as helpers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def upload(server, data):
    status, _, body = server.request("POST", "/v2/images", body=json.dumps(
        {"name": "bench", "disk_format": "raw", "container_format": "bare"}).encode(),
        headers={"Content-Type": "application/json"})
    assert status == 201, body
    image_id = json.loads(body)["id"]
    status, _, body = server.request("PUT", "/v2/images/%s/file" % image_id, body=data,
                                     headers={"Content-Type": "application/octet-stream"})
    assert status == 204, body
    for _ in range(2):   # the first fills the cache (either filter), the second hits
        assert server.request("GET", "/v2/images/%s/file" % image_id)[0] == 200
    helpers.wait_for(lambda: os.path.exists(server.cached_file(image_id)), timeout_s=30)
    return image_id


def bench(urls, concurrency, duration):
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_download.py"), *urls,
                          "--concurrency", str(concurrency), "--duration", str(duration),
                          "--hash-every", "0"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    python = glance_server.glance_python()
    if python is None:
        sys.exit("set %s (tools/glance-venv prints it)" % glance_server.PYTHON_ENV)
    small, big = [os.urandom(64 * 1024) for _ in range(16)], os.urandom(64 * 1024 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            for name, ours in (("ours", True), ("glance", False)):
                workdir = os.path.join(tmp, name)
                server = glance_server.GlanceServer(
                    workdir, python, "sqlite:///%s/glance.sqlite" % workdir,
                    policy={"cache_list": ""}, our_filters=ours)
                os.makedirs(workdir)
                server.start()
                servers[name] = (server, [upload(server, d) for d in small], upload(server, big))
            for round_no in range(args.rounds):
                for name, (server, small_ids, big_id) in servers.items():
                    urls = ["%s/v2/images/%s/file" % (server.url, i) for i in small_ids]
                    print("round %d %-6s 64 KiB C=16: %s" % (
                        round_no, name, bench(urls, 16, args.duration)), flush=True)
                    print("round %d %-6s 64 MiB C=1:  %s" % (round_no, name, bench(
                        ["%s/v2/images/%s/file" % (server.url, big_id)], 1, args.duration)),
                        flush=True)
        finally:
            for server, _, _ in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
