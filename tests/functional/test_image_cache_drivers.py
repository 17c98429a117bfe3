"""The cache drivers' contract in other processes: the xattr driver refuses a filesystem without
user xattrs (a ramfs in a private mount namespace), and hits survive a process that exits without
close(). The rest of the contract is tests/unit/test_image_cache_drivers.py, whose fixtures these
use; tests/db/test_image_cache_drivers_centralized_db.py runs both on every database."""

import json
import subprocess
import sys
import textwrap

from tests.unit import cache_helpers as helpers
from tests.unit.test_image_cache_drivers import (  # noqa: F401  (fixtures)
    REPO, driver, settings, store)


NO_XATTR_FS = textwrap.dedent("""
    import os, subprocess, sys
    from glance_cache_mw import exception
    from glance_cache_mw.image_cache import drivers
    directory = sys.argv[1]
    os.makedirs(directory)
    mount = subprocess.run(["mount", "-t", "ramfs", "ramfs", directory],
                           capture_output=True, text=True)
    if mount.returncode:
        print("skip: cannot mount a ramfs: " + mount.stderr.strip())
        sys.exit(0)
    try:
        drivers.load_driver("xattr", {"image_cache_dir": directory + "/cache"})
    except exception.BadDriverConfiguration as err:
        assert "no user extended attributes" in str(err), err
        assert sorted(os.listdir(directory + "/cache")) == ["incomplete", "invalid", "queue"]
        print("ok")
""")


def test_xattr_refuses_a_filesystem_without_user_xattrs(tmp_path):
    """ramfs has no user xattrs: mounted for real in a private mount namespace (needs root)."""
    helpers.run_with_a_mount(NO_XATTR_FS, tmp_path / "ramfs", "a ramfs")


HIT_AND_EXIT = textwrap.dedent("""
    import json, sys
    from glance_cache_mw.image_cache.drivers import load_driver
    settings = json.loads(sys.argv[1])
    driver = load_driver(settings["image_cache_driver"], settings)
    driver.record_hit("img")
    driver.record_hit("img")
    # no close(): the process just ends
""")


def test_hits_survive_an_exit_without_close(driver, settings):
    store(driver, "img", b"x")
    subprocess.run([sys.executable, "-W", "ignore", "-c", HIT_AND_EXIT, json.dumps(settings)],
                   check=True, timeout=helpers.WAIT_S, cwd=REPO)
    assert driver.get_hit_count("img") == 2
