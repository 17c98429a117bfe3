"""The Verifier (image_cache/verify.py) under eventlet, in a subprocess: the digests are
computed in real threads while the hub keeps running."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.unit import cache_helpers as helpers


EVENTLET_FILL = """
import eventlet
eventlet.monkey_patch()
import hashlib
import eventlet.patcher
from glance_cache_mw.image_cache import fill, verify
data = bytes(range(256)) * 4096 * 8          # 8 MiB
verifier = verify.Verifier(len(data), hashlib.md5(data).hexdigest(), "sha512",
                           hashlib.sha512(data).hexdigest(), all_hashes=True, threads_from=0)
ticks = []
def ticker():                                # runs only if the hub is never blocked for long
    while True:
        ticks.append(1)
        eventlet.sleep(0.001)
eventlet.spawn(ticker)
chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
tee = fill.TeeIterator("img", iter(chunks), None, verifier)
assert b"".join(tee) == data
tee.close()
native = {t.native_id for t in verifier.threads}
real_threading = eventlet.patcher.original("threading")
assert len(native) == 2 and real_threading.get_native_id() not in native, native
assert not any(t.is_alive() for t in verifier.threads)
print("ok", len(ticks) > 0)
"""


def test_under_eventlet_the_digests_are_computed_in_real_threads():
    if importlib.util.find_spec("eventlet") is None:   # not imported here: it hooks fork()
        pytest.skip("eventlet is not installed")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", EVENTLET_FILL],
                            capture_output=True, text=True, timeout=helpers.WAIT_S,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))))
    assert result.returncode == 0 and result.stdout.split() == ["ok", "True"], result.stderr
