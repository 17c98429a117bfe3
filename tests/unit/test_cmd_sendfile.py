"""The built-in server's wsgi.file_wrapper (cmd/sendfile.py): FileWrapper and the sendfile
loop. AccessLog passing it through is in test_middleware_access_log.py, CacheFilter handing
range hits to it in test_middleware_cache_wrappers.py."""

import fcntl
import io
import os

import pytest

from glance_cache_mw.cmd import sendfile

DATA = os.urandom(200_000)


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(DATA)
    return path


# --- FileWrapper ---------------------------------------------------------------------------

def test_file_wrapper_iterates_from_the_position_up_to_its_limit(data_file):
    handle = open(data_file, "rb")
    handle.seek(1000)
    wrapper = sendfile.FileWrapper(handle, 4096)
    wrapper.limit = 10_000
    assert b"".join(wrapper) == DATA[1000:11_000]
    assert wrapper.sent == 10_000
    wrapper.close()
    assert handle.closed


def test_file_wrapper_without_limit_reads_to_the_end():
    wrapper = sendfile.FileWrapper(io.BytesIO(DATA), 65536)
    assert b"".join(wrapper) == DATA and wrapper.sent == len(DATA)


def test_close_callbacks_run_once_even_if_the_file_fails_to_close():
    class BadFile:
        def close(self):
            raise OSError("EIO")

    wrapper = sendfile.FileWrapper(BadFile())
    calls = []
    wrapper.add_close_callback(calls.append)
    for _ in range(2):
        with pytest.raises(OSError):
            wrapper.close()
    assert calls == [wrapper]


# --- send_file ------------------------------------------------------------------------------

def test_send_file_waits_while_the_output_is_full_and_sends_every_byte(data_file):
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    received, waits = [], []

    def drain():                  # the pipe holds 64 KiB: the "client" reads when it is full
        waits.append(1)
        received.append(os.read(read_end, 1 << 20))

    try:
        with open(data_file, "rb") as handle:
            chunks = list(sendfile.send_file(write_end, handle.fileno(), 5000, 150_000, drain))
            assert handle.tell() == 0        # sendfile with an offset leaves the position
        os.close(write_end)
        write_end = None
        while True:
            rest = os.read(read_end, 1 << 20)
            if not rest:
                break
            received.append(rest)
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
    assert sum(chunks) == 150_000 and len(chunks) > 1 and waits
    assert b"".join(received) == DATA[5000:155_000]


def test_send_file_stops_where_the_file_ends(data_file, tmp_path):
    out = tmp_path / "out"
    with open(data_file, "rb") as handle, open(out, "wb") as target:
        chunks = list(sendfile.send_file(target.fileno(), handle.fileno(), len(DATA) - 10,
                                         100, lambda: None))
    assert sum(chunks) == 10 and out.read_bytes() == DATA[-10:]
