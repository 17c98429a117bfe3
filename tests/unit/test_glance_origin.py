"""Which origin the prefetcher reads from: our file store, or Glance's stores (glance_origin).

The reads through glance_store are tested against real Glance (tests/functional/
test_glance_dropin.py, run with Glance's venv); here, the choice and its errors in our venv,
which has no glance_store.
"""

import importlib.util

import pytest

from glance_cache_mw import config, exception, glance_origin
from glance_cache_mw import store as store_mod
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.maintenance import Maintenance

GLANCE_API_CONF = """[DEFAULT]
image_cache_dir = {dir}/image-cache
[database]
connection = sqlite:///{dir}/glance.sqlite
[glance_store]
stores = file
filesystem_store_datadir = {dir}/glance-images
"""


@pytest.fixture(autouse=True)
def dispose_engine():
    yield
    db_engine.dispose()   # Maintenance.from_config configured the image database


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text.format(dir=tmp_path))
    return str(path)


def test_glance_api_conf_is_recognised_by_its_store_settings(tmp_path):
    assert glance_origin.has_glance_stores(write(tmp_path, "a.conf", GLANCE_API_CONF))
    assert glance_origin.has_glance_stores(write(
        tmp_path, "b.conf", "[DEFAULT]\nenabled_backends = fast:file\n"))
    assert not glance_origin.has_glance_stores(write(
        tmp_path, "ours.ini", "[DEFAULT]\nfilesystem_store_datadir = {dir}/images\n"))
    assert not glance_origin.has_glance_stores(None)
    assert not glance_origin.has_glance_stores(str(tmp_path / "missing.conf"))


def test_our_own_configuration_keeps_the_file_store(tmp_path):
    path = write(tmp_path, "ours.ini", "[DEFAULT]\ndata_dir = {dir}\n")
    conf = config.Config.from_file(path)
    maintenance = Maintenance.from_config(conf, config_file=path)
    try:
        assert isinstance(maintenance.store, store_mod.FileStore)
        assert maintenance.store.datadir == str(tmp_path / "images")
    finally:
        maintenance.close()


@pytest.mark.skipif(importlib.util.find_spec("glance_store") is not None,
                    reason="glance_store is installed here: the missing-library error cannot "
                           "happen (the functional tests read through it)")
def test_glance_api_conf_without_glance_store_names_the_section(tmp_path):
    path = write(tmp_path, "glance-api.conf", GLANCE_API_CONF)
    conf = config.Config.from_file(path)
    with pytest.raises(exception.InvalidConfiguration) as caught:
        Maintenance.from_config(conf, config_file=path)
    assert "[glance_store] in %s" % path in str(caught.value)
    assert "glance_store library" in str(caught.value)


def test_location_urls_are_logged_without_credentials():
    assert glance_origin._redact("swift+https://user:key@auth.example/v3/c/o") == (
        "swift+https://***@auth.example/v3/c/o")
    assert glance_origin._redact("file:///var/lib/glance/images/x") == (
        "file:///var/lib/glance/images/x")
    assert glance_origin._redact("rbd://fsid/pool/image@snap") == "rbd://fsid/pool/image@snap"
