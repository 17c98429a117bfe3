"""Helpers for the image cache tests: real processes, gated origin bodies, probes."""

import hashlib
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys

import pytest

from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.image_cache.drivers import xattr as xattr_driver

MP = multiprocessing.get_context("fork")
WAIT_S = 60   # generous upper bound for a child to reach a point; never a timing assertion


def xattr_supported(path):
    return xattr_driver.xattrs_supported(str(path))


def settings(tmp_path, driver="sqlite", **overrides):
    """INI-style settings for a cache in ``tmp_path/cache``."""
    values = {"image_cache_dir": str(tmp_path / "cache"), "image_cache_driver": driver,
              "image_cache_max_size": str(10 * 1024 * 1024), "image_cache_stall_time": "86400",
              "chunk_size": "4096"}
    values.update({key: str(value) for key, value in overrides.items()})
    return values


def make_cache(tmp_path, driver="sqlite", **overrides):
    return ImageCache.from_config(settings(tmp_path, driver, **overrides))


def body(size, seed=b""):
    """Deterministic pseudo-random bytes, so offsets matter when comparing."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def chunks(data, size=4096):
    return [data[i:i + size] for i in range(0, len(data), size)]


def hashes(data, algo="sha512"):
    return {"checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": algo,
            "os_hash_value": hashlib.new(algo, data).hexdigest()}


def new_id():
    return secrets.token_hex(8)


def drain(iterator):
    """Consume a WSGI iterator completely, always closing it; return the bytes."""
    try:
        return b"".join(iterator)
    finally:
        iterator.close()


class Origin:
    """An origin body that records close() (PEP 3333) and can fail after some chunks."""

    def __init__(self, parts, fail_after=None, error=None):
        self._parts = list(parts)
        self._fail_after = fail_after
        self._error = error or IOError("origin connection reset")
        self.closed = False
        self.served = 0

    def __iter__(self):
        for index, part in enumerate(self._parts):
            if self._fail_after is not None and index == self._fail_after:
                raise self._error
            self.served += 1
            yield part

    def close(self):
        self.closed = True


class ClosableBody:
    """A WSGI body whose __iter__ is not itself, with a close() to be called (PEP 3333:
    whoever consumes it must close the body, not what its __iter__ returned)."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = False

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True


class GatedOrigin:
    """Yields one chunk per ``release()``; works across fork (a pipe carries the gate)."""

    def __init__(self, parts):
        self._parts = list(parts)
        self._read_end, self._write_end = MP.Pipe(duplex=False)
        self.closed = False

    def release(self, count=1):
        for _ in range(count):
            self._write_end.send(True)

    def __iter__(self):
        for part in self._parts:
            if not self._read_end.poll(WAIT_S):
                raise TimeoutError("gate never opened")
            self._read_end.recv()
            yield part

    def close(self):
        self.closed = True
        self._read_end.close()
        self._write_end.close()



def start_fill(cache, image_id, parts, record, released=2):
    """A fill with ``released`` chunks on disk, its client having read the first one."""
    origin = GatedOrigin(parts)
    tee = cache.fill(image_id, origin, sum(map(len, parts)), **record)
    assert tee.caching
    origin.release(released)
    first = next(tee)
    return origin, tee, first


def failing_after(origin, count):
    """``origin``'s parts until part ``count``, which raises a connection reset."""
    for index, part in enumerate(origin):
        if index == count:
            raise IOError("origin connection reset")
        yield part

def run_child(target, *args):
    """Start ``target(conn, *args)`` in a forked process; returns (process, parent conn)."""
    parent, child = MP.Pipe()
    process = MP.Process(target=_child_main, args=(target, child) + args, daemon=True)
    process.start()
    child.close()
    return process, parent


def _child_main(target, conn, *args):
    try:
        target(conn, *args)
    except BaseException as err:   # report, so the parent fails with the reason
        conn.send(("error", repr(err)))
        raise
    finally:
        conn.close()


def recv(conn):
    """The next message from a child; fails the test if none arrives at all."""
    assert conn.poll(WAIT_S), "child sent nothing"
    message = conn.recv()
    assert message[0] != "error", message
    return message


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def incomplete(cache):
    return listing(cache.driver.get_path("incomplete"))


def invalid(cache):
    return listing(cache.driver.get_path("invalid"))


def cached_bytes(cache, image_id):
    with open(cache.driver.get_image_filepath(image_id), "rb") as handle:
        return handle.read()


def run_with_a_mount(script, mount_dir, what):
    """Run ``script`` (``python -c``, argv[1] = ``mount_dir``) in a private mount namespace,
    where it mounts ``what`` for real; it prints "ok" when its checks passed, or "skip: why".
    Needs root and unshare(1): the test is skipped without them."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount %s" % what)
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", sys.executable, "-W", "ignore",
         "-c", script, str(mount_dir)],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if result.stdout.startswith("skip:"):
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
