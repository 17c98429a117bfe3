"""The image-id rules of glance_cache_mw/image_ids.py: where they agree and where they differ."""

import pytest

from glance_cache_mw import image_ids
from glance_cache_mw.image_cache.drivers import ondisk

UUID = "6f2c3e4a-8b1d-4c5e-9f00-123456789abc"


@pytest.mark.parametrize("image_id", ["", None, 5, "x" * 37])
def test_what_no_rule_takes(image_id):
    assert not image_ids.is_glance_id(image_id)
    assert image_ids.file_name_problem(image_id) is not None
    assert not image_ids.is_store_id(image_id)


@pytest.mark.parametrize("image_id", [UUID, "a", "x" * 36, "A_b-c.d"])
def test_what_every_rule_takes(image_id):
    assert image_ids.is_glance_id(image_id)
    assert image_ids.file_name_problem(image_id, ondisk.RESERVED_NAMES) is None
    assert image_ids.is_store_id(image_id)


@pytest.mark.parametrize("image_id", ["é", "my image", "a:b"])
def test_the_cache_takes_glance_ids_the_store_refuses(image_id):
    assert image_ids.is_glance_id(image_id)
    assert image_ids.file_name_problem(image_id, ondisk.RESERVED_NAMES) is None
    assert not image_ids.is_store_id(image_id)


@pytest.mark.parametrize("image_id", ["a/b", "..", "x..y", ".hidden", "a\0b"])
def test_the_database_takes_ids_that_are_no_cache_file_name(image_id):
    assert image_ids.is_glance_id(image_id)
    assert "'/', '..' or NUL" in image_ids.file_name_problem(image_id) or \
        "reserved" in image_ids.file_name_problem(image_id)


@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal", "incomplete", "queue"])
def test_the_cache_keeps_its_own_names(name):
    assert image_ids.file_name_problem(name) is None
    assert "reserved" in image_ids.file_name_problem(name, ondisk.RESERVED_NAMES)
    with pytest.raises(ondisk.InvalidImageId, match=name):
        ondisk.validate_image_id(name)
