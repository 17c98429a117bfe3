"""tests/functional/serving.py: what the functional tests and the download benchmark share."""

import os
import signal
import sys

from tests.functional import serving
from tests.functional.server import wait_for
from tests.unit.cache_helpers import ClosableBody

# Parent prints its child's pid, then both sleep until signalled.
_PARENT_AND_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n")


def test_paced_body_yields_every_chunk_counts_the_bytes_and_closes_the_body():
    body = ClosableBody([b"abc", b"", b"defgh"])
    paced = serving.PacedBody(body, seconds_per_byte=0.0)
    assert b"".join(paced) == b"abcdefgh"
    assert paced.sent == 8
    assert not body.closed
    paced.close()
    assert body.closed


def _gone(pid):
    """No such process, or a zombie nobody has reaped yet."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stop_process_with_group_ends_the_children_too(tmp_path):
    out = str(tmp_path / "out")
    process = serving.start_process([sys.executable, "-c", _PARENT_AND_CHILD], str(tmp_path),
                                    dict(os.environ), out, new_session=True)
    try:
        with open(out) as handle:
            wait_for(lambda: handle.seek(0) == 0 and handle.read().strip(), what="child pid")
            handle.seek(0)
            child = int(handle.read())
        assert serving.stop_process(process, timeout_s=10, group=True) == -signal.SIGTERM
        wait_for(lambda: _gone(child), what="the child to end with its group")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_wait_until_gives_up_once_the_process_exits(tmp_path):
    out = str(tmp_path / "out")
    process = serving.start_process([sys.executable, "-c", "raise SystemExit(3)"],
                                    str(tmp_path), dict(os.environ), out)
    assert serving.wait_until(lambda: None, process, timeout_s=30) is None
    assert process.wait(timeout=5) == 3
