"""The metrics directory (metrics_dir.py) of WSGI servers: one per process group, and the
directories of process groups that are gone are dropped (a real forked process makes one)."""

import os

from tests.unit import cache_helpers as helpers


def test_wsgi_servers_share_a_dir_per_process_group_and_drop_dead_groups(tmp_path):
    from glance_cache_mw import metrics_dir

    dead = helpers.MP.Process(target=os.setpgrp)   # a group that existed and is gone
    dead.start()
    dead.join()
    stale = tmp_path / ("pgid-%d" % dead.pid)
    stale.mkdir()
    environ = {}
    path = metrics_dir.prepare_wsgi_dir(str(tmp_path), environ)
    assert path == str(tmp_path / ("pgid-%d" % os.getpgrp())) == environ[metrics_dir.ENV]
    assert os.path.isdir(path) and not stale.exists()
    assert metrics_dir.prepare_wsgi_dir(str(tmp_path), {}) == path   # a sibling worker
