"""glance-cache-mw-manage db sync / db version as a real command."""

import os
import subprocess
import sys

import sqlalchemy as sa

from glance_cache_mw.db import migration


def run_manage(*args, cwd):
    return subprocess.run([sys.executable, "-m", "glance_cache_mw.cmd.manage", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_sync_then_version_with_embedded_defaults(tmp_path):
    empty = run_manage("db", "version", cwd=tmp_path)
    assert empty.returncode == 0 and "empty" in empty.stdout
    synced = run_manage("db", "sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert (tmp_path / "data" / "glance-cache-mw.sqlite").exists()
    version = run_manage("db", "version", cwd=tmp_path)
    assert version.stdout.strip() == migration.head()


def test_sync_uses_the_config_file_database(scratch_db, tmp_path):
    if scratch_db.backend == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "other.sqlite")
    else:
        url = scratch_db.url
    ini = tmp_path / "gcm.ini"
    ini.write_text("[DEFAULT]\nsql_connection = %s\n" % url)
    result = run_manage("--config", str(ini), "db", "sync", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(sa.engine.make_url(url).set(
        drivername={"sqlite": "sqlite", "postgresql": "postgresql+psycopg",
                    "mysql": "mysql+pymysql"}[scratch_db.backend]))
    try:
        assert "images" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_bad_config_value_is_one_line_and_exit_2(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[DEFAULT]\nimage_cache_max_size = 10G\n")
    result = run_manage("--config", str(ini), "db", "sync", cwd=tmp_path)
    assert result.returncode == 2
    assert "image_cache_max_size='10G' is not an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_unsupported_database_is_a_clear_error(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[DEFAULT]\nsql_connection = oracle://x@y/z\n")
    result = run_manage("--config", str(ini), "db", "sync", cwd=tmp_path)
    assert result.returncode == 2
    assert "unsupported database" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_and_exit_1(tmp_path):
    ini = tmp_path / "down.ini"
    ini.write_text("[DEFAULT]\nsql_connection = postgresql://nobody@127.0.0.1:1/none\n")
    result = run_manage("--config", str(ini), "db", "version", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: database postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert "Traceback" not in result.stderr
