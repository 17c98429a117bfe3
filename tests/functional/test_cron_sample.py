"""etc/cron.d/glance-cache-mw: each job, run as cron runs it, reports a failed command.

Cron runs the command part of a line with the file's SHELL and variables. The commands are
stand-ins (a script exiting with a chosen status) and ``logger`` is one that records its
input, so the test needs neither syslog nor an installed service.
"""

import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRON_FILE = os.path.join(REPO, "etc", "cron.d", "glance-cache-mw")


def cron_file():
    """(variables, [(command name, command line)]) of the sample."""
    variables, jobs = {}, []
    with open(CRON_FILE, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            assignment = re.match(r"^([A-Z]+)=(.*)$", line)
            if assignment:
                variables[assignment.group(1)] = assignment.group(2)
                continue
            fields = line.split(None, 6)   # m h dom mon dow user command
            name = re.search(r"\$BIN/(\S+)", fields[6]).group(1)
            jobs.append((name, fields[6]))
    return variables, jobs


def run_job(tmp_path, variables, command, status):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("glance-cache-mw-pruner", "glance-cache-mw-cleaner",
                 "glance-cache-mw-prefetcher"):
        script = bin_dir / name
        script.write_text("#!/bin/sh\necho \"$0 ran: $*\" >&2\nexit %d\n" % status)
        script.chmod(0o755)
    logger = bin_dir / "logger"
    logger.write_text("#!/bin/sh\ncat >> %s\n" % (tmp_path / "syslog"))
    logger.chmod(0o755)
    command = command.replace("cd /var/lib/glance-cache-mw", "cd %s" % tmp_path)
    env = {"PATH": "%s:%s" % (bin_dir, variables["PATH"]), "BIN": str(bin_dir),
           "CONF": variables["CONF"], "HOME": str(tmp_path)}
    return subprocess.run([variables["SHELL"], "-c", command], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_the_sample_has_the_three_jobs():
    variables, jobs = cron_file()
    assert sorted(name for name, _ in jobs) == [
        "glance-cache-mw-cleaner", "glance-cache-mw-prefetcher", "glance-cache-mw-pruner"]
    assert os.path.exists(variables["SHELL"])


@pytest.mark.parametrize("status", [1, 2])
def test_a_failed_command_is_not_swallowed_by_logger(tmp_path, status):
    variables, jobs = cron_file()
    for name, command in jobs:
        result = run_job(tmp_path, variables, command, status)
        assert result.returncode == status, (name, result)
        assert "%s failed: exit status %d" % (name, status) in result.stdout
        assert "%s ran: --config %s" % (name, variables["CONF"]) in (
            tmp_path / "syslog").read_text()


def test_a_successful_run_is_silent(tmp_path):
    variables, jobs = cron_file()
    for name, command in jobs:
        result = run_job(tmp_path, variables, command, 0)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), name
