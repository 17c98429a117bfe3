"""Fixtures shared by the cache unit tests (a module may override them with its own)."""

import pytest

from glance_cache_mw.image_cache import ImageCache
from tests.unit import cache_helpers as helpers


@pytest.fixture
def settings(tmp_path):
    """Cache settings in a temporary directory (the sqlite driver)."""
    return helpers.settings(tmp_path)


@pytest.fixture
def cache(settings):
    """An ImageCache on ``settings``, closed after the test."""
    instance = ImageCache.from_config(settings)
    yield instance
    instance.close()
