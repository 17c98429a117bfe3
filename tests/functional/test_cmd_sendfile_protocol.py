"""cmd/sendfile.SendfileProtocol under eventlet.wsgi: the cases of sendfile_protocol_cases.py,
run by pytest in a process of their own (see that module's docstring for why)."""

import os
import subprocess
import sys

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sendfile_protocol_cases.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(CASES)))


def test_the_sendfile_protocol_cases_pass_in_their_own_process():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
         "error::ResourceWarning", CASES], cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout
