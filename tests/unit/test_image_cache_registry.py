"""image_cache.shared: one ImageCache per process and cache directory (image_cache/registry.py).

The pipelines built by Paste that share it are tested in tests/functional/test_shared_cache.py.
"""

import gc
import logging
import os

from glance_cache_mw import config, image_cache
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.maintenance import Maintenance
from tests.unit import cache_helpers as helpers


def caches_in(directory):
    """The live ImageCache objects of this process whose directory is under ``directory``."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, image_cache.ImageCache)
            and obj.base_dir.startswith(str(directory))]


def test_one_cache_per_directory_and_driver(tmp_path):
    first = image_cache.shared(helpers.settings(tmp_path))
    assert image_cache.shared(helpers.settings(tmp_path)) is first
    os.symlink(tmp_path / "cache", tmp_path / "link")   # the same directory by another name
    assert image_cache.shared(helpers.settings(tmp_path, image_cache_dir=tmp_path / "link")) \
        is first
    other = image_cache.shared(helpers.settings(tmp_path / "other"))
    assert other is not first and other.driver is not first.driver
    assert len(caches_in(tmp_path)) == 2


def test_different_settings_for_one_directory_are_named_in_a_warning(tmp_path, caplog):
    first = image_cache.shared(helpers.settings(tmp_path))
    with caplog.at_level(logging.WARNING):
        again = image_cache.shared(helpers.settings(tmp_path, image_cache_max_size=5,
                                                    sql_connection="mysql://u:s3cret@h/db"))
    assert again is first and first.max_size == 10 * 1024 * 1024
    warnings = [record.getMessage() for record in caplog.records]
    assert any("image_cache_max_size=5 is ignored" in line
               and "image_cache_max_size=10485760" in line for line in warnings)
    assert any("sql_connection" in line for line in warnings)
    assert not any("s3cret" in line for line in warnings)


def test_a_cache_nobody_uses_any_more_is_not_kept(tmp_path):
    image_cache.shared(helpers.settings(tmp_path))
    assert caches_in(tmp_path) == []
    assert not image_cache.is_shared(config.Config.from_mapping(helpers.settings(tmp_path)))


def test_a_command_alone_with_the_cache_closes_it_and_the_next_user_gets_a_new_one(tmp_path):
    conf = config.Config.from_mapping({
        **helpers.settings(tmp_path), "sql_connection": "sqlite:///%s" % (tmp_path / "db"),
        "filesystem_store_datadir": str(tmp_path / "images")})
    try:
        maintenance = Maintenance.from_config(conf)
        assert image_cache.is_shared(conf) and image_cache.shared(conf) is maintenance.cache
        maintenance.close()
        assert not image_cache.is_shared(conf)
        assert image_cache.shared(conf) is not maintenance.cache
    finally:
        db_engine.dispose()


def test_maintenance_uses_the_cache_of_the_pipeline_and_leaves_it_open(tmp_path):
    conf = config.Config.from_mapping({
        **helpers.settings(tmp_path), "sql_connection": "sqlite:///%s" % (tmp_path / "db"),
        "filesystem_store_datadir": str(tmp_path / "images")})
    pipeline_cache = image_cache.shared(conf)   # what the filters of a pipeline hold
    try:
        maintenance = Maintenance.from_config(conf)
        assert maintenance.cache is pipeline_cache
        maintenance.close()
        assert image_cache.shared(conf) is pipeline_cache
        assert pipeline_cache.get_cached_images() == []   # still usable
        assert len(caches_in(tmp_path)) == 1
    finally:
        db_engine.dispose()
