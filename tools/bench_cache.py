#!/usr/bin/env python3
"""Benchmark the image cache: one-pass prune, fill throughput, and the cost of a recorded hit.

    .venv/bin/python tools/bench_cache.py [--only prune,fill,hits] [--sizes 1000,10000,100000]
        [--targets sqlite,xattr,centralized_db/sqlite,centralized_db/postgresql]
        [--fill-mib 1024] [--origin-rates 0,100] [--hits 200000] [--workdir DIR]

What each part measures, and the results, are in docs/benchmarks.md ("Cache"). centralized_db
targets on a server get a scratch database there (--postgres-url / --mysql-url, default the
GLANCE_CACHE_MW_TEST_*_URL variables), dropped at the end. Markdown on stdout, progress on
stderr. The package never imports this script.
"""

import argparse
import hashlib
import os
import queue
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

import sqlalchemy as sa

from glance_cache_mw.db import cache_api, migration
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache import fill as fill_mod, verify
from glance_cache_mw.image_cache.drivers import xattr as xattr_driver

MIB = 1024 * 1024
ENTRY_SIZE = MIB
CHUNK = 65536
INLINE = "as before (inline hashing, writeback at commit)"
ALL_TARGETS = ("sqlite", "xattr", "centralized_db/sqlite", "centralized_db/postgresql")
ENV_URLS = {"postgresql": "GLANCE_CACHE_MW_TEST_POSTGRES_URL",
            "mysql": "GLANCE_CACHE_MW_TEST_MYSQL_URL"}


def progress(message, *args):
    print("[bench_cache %s] %s" % (time.strftime("%H:%M:%S"), message % args),
          file=sys.stderr, flush=True)


class ServerDatabase:
    """A uniquely named, migrated database on a PostgreSQL or MariaDB server; drop() ends it."""

    def __init__(self, server_url):
        self._admin_url = db_engine.normalize_url(server_url)
        self.name = "gcm_bench_%s" % uuid.uuid4().hex[:10]
        self._admin("CREATE DATABASE %s" % self.name)
        self.url = self._admin_url.set(database=self.name).render_as_string(hide_password=False)
        engine = db_engine.create_engine(self.url)
        try:
            migration.sync(engine)
        finally:
            engine.dispose()

    def _admin(self, statement):
        engine = sa.create_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def drop(self):
        force = " WITH (FORCE)" if self._admin_url.get_backend_name() == "postgresql" else ""
        self._admin("DROP DATABASE IF EXISTS %s%s" % (self.name, force))


class Target:
    """One driver (and database) to benchmark; ``settings(run_dir)`` per run."""

    def __init__(self, name, server_urls=None):
        self.name = name
        self.driver, _, self.backend = name.partition("/")
        self.server = None
        if self.backend in ENV_URLS:
            if not (server_urls or {}).get(self.backend):
                raise SystemExit("%s needs a server URL (%s)" % (name, ENV_URLS[self.backend]))
            self.server = ServerDatabase(server_urls[self.backend])

    def settings(self, run_dir, max_size):
        values = {"image_cache_dir": os.path.join(run_dir, "cache"),
                  "image_cache_driver": self.driver, "image_cache_max_size": str(max_size),
                  "chunk_size": str(CHUNK)}
        if self.driver == "centralized_db":
            if self.server is not None:
                url = self.server.url
            else:
                url = "sqlite:///" + os.path.join(run_dir, "images.sqlite")
                engine = db_engine.create_engine(url)
                migration.sync(engine)
                engine.dispose()
            values.update(sql_connection=url,
                          worker_self_reference_url="http://bench-%s:9292" % uuid.uuid4().hex)
        return values

    def forget_node(self, cache):
        """Leave a shared server database as we found it (our node and its rows gone)."""
        if self.driver == "centralized_db":
            cache_api.node_reference_delete(cache.driver.node_url, engine=cache.driver.engine)

    def close(self):
        if self.server is not None:
            self.server.drop()


def image_ids(n):
    return ["%08x-0000-4000-8000-%012x" % (i, i) for i in range(n)]


def populate(cache, ids, size):
    """Create sparse files and write their metadata in one bulk call; returns the LRU order."""
    driver = cache.driver
    for image_id in ids:
        fd = os.open(driver.get_image_filepath(image_id),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    order = list(ids)
    random.Random(len(ids)).shuffle(order)
    start = time.time() - len(ids) - 60
    accessed = {image_id: start + rank for rank, image_id in enumerate(order)}
    if driver.name == "centralized_db":
        cache_api.insert_many_cache_details(
            driver.node_url, [{"image_id": i, "size": size, "hits": 1, "last_accessed": t,
                               "last_modified": start} for i, t in accessed.items()],
            engine=driver.engine)
    else:
        driver.apply_hits({image_id: (1, when) for image_id, when in accessed.items()})
    return order


def bench_prune(target, n, workdir):
    run_dir = tempfile.mkdtemp(prefix="prune-", dir=workdir)
    keep = n // 2
    cache = ImageCache.from_config(target.settings(run_dir, keep * ENTRY_SIZE))
    try:
        progress("prune %s N=%d: populating", target.name, n)
        started = time.perf_counter()
        order = populate(cache, image_ids(n), ENTRY_SIZE)
        populate_s = time.perf_counter() - started
        progress("prune %s N=%d: populated in %.2f s; pruning", target.name, n, populate_s)
        started, cpu = time.perf_counter(), time.process_time()
        removed, freed = cache.prune()
        prune_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        survivors = {name for name in os.listdir(cache.driver.base_dir)
                     if not name.startswith(".") and len(name) == 36}
        if removed != n - keep or survivors != set(order[n - keep:]):
            raise SystemExit("prune %s N=%d evicted the wrong entries (%d removed)"
                             % (target.name, n, removed))
        progress("prune %s N=%d: evicted %d (%d MiB) in %.3f s (CPU %.3f s)", target.name, n,
                 removed, freed // MIB, prune_s, cpu_s)
        target.forget_node(cache)
        return {"populate_s": populate_s, "prune_s": prune_s, "cpu_s": cpu_s}
    finally:
        cache.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def make_origin(workdir, size):
    """A file of ``size`` pseudo-random bytes; returns (path, md5, sha512)."""
    path = os.path.join(workdir, "origin.img")
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as handle:
        for index in range(size // MIB):
            block[:8] = index.to_bytes(8, "big")   # no two MiB alike
            md5.update(block)
            sha512.update(block)
            handle.write(block)
    return path, md5.hexdigest(), sha512.hexdigest()


class Origin:
    """The origin's body: the file in CHUNK-byte reads, as the store hands it to the images
    app. With ``rate`` (MiB/s) a thread reads it at that pace into a bounded buffer, like a
    network stream filling a socket buffer. ``exhausted_at``: when the last byte was handed
    out (perf_counter), so the time a fill spends after it (fsync, rename) can be reported."""

    def __init__(self, path, rate=None):
        self.exhausted_at = None
        self._handle = open(path, "rb", buffering=0)
        self._queue = None
        if rate:
            self._queue = queue.Queue(maxsize=64)   # 4 MiB "socket buffer"
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._produce, args=(rate * MIB,),
                                            daemon=True)
            self._thread.start()

    def _produce(self, bytes_per_s):
        started, sent = time.perf_counter(), 0
        while not self._stop.is_set():
            chunk = self._handle.read(CHUNK)
            ahead = started + sent / bytes_per_s - time.perf_counter()
            if ahead > 0.002:
                time.sleep(ahead)
            self._queue.put(chunk or None)   # close() drains, so this never blocks for ever
            if not chunk:
                return
            sent += len(chunk)

    def __iter__(self):
        while True:
            chunk = self._queue.get() if self._queue is not None else self._handle.read(CHUNK)
            if not chunk:
                self.exhausted_at = time.perf_counter()
                return
            yield chunk

    def close(self):
        if self._queue is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        self._handle.close()


def to_devnull(iterator):
    """What the server does with a response body: send every chunk, then close()."""
    total = 0
    with open(os.devnull, "wb") as sink:
        try:
            for chunk in iterator:
                total += sink.write(chunk)
        finally:
            iterator.close()
    return total


def bench_fill(workdir, size, repeat, rates):
    progress("fill: writing a %d MiB origin file", size // MIB)
    path, md5, sha512 = make_origin(workdir, size)
    run_dir = tempfile.mkdtemp(prefix="fill-", dir=workdir)
    cache = ImageCache.from_config(Target("sqlite").settings(run_dir, 4 * size))
    all_hashes = ImageCache.from_config({**Target("sqlite").settings(run_dir, 4 * size),
                                         "image_cache_verify_hashes": "all"})
    hashes = {"checksum": md5, "os_hash_algo": "sha512", "os_hash_value": sha512}

    def fill(origin, inline=False, every_hash=False, **record):
        """``inline``: as fills ran before early writeback and hashing threads (the
        comparison row): every chunk hashed in the stream's thread, all writeback at commit."""
        image_id = str(uuid.uuid4())
        if inline:
            writer = cache.admit(image_id, size)
            writer.writeback_bytes = 0
            tee = fill_mod.TeeIterator(image_id, origin, writer, verify.Verifier(
                size, threads_from=None, all_hashes=True, **record), hold_last_chunk=True)
        else:
            tee = (all_hashes if every_hash else cache).fill(image_id, origin, size, **record)
        assert tee.caching, "fill was not admitted"
        done = to_devnull(tee)
        assert tee.committed and cache.is_cached(image_id), "fill did not commit"
        filled.append(image_id)   # deleted after the clock stops: unlinking 1 GiB takes time
        return done

    filled = []

    cases = [("no cache → /dev/null", to_devnull),
             ("fill, size check only, " + INLINE, lambda origin: fill(origin, inline=True)),
             ("fill, size check only", fill),
             ("fill, md5 + sha512 verified, " + INLINE,
              lambda origin: fill(origin, inline=True, **hashes)),
             ("fill, md5 + sha512 verified (verify_hashes = all)",
              lambda origin: fill(origin, every_hash=True, **hashes)),
             ("fill, sha512 verified (the default: the strongest hash)",
              lambda origin: fill(origin, **hashes))]
    results = {}
    try:
        to_devnull(Origin(path))   # warm the page cache
        for rate in rates:
            label = "%d MiB/s stream" % rate if rate else "page cache, unthrottled"
            runs = {case: [] for case, _ in cases}   # (wall, tail, cpu) per run
            for run in range(repeat):
                for case, func in cases:
                    origin = Origin(path, rate)
                    started, cpu = time.perf_counter(), time.process_time()
                    assert func(origin) == size
                    ended = time.perf_counter()
                    runs[case].append((ended - started, ended - origin.exhausted_at,
                                       time.process_time() - cpu))
                    while filled:
                        cache.delete_cached_image(filled.pop())
                    progress("fill %s run %d/%d %s: %.2f s (%.2f s after the origin ended)",
                             label, run + 1, repeat, case, *runs[case][-1][:2])
            results[label] = {case: (min(r[0] for r in rs), statistics.median(r[0] for r in rs),
                                     statistics.median(r[1] for r in rs), min(r[2] for r in rs))
                              for case, rs in runs.items()}
    finally:
        cache.close()
        all_hashes.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        os.unlink(path)
    return results


def bench_hits(target, hits, workdir, hot=500, unbatched=2000):
    run_dir = tempfile.mkdtemp(prefix="hits-", dir=workdir)
    cache = ImageCache.from_config(target.settings(run_dir, 1 << 40))
    driver = cache.driver
    try:
        ids = image_ids(hot)
        populate(cache, ids, 4096)
        progress("hits %s: %d recorded hits over %d images", target.name, hits, hot)
        started, cpu = time.perf_counter(), time.process_time()
        for index in range(hits):
            driver.record_hit(ids[index % hot])
        record_s, record_cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        driver.flush_hits()
        flush_s = time.perf_counter() - started
        progress("hits %s: %d hits, one write each", target.name, unbatched)
        started = time.perf_counter()
        for index in range(unbatched):
            driver.apply_hits({ids[index % hot]: (1, time.time())})
        each_s = time.perf_counter() - started
        expected = hits // hot + 1 + unbatched // hot
        got = driver.get_hit_count(ids[0])
        if got != expected:
            raise SystemExit("hits %s: %d hits recorded for %s, expected %d"
                             % (target.name, got, ids[0], expected))
        target.forget_node(cache)
        return {"record_us": record_s / hits * 1e6, "record_cpu_us": record_cpu / hits * 1e6,
                "amortized_us": (record_s + flush_s) / hits * 1e6,
                "each_us": each_s / unbatched * 1e6}
    finally:
        cache.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def report_prune(results, sizes):
    print("### Prune: evict half of N entries (one pass)\n")
    print("Wall seconds (CPU seconds of the process, user + system, in brackets: not inflated"
          " by other processes' load). Growth = time(10·N) / time(N).\n")
    print("| target | " + " | ".join("N=%d" % n for n in sizes) + " | growth wall | growth CPU |")
    print("|---|" + "---:|" * (len(sizes) + 2))
    for name, by_n in results.items():
        cells = ["%.2f s (%.2f)" % (by_n[n]["prune_s"], by_n[n]["cpu_s"]) for n in sizes]
        growth = {key: ", ".join("×%.1f" % (by_n[b][key] / by_n[a][key])
                                 for a, b in zip(sizes, sizes[1:]) if b == a * 10) or "–"
                  for key in ("prune_s", "cpu_s")}
        print("| %s | %s | %s | %s |" % (name, " | ".join(cells), growth["prune_s"],
                                         growth["cpu_s"]))
    print("\nPopulating (sparse files + one bulk metadata call, not part of the prune):",
          "; ".join("%s N=%d %.1f s" % (name, n, by_n[n]["populate_s"])
                    for name, by_n in results.items() for n in sizes if n == sizes[-1]))
    print()


def report_fill(results, size):
    print("### Fill: %d MiB origin stream, 64 KiB chunks\n" % (size // MIB))
    print("| origin | path | best | median | MiB/s | ratio to no cache | tail | CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for origin, cases in results.items():
        base = cases["no cache → /dev/null"][0]
        for case, (best, median, tail, cpu) in cases.items():
            print("| %s | %s | %.2f s | %.2f s | %.0f | %.2f | %.2f s | %.2f s |" % (
                origin, case, best, median, size / MIB / best, base / best, tail, cpu))
    print("\nratio = best no-cache time / best time; tail = median time from the origin's last"
          " byte to the client's (fsync, rename, record); CPU = process CPU seconds (best).")
    print()


def report_hits(results):
    print("### Hits: cost per recorded hit\n")
    print("| target | hit path (record_hit) | its CPU | incl. batched writes |"
          " one write per hit (Glance) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in results.items():
        print("| %s | %.2f µs | %.2f µs | %.2f µs | %.0f µs |" % (
            name, row["record_us"], row["record_cpu_us"], row["amortized_us"], row["each_us"]))
    print()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="prune,fill,hits")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS))
    parser.add_argument("--fill-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--origin-rates", default="0,100",
                        help="origin stream rates in MiB/s for the fill (0 = unthrottled)")
    parser.add_argument("--hits", type=int, default=200000)
    parser.add_argument("--postgres-url", default=os.environ.get(ENV_URLS["postgresql"]))
    parser.add_argument("--mysql-url", default=os.environ.get(ENV_URLS["mysql"]))
    parser.add_argument("--workdir", default=None,
                        help="directory for the caches (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    only = set(args.only.split(","))
    sizes = [int(n) for n in args.sizes.split(",")]
    workdir = tempfile.mkdtemp(prefix="bench-cache-", dir=args.workdir)
    names = [name for name in args.targets.split(",") if name]
    if "xattr" in names and not xattr_driver.xattrs_supported(workdir):
        progress("skipping xattr: %s has no user xattrs", workdir)
        names.remove("xattr")
    targets = []
    try:
        urls = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
        if only & {"prune", "hits"}:   # the fill always uses the sqlite driver
            targets = [Target(name, urls) for name in names]
        print("## Cache (tools/bench_cache.py)\n")
        print("Command: `.venv/bin/python tools/bench_cache.py %s`\n" % " ".join(
            sys.argv[1:] if argv is None else argv))
        print("Machine: %d CPUs, load average at start %.1f %.1f %.1f\n"
              % ((os.cpu_count(),) + os.getloadavg()))
        if "prune" in only:
            report_prune({t.name: {n: bench_prune(t, n, workdir) for n in sizes}
                          for t in targets}, sizes)
        if "fill" in only:
            rates = [int(rate) for rate in args.origin_rates.split(",")]
            report_fill(bench_fill(workdir, args.fill_mib * MIB, args.repeat, rates),
                        args.fill_mib * MIB)
        if "hits" in only:
            report_hits({t.name: bench_hits(t, args.hits, workdir) for t in targets})
    finally:
        for target in targets:
            target.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
