"""One ImageCache per pipeline and process, as Paste builds the pipelines (image_cache.shared).

The filters of the etc/ sample (cache, cachemanage, metrics) and the server's in-process
maintenance hold one cache; so do our two filters in Glance's own glance-api-paste.ini, built
by Glance under its cache-init lock (glance_compat.shared_cache). The count is of the
ImageCache objects alive in the process after the app is loaded.
"""

import gc
import json
import os
import subprocess

import pytest

from glance_cache_mw import config, image_cache, wsgi
from glance_cache_mw.api.cache_manage import CacheManageFilter
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.maintenance import Maintenance
from glance_cache_mw.middleware.cache import CacheFilter
from glance_cache_mw.middleware.metrics import MetricsFilter
from tests.functional import glance_server, server as helpers


def filters_of(app):
    """The WSGI filters from ``app`` inwards (each passes what it does not handle to .app)."""
    chain = []
    while app is not None and len(chain) < 20:
        chain.append(app)
        app = getattr(app, "app", None)
    return chain


def caches_in(directory):
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, image_cache.ImageCache)
            and obj.base_dir.startswith(str(directory))]


@pytest.fixture
def clean_engine():
    yield
    db_engine.dispose()


@pytest.mark.usefixtures("clean_engine")
def test_the_sample_pipeline_and_its_maintenance_share_one_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                   # the sample's data_dir is ./data
    app = wsgi.load_app(helpers.SAMPLE_CONFIG)
    chain = filters_of(app)
    cache_filter, = [f for f in chain if isinstance(f, CacheFilter)]
    manage_filter, = [f for f in chain if isinstance(f, CacheManageFilter)]
    metrics_filter, = [f for f in chain if isinstance(f, MetricsFilter)]
    cache = cache_filter.cache
    assert manage_filter.cache is cache
    assert [collector.cache for collector in metrics_filter.collectors] == [cache]
    assert len(caches_in(tmp_path)) == 1
    # The server's in-process maintenance (cmd/api.py start_maintenance) joins it.
    maintenance = Maintenance.from_config(config.Config.from_file(helpers.SAMPLE_CONFIG))
    assert maintenance.cache is cache
    maintenance.close()                           # not its cache to close
    assert image_cache.shared(config.Config.from_file(helpers.SAMPLE_CONFIG)) is cache
    assert len(caches_in(tmp_path)) == 1


_COUNT_IN_GLANCE = """
import gc, json
from glance.common import wsgi_app
app = wsgi_app.init_app()
from glance_cache_mw.api.cache_manage import CacheManageFilter
from glance_cache_mw.image_cache import ImageCache
from glance_cache_mw.middleware.cache import CacheFilter
gc.collect()
caches = [o for o in gc.get_objects() if isinstance(o, ImageCache)]
filters = [o for o in gc.get_objects() if isinstance(o, (CacheFilter, CacheManageFilter))]
print(json.dumps({"caches": [c.base_dir for c in caches],
                  "filters": sorted(type(f).__name__ for f in filters),
                  "shared": all(f.cache is caches[0] for f in filters)}))
"""


@pytest.mark.realservice
def test_our_filters_in_glances_pipeline_share_one_cache(tmp_path):
    python = glance_server.glance_python()
    if python is None:
        pytest.skip("no Glance venv: run tools/glance-venv and set %s to its python "
                    "(tools/test does both)" % glance_server.PYTHON_ENV)
    glance = glance_server.GlanceServer(tmp_path, python, "sqlite:///%s/glance.sqlite" % tmp_path,
                                        flavor="cachemanagement")
    env = glance.prepare()
    done = subprocess.run([python, "-c", _COUNT_IN_GLANCE], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"caches": [os.path.join(str(tmp_path), "image-cache")],
                      "filters": ["CacheFilter", "CacheManageFilter"], "shared": True}
