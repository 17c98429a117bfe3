#!/usr/bin/env python3
"""HTTP download load generator for 127.0.0.1 (never imported by the package).

    python tools/bench_download.py URL [URL ...] --concurrency 16 --duration 10
    python tools/bench_download.py 'http://127.0.0.1:9292/v2/images/ID/file#size=65536&md5=HEX' \
        --concurrency 16 --requests 20000 --json

Each of ``--concurrency`` workers is its own process (multiprocessing, so the GIL does not cap
the client) with one keep-alive connection (re-opened only when the server closes it or a
request fails): ``--client http.client`` uses the standard library (bodies read with
``readinto``); the default ``--client raw`` is a minimal HTTP/1.1 parser on a plain socket
(bodies read with ``recv_into``), because http.client's header parsing alone costs ~0.2 ms of
client CPU per request and would cap small-file runs on 2 cores. Either way every body lands
in one reusable 1 MiB buffer. Workers take the URLs round-robin and stop by themselves: after ``--requests``
requests in total, or when ``--duration`` seconds have passed (a request running then is
finished), and in any case after ``--max-duration`` seconds (socket timeout ``--timeout``).

Checks:
* bytes: every response's body length must equal its Content-Length and, when the URL carries
  ``#size=N``, N; the status must be 200 (or ``--expect-status``). Anything else is an error.
* hash: the MD5 of the body is compared with ``#md5=HEX`` in the URL, else with the
  response's Content-MD5 header, on a sample: request number ``k x C + worker`` is hashed when
  it is a multiple of ``--hash-every`` (0 = never, 1 = every response). Hashing runs inline on the
  buffer just read, so a hashed response is slower (MD5 is ~0.6 GB/s per core); the sample
  keeps the client from becoming the bottleneck. How many responses were hashed is reported.

Reported: requests, errors (by kind), requests/s, MiB/s, latency p50/p99/max in ms (time from
sending the request to the last body byte), the ``X-Image-Cache`` values seen, and with
``--json`` also every request's start, headers-received and end times (``time.monotonic()``,
comparable across processes).
"""

import argparse
import hashlib
import http.client
import json
import multiprocessing
import socket
import sys
import time
import urllib.parse

BUFFER_SIZE = 1 << 20
MIB = 1 << 20


class Target:
    """One URL: where to connect and what its body must be."""

    def __init__(self, spec):
        url, _, fragment = spec.partition("#")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1":
            raise ValueError("only http://127.0.0.1 targets are allowed, not %r" % url)
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        expect = urllib.parse.parse_qs(fragment)
        self.size = int(expect["size"][0]) if "size" in expect else None
        self.md5 = expect["md5"][0].lower() if "md5" in expect else None


def _percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * (len(sorted_values) - 1)))))
    return sorted_values[index]


class RawConnection:
    """A minimal HTTP/1.1 keep-alive GET client on a plain socket (``--client raw``).

    http.client parses headers with the email package: ~0.2 ms of client CPU per request,
    which caps a 2-core machine near 1,000 small responses/s and would measure the client, not
    the server. This one sends a prebuilt request, parses only the status line and the headers
    it needs, and reads the body with recv_into into the caller's buffer. Chunked bodies are
    reported as errors (every server here sends Content-Length).
    """

    MAX_HEADER = 65536

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def get(self, request, view, digest_for):
        """Send ``request`` (bytes); returns (status, headers, body bytes, digest or None,
        will_close). ``digest_for(headers)`` returns a hash object or None."""
        sock = self.sock
        sock.sendall(request)
        head = bytearray()
        while True:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError("connection closed before the response headers")
            head += view[:n]
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(head) > self.MAX_HEADER:
                raise http.client.HTTPException("response headers too long")
        self.header_time = time.monotonic()
        lines = bytes(head[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(None, 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise http.client.HTTPException("no Content-Length (chunked bodies not supported)")
        remaining = int(headers["content-length"])
        digest = digest_for(headers)
        body = head[end + 4:]
        received = len(body)
        if digest is not None and body:
            digest.update(body)
        remaining -= received
        recv_into, size = sock.recv_into, len(view)
        while remaining > 0:
            n = recv_into(view, remaining if remaining < size else size)
            if not n:
                break
            received += n
            remaining -= n
            if digest is not None:
                digest.update(view[:n])
        will_close = (headers.get("connection", "").lower() == "close"
                      or lines[0].startswith("HTTP/1.0") and
                      headers.get("connection", "").lower() != "keep-alive")
        return status, headers, received, digest, will_close


class Worker:
    """One process, one keep-alive connection, requests until told to stop."""

    def __init__(self, index, targets, args, deadline, quota, concurrency):
        self.index = index
        self.concurrency = concurrency
        self.targets = targets
        self.args = args
        self.deadline = deadline
        self.quota = quota
        self.conn = None
        self.buffer = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.buffer)
        self.records = []   # (start, end, bytes, ok, error, cache_status, hashed, headers at)
        extra = [tuple(part.strip() for part in h.split(":", 1)) for h in args.header]
        self.headers = dict(extra)
        self.requests = {
            id(t): ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (
                t.path, t.host, t.port, "".join("%s: %s\r\n" % kv for kv in extra))
            ).encode("latin-1") for t in targets}

    def connect(self, target):
        if self.conn is None:
            if self.args.client == "raw":
                self.conn = RawConnection(target.host, target.port, self.args.timeout)
            else:
                self.conn = http.client.HTTPConnection(target.host, target.port,
                                                       timeout=self.args.timeout)
                self.conn.connect()
        return self.conn

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self):
        count = 0
        every = self.args.hash_every
        concurrency = self.concurrency
        while time.monotonic() < self.deadline and (self.quota is None or count < self.quota):
            target = self.targets[(self.index + count) % len(self.targets)]
            # Sample over the whole run: global request number (count x C + worker) mod N.
            hash_this = every > 0 and (count * concurrency + self.index) % every == 0
            self.records.append(self.one(target, hash_this))
            count += 1
        self.drop()
        return self.records

    def one(self, target, hash_this):
        start = time.monotonic()
        received, cache_status, hashed, header_time = 0, None, False, None

        def digest_for(headers):
            expected = target.md5 or headers.get("content-md5")
            return hashlib.md5(usedforsecurity=False) if hash_this and expected else None

        try:
            conn = self.connect(target)
            if self.args.client == "raw":
                status, headers, received, digest, will_close = conn.get(
                    self.requests[id(target)], self.view, digest_for)
                header_time = conn.header_time
            else:
                status, headers, received, digest, will_close = self._httpclient(
                    conn, target, digest_for)
                header_time = self._header_time
            if will_close:
                self.drop()
            cache_status = headers.get("x-image-cache")
            length = headers.get("content-length")
            expected_md5 = target.md5 or headers.get("content-md5")
            error = None
            if status != self.args.expect_status:
                error = "status %d" % status
            elif length is None or received != int(length):
                error = "short body (%d of %s bytes)" % (received, length)
            elif target.size is not None and received != target.size:
                error = "size %d, expected %d" % (received, target.size)
            elif digest is not None:
                hashed = True
                if digest.hexdigest() != expected_md5.lower():
                    error = "md5 mismatch"
        except (OSError, ValueError, http.client.HTTPException) as err:
            self.drop()
            error = "%s: %s" % (type(err).__name__, err)
        return (start, time.monotonic(), received, error is None, error, cache_status, hashed,
                header_time)

    def _httpclient(self, conn, target, digest_for):
        conn.request("GET", target.path, headers=self.headers)
        resp = conn.getresponse()
        self._header_time = time.monotonic()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        digest = digest_for(headers)
        received, view, readinto = 0, self.view, resp.readinto
        while True:
            n = readinto(view)
            if not n:
                break
            received += n
            if digest is not None:
                digest.update(view[:n])
        return resp.status, headers, received, digest, resp.will_close


def _worker_main(index, targets, args, start_at, deadline, quota, concurrency, queue):
    worker = Worker(index, targets, args, deadline, quota, concurrency)
    # Connect before the start line so connection set-up is not in the first latency.
    try:
        worker.connect(targets[index % len(targets)])
    except OSError:
        worker.drop()
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    try:
        records = worker.run()
    except BaseException as err:  # report rather than hang the parent
        records = [(time.monotonic(), time.monotonic(), 0, False,
                    "worker crashed: %r" % (err,), None, False, None)]
    queue.put((index, records))


def run(targets, concurrency, requests=None, duration=None, args=None):
    """Run the load; returns the summary dict (see ``summarize``)."""
    if requests is None and duration is None:
        raise ValueError("give --requests or --duration")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.monotonic() + 0.2 + 0.01 * concurrency
    limit = min(duration if duration is not None else args.max_duration, args.max_duration)
    deadline = start_at + limit
    quotas = [None] * concurrency
    if requests is not None:
        quotas = [requests // concurrency + (1 if i < requests % concurrency else 0)
                  for i in range(concurrency)]
    procs = [ctx.Process(target=_worker_main,
                         args=(i, targets, args, start_at, deadline, quotas[i], concurrency, queue),
                         daemon=True)
             for i in range(concurrency)]
    for proc in procs:
        proc.start()
    results = {}
    hard_stop = deadline + args.timeout + 30
    try:
        while len(results) < concurrency:
            remaining = hard_stop - time.monotonic()
            if remaining <= 0:
                break
            try:
                index, records = queue.get(timeout=min(remaining, 1.0))
            except Exception:   # queue.Empty: check whether workers died
                if all(not p.is_alive() for p in procs) and queue.empty():
                    break
                continue
            results[index] = records
    finally:
        for proc in procs:
            proc.join(timeout=1)
            if proc.is_alive():
                proc.kill()
                proc.join()
    missing = concurrency - len(results)
    records = [r for i in sorted(results) for r in results[i]]
    return summarize(records, start_at, concurrency, missing)


def summarize(records, start_at, concurrency, missing_workers=0):
    ok = [r for r in records if r[3]]
    errors = {}
    for r in records:
        if not r[3]:
            errors[r[4]] = errors.get(r[4], 0) + 1
    if missing_workers:
        errors["worker did not report"] = missing_workers
    end = max((r[1] for r in records), default=start_at)
    wall = max(end - start_at, 1e-9)
    latencies = sorted((r[1] - r[0]) * 1000.0 for r in ok)
    total_bytes = sum(r[2] for r in ok)
    statuses = {}
    for r in records:
        statuses[r[5] or "-"] = statuses.get(r[5] or "-", 0) + 1
    return {
        "concurrency": concurrency,
        "requests": len(records),
        "ok": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "hashed": sum(1 for r in records if r[6]),
        "wall_s": wall,
        "bytes": total_bytes,
        "requests_per_s": len(ok) / wall,
        "mib_per_s": total_bytes / MIB / wall,
        "latency_ms": {"p50": _percentile(latencies, 0.50), "p99": _percentile(latencies, 0.99),
                       "max": latencies[-1] if latencies else None},
        "x_image_cache": statuses,
        "start_at": start_at,
        "records": [{"start": r[0], "end": r[1], "bytes": r[2], "ok": r[3], "error": r[4],
                     "x_image_cache": r[5], "hashed": r[6], "headers_at": r[7]}
                    for r in records],
    }


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("urls", nargs="+", metavar="URL",
                        help="http://127.0.0.1:PORT/path, optionally #size=N&md5=HEX")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("-n", "--requests", type=int, help="total requests")
    group.add_argument("-d", "--duration", type=float, help="seconds")
    parser.add_argument("--max-duration", type=float, default=600.0,
                        help="hard bound on the run in seconds (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="socket timeout (s)")
    parser.add_argument("--hash-every", type=int, default=16,
                        help="MD5-check one response in N (spread over workers) "
                             "(0 = never, 1 = all; default %(default)s)")
    parser.add_argument("--expect-status", type=int, default=200)
    parser.add_argument("--client", choices=("raw", "http.client"), default="raw",
                        help="raw: minimal HTTP/1.1 parser on a socket (default; cheap enough "
                             "for 20k small responses/s); http.client: the standard library's")
    parser.add_argument("-H", "--header", action="append", default=[],
                        help="extra request header 'Name: value'")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON (with every request's timings)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    try:
        targets = [Target(spec) for spec in args.urls]
    except ValueError as err:
        raise SystemExit(str(err))
    summary = run(targets, args.concurrency, args.requests, args.duration, args)
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        lat = summary["latency_ms"]
        fmt = lambda v: "-" if v is None else "%.2f" % v  # noqa: E731
        print("requests %d ok %d errors %d hashed %d in %.2f s: %.1f req/s, %.1f MiB/s, "
              "latency ms p50 %s p99 %s max %s; X-Image-Cache %s"
              % (summary["requests"], summary["ok"], summary["errors"], summary["hashed"],
                 summary["wall_s"], summary["requests_per_s"], summary["mib_per_s"],
                 fmt(lat["p50"]), fmt(lat["p99"]), fmt(lat["max"]),
                 json.dumps(summary["x_image_cache"])))
        for kind, count in summary["error_kinds"].items():
            print("  error x%d: %s" % (count, kind))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
