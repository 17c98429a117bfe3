"""A node for the command tests: an INI file, a cache dir and a file store, on a test database.

The test process adds images with the DB API and the file store; the commands run as real
subprocesses (``python -m glance_cache_mw.cmd.pruner --config FILE``) against the same files.
"""

import io
import os
import subprocess
import sys

from glance_cache_mw import store as store_mod
from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import api as db_api
from glance_cache_mw.image_cache import ImageCache
from tests.unit import cache_helpers as helpers

ADMIN = RequestContext.admin()
COMMAND_TIMEOUT_S = 120
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Node:
    """One cache node's configuration and helpers to look at its cache."""

    def __init__(self, tmp_path, database, driver="sqlite", node_url=None, **settings):
        self.dir = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.settings = {
            "sql_connection": database.url,
            "image_cache_dir": str(tmp_path / "cache"),
            "filesystem_store_datadir": str(tmp_path.parent / "images"),
            "image_cache_driver": driver,
            "image_cache_max_size": str(10 * 1024 * 1024),
            "chunk_size": "4096",
            "cache_prefetcher_workers": "3",
        }
        if node_url:
            self.settings["worker_self_reference_url"] = node_url
        self.settings.update({key: str(value) for key, value in settings.items()})
        self.ini = tmp_path / "node.ini"
        self.write_ini()
        self.store = store_mod.FileStore(self.settings["filesystem_store_datadir"])

    def write_ini(self, **changes):
        self.settings.update({key: str(value) for key, value in changes.items()})
        lines = ["[DEFAULT]"] + ["%s = %s" % item for item in sorted(self.settings.items())]
        self.ini.write_text("\n".join(lines) + "\n")

    def cache(self):
        """A new ImageCache on this node's directory (close it)."""
        return ImageCache.from_config(self.settings)

    def add_image(self, image_id, size=30000, corrupt=False, stored=True, status="active"):
        data = helpers.body(size, image_id.encode())
        db_api.image_create(ADMIN, {"id": image_id, "status": status, "size": size,
                                    **helpers.hashes(data)})
        if stored:
            self.store.add(image_id, io.BytesIO(data[:-1] + b"?" if corrupt else data))
        return data

    def queue(self, *image_ids):
        cache = self.cache()
        try:
            for image_id in image_ids:
                assert cache.queue_image(image_id)
        finally:
            cache.close()

    def cached_ids(self):
        cache = self.cache()
        try:
            return [entry["image_id"] for entry in cache.get_cached_images()]
        finally:
            cache.close()

    def command(self, module, *args):
        """The argv running ``glance_cache_mw.cmd.{module}`` with this node's INI file."""
        return command(module, self.ini, *args)

    def run(self, module, *args):
        return subprocess.run(self.command(module, *args), cwd=str(self.dir),
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              env=command_env())

    def popen(self, module, *args, stderr_path=None):
        """Start a command; its stderr goes to ``stderr_path`` (a file the test can poll)."""
        stderr = open(stderr_path, "wb")
        try:
            return subprocess.Popen(self.command(module, *args), cwd=str(self.dir),
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    env=command_env())
        finally:
            stderr.close()


def command(module, ini, *args):
    """The argv running ``glance_cache_mw.cmd.{module}`` (with ``--config ini`` if given)."""
    config = ["--config", str(ini)] if ini is not None else []
    return [sys.executable, "-m", "glance_cache_mw.cmd.%s" % module, *config, *args]


def command_env():
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": REPO + (os.pathsep + path if path else "")}
