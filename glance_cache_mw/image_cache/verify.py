"""Verifying a fill: size, and the multihash and/or MD5 checksum of the bytes that went by.

By default only the strongest hash the record has is computed: ``os_hash_value`` (Glance's
multihash, SHA-512 unless ``os_hash_algo`` says otherwise), else the legacy MD5 ``checksum``.
MD5 adds nothing to a matching SHA-512 but costs as much CPU again (0.36 s per 256 MiB here);
``all_hashes=True`` (``image_cache_verify_hashes = all``) checks both.

After ``read_back_from(fd)`` (a read-only fd on the cache file a fill writes), the hashing
threads read the bytes back from that file (the page cache) instead of being handed the
chunks: the stream then never waits for hashing, which is slower than sending (SHA-512
~0.85 GB/s here), nothing is buffered in memory, and what is verified is what was written.

``Verifier`` hashes a large body in OS threads beside the stream (one per digest; hashlib
releases the GIL on large buffers), so the client keeps receiving while MD5 and the multihash
run on the other cores. Its verdict (``problem()``) is what decides whether a fill is
committed.
"""

import collections
import hashlib
import logging
import os
import sys
import threading
import time

LOG = logging.getLogger(__name__)

# Bodies up to this size are hashed inline: starting two threads costs more than it saves.
HASH_IN_THREADS_FROM = 4 * 1024 * 1024
# How far (bytes) a hashing thread may fall behind the stream before the stream waits.
HASH_QUEUE_BYTES = 8 * 1024 * 1024
# A hashing thread is woken when this many bytes wait for it (and at the end).
HASH_BATCH_BYTES = 1024 * 1024
# Bytes a hashing thread reads back from the file at a time (file mode).
HASH_READ_BYTES = 1024 * 1024


class Verifier:
    """Counts and hashes a body; ``problem()`` says why it does not match the image record.

    Past ``threads_from`` bytes each digest is computed in its own OS thread (hashlib releases
    the GIL on buffers over 2 KiB), so the digests run on other cores while the stream's
    thread writes and sends. They may lag ``queue_bytes`` behind the stream; beyond
    that ``update()`` waits (sleeping, so an eventlet hub keeps running). ``problem()`` waits
    for every digest; ``close()`` stops the threads and joins them (the owner calls it).
    """

    def __init__(self, size, checksum=None, os_hash_algo=None, os_hash_value=None, *,
                 all_hashes=False, threads_from=HASH_IN_THREADS_FROM,
                 queue_bytes=HASH_QUEUE_BYTES):
        """Raises ValueError when os_hash_algo is unknown to hashlib (cannot be verified).

        ``all_hashes``: check the MD5 checksum too when there is a multihash.
        ``threads_from=None`` hashes every chunk inline, in the caller's thread.
        """
        self._file_fd = None
        self.size = size
        self.bytes_seen = 0
        self._checksum = checksum
        wants_md5 = checksum and (all_hashes or not os_hash_value)
        self._md5 = hashlib.md5(usedforsecurity=False) if wants_md5 else None
        self._os_hash_value = os_hash_value
        self._multihash = None
        if os_hash_value:
            try:
                self._multihash = hashlib.new(os_hash_algo or "sha512")
            except (ValueError, TypeError):
                raise ValueError("unsupported os_hash_algo %r" % (os_hash_algo,)) from None
        self._hashes = [h for h in (self._md5, self._multihash) if h is not None]
        self._threads_from = threads_from
        self._queue_bytes = queue_bytes
        self._threads = None
        self._closed = False

    def read_back_from(self, fd):
        """Hash the bytes by reading them back from ``fd`` (which this Verifier now owns and
        closes) instead of from the chunks: call before the first ``update()``; after it,
        ``update(chunk)`` must come once ``chunk`` is written to that file."""
        if self.bytes_seen:
            raise ValueError("read_back_from() after update()")
        self._file_fd = fd

    @property
    def reads_file(self):
        """True when the digests read the bytes back from a file (``read_back_from``)."""
        return self._file_fd is not None

    @property
    def algorithms(self):
        """The names of the digests being computed, e.g. ["sha512"]."""
        return [digest.name for digest in self._hashes]

    @property
    def threads(self):
        """The hashing threads started so far (empty while hashing inline)."""
        return list(self._threads or ())

    def update(self, chunk):
        if self._closed:
            raise ValueError("update() of a closed Verifier")
        self.bytes_seen += len(chunk)
        if not self._hashes:
            return
        if self._threads is None:
            if self._threads_from is None or self.bytes_seen <= self._threads_from:
                for digest in self._hashes:
                    digest.update(chunk)
                return
            batch_bytes = min(HASH_BATCH_BYTES, self._queue_bytes)
            start = self.bytes_seen - len(chunk)
            self._threads = [_HashThread(digest, batch_bytes, self._file_fd, start)
                             for digest in self._hashes]
        if self._file_fd is not None:
            for thread in self._threads:
                thread.put_length(len(chunk))   # read back from the file: never behind
            return
        if type(chunk) is not bytes:
            chunk = bytes(chunk)   # hashed later: a buffer the source reuses must not change
        for thread in self._threads:
            thread.put(chunk)
        if any(thread.is_behind(self._queue_bytes) for thread in self._threads):
            _wait_until(lambda: not any(thread.is_behind(self._queue_bytes)
                                        for thread in self._threads))

    def problem(self):
        """None when size and every known hash match; else a reason."""
        if self.size is not None and self.bytes_seen != self.size:
            return "got %d bytes, expected %d" % (self.bytes_seen, self.size)
        failure = self._finish_hashing()
        if failure is not None:
            return failure
        if self._md5 is not None and self._md5.hexdigest() != self._checksum:
            return "checksum %s, expected %s" % (self._md5.hexdigest(), self._checksum)
        if self._multihash is not None and self._multihash.hexdigest() != self._os_hash_value:
            return "%s %s, expected %s" % (self._multihash.name, self._multihash.hexdigest(),
                                          self._os_hash_value)
        return None

    def _finish_hashing(self):
        """Wait until every queued chunk is hashed; a reason if that cannot happen."""
        if self._closed:
            return "verification was stopped"
        for thread in self._threads or ():
            thread.finish()
        for thread in self._threads or ():
            thread.join()
            if thread.failure is not None:
                return "hashing failed: %r" % (thread.failure,)
        return None

    def close(self):
        """Stop and join the hashing threads; the verdict is then always a mismatch."""
        if self._closed:
            return
        self._closed = True
        try:
            for thread in self._threads or ():
                thread.stop()
            for thread in self._threads or ():
                thread.join()
        finally:
            fd, self._file_fd = self._file_fd, None
            if fd is not None:
                os.close(fd)


class _HashThread:
    """One digest, fed in order from a real OS thread (also under eventlet's monkey
    patching: a green thread would hash on the hub's core, not beside it). It is handed
    chunks (``put``), or with ``file_fd`` only their lengths (``put_length``) and reads the
    bytes from the file from offset ``start`` on."""

    def __init__(self, digest, batch_bytes=HASH_BATCH_BYTES, file_fd=None, start=0):
        """``batch_bytes``: wake the thread once this many bytes wait for it."""
        self.digest = digest
        self._batch_bytes = batch_bytes
        self.queued = start  # bytes handed over; written by the stream's thread only
        self.hashed = start  # bytes hashed; written by the hashing thread only
        self.failure = None
        self._chunks = collections.deque()
        self._file_fd = file_fd
        self._finishing = False
        self._stopped = False
        real_threading = os_threading()
        self._wake = real_threading.Event()
        self._thread = real_threading.Thread(target=self._run, daemon=True,
                                             name="cache-hash-%s" % digest.name)
        self._thread.start()

    def is_alive(self):
        return self._thread.is_alive()

    @property
    def native_id(self):
        """The OS thread's id (a green thread has none of its own)."""
        return self._thread.native_id

    def is_behind(self, limit):
        """True while more than ``limit`` queued bytes wait for a live thread."""
        return self.queued - self.hashed > limit and self._thread.is_alive()

    def put(self, chunk):
        if self.failure is not None:
            return
        self._chunks.append(chunk)
        self.queued += len(chunk)
        if self.queued - self.hashed >= self._batch_bytes:
            self._wake.set()   # a wake-up per batch, not per chunk: each one costs a switch

    def put_length(self, length):
        """``length`` more bytes are in the file (file mode)."""
        self.queued += length
        if self.queued - self.hashed >= self._batch_bytes:
            self._wake.set()

    def finish(self):
        """No more chunks: hash what is queued, then end."""
        self._finishing = True
        self._chunks.append(None)
        self._wake.set()

    def stop(self):
        """End after the chunk being hashed; drop the rest."""
        self._stopped = True
        self._wake.set()

    def join(self):
        # A real thread: waiting by polling keeps an eventlet hub (and its sleep) running.
        _wait_until(lambda: not self._thread.is_alive())
        self._thread.join()
        self._chunks.clear()

    def _run(self):
        try:
            if self._file_fd is not None:
                self._hash_file()
                return
            while not self._stopped:
                self._wake.wait()
                self._wake.clear()
                while self._chunks and not self._stopped:
                    chunk = self._chunks.popleft()
                    if chunk is None:
                        return
                    self.digest.update(chunk)
                    self.hashed += len(chunk)
        except Exception as err:   # e.g. MemoryError: problem() reports it, nothing commits
            self.failure = err

    def _hash_file(self):
        buffer = bytearray(HASH_READ_BYTES)
        view = memoryview(buffer)
        while not self._stopped:
            finishing = self._finishing   # read before ``queued``: then it is final
            while self.hashed < self.queued and not self._stopped:
                want = min(len(buffer), self.queued - self.hashed)
                got = os.preadv(self._file_fd, [view[:want]], self.hashed)
                if got == 0:
                    raise IOError("the file ends at %d bytes, %d were written"
                                  % (self.hashed, self.queued))
                self.digest.update(view[:got])
                self.hashed += got
            if finishing:
                return
            self._wake.wait()
            self._wake.clear()


def os_threading():
    """The threading module of real OS threads, even when eventlet monkey-patched it."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        return patcher.original("threading")
    return threading


def _wait_until(predicate, max_sleep_s=0.002):
    """Poll with time.sleep: a green sleep under eventlet, so the hub serves others meanwhile."""
    delay_s = 0.0001
    while not predicate():
        time.sleep(delay_s)
        delay_s = min(2 * delay_s, max_sleep_s)
