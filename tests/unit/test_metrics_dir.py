"""The metrics directory of a multiprocess server (metrics_dir.py): emptied at a server's start,
an operator's directory used as it is, a clear error when unusable. Dropping the directories of
dead process groups is in tests/functional/test_metrics_dir.py."""

import os

import pytest

from glance_cache_mw import exception


def test_the_server_empties_its_metrics_dir_at_start(tmp_path):
    from glance_cache_mw import metrics_dir

    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "keep.txt").write_text("not ours")
    environ = {}
    assert metrics_dir.prepare_server_dir(str(directory), environ) == str(directory)
    assert environ == {metrics_dir.ENV: str(directory)}
    assert sorted(os.listdir(directory)) == ["keep.txt"]


def test_wsgi_servers_use_the_operators_dir_as_it_is(tmp_path):
    from glance_cache_mw import metrics_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "counter_1.db").write_bytes(b"kept")
    environ = {metrics_dir.ENV: str(mine)}
    assert metrics_dir.prepare_wsgi_dir(str(tmp_path / "unused"), environ) == str(mine)
    assert os.listdir(mine) == ["counter_1.db"]
    assert not (tmp_path / "unused").exists()


def test_an_unusable_metrics_dir_is_a_configuration_error(tmp_path):
    from glance_cache_mw import metrics_dir

    blocker = tmp_path / "file"
    blocker.write_text("")
    for prepare in (metrics_dir.prepare_server_dir, metrics_dir.prepare_wsgi_dir):
        with pytest.raises(exception.InvalidConfiguration, match="metrics_dir=.*file/m"):
            prepare(str(blocker / "m"), {})
