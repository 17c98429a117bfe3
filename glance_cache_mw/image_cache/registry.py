"""One ImageCache per process and cache directory: what the filters of a pipeline share.

The cache filter, the cache management filter, the metrics filter's collector and the
server's in-process maintenance all use the cache of one ``image_cache_dir``. Built once,
they share one driver: one hit buffer and flush timer, one atexit hook, one SQLite connection
or database engine, one maintenance mutex. A cache is known by the real path of its directory
and its driver's name.

The first user builds the cache with its settings; a later user whose cache settings differ
gets the same cache all the same (one directory, one policy) and a warning naming each key
and both values. Caches are held weakly: one lives as long as a pipeline or a Maintenance
uses it, so a process that builds many pipelines (the tests) does not keep them all.
"""

import logging
import os
import threading
import weakref

from glance_cache_mw import config as cfg

LOG = logging.getLogger(__name__)

# The settings an ImageCache and its driver read (ImageCache.from_config, drivers).
CACHE_SETTINGS = ("image_cache_max_size", "image_cache_min_free", "image_cache_stall_time",
                  "image_cache_follow_idle_timeout", "image_cache_verify_hashes",
                  "image_cache_verify_before_last_byte", "chunk_size",
                  "worker_self_reference_url", "sql_connection")


def cache_key(config):
    """(real path of image_cache_dir, driver name): what names one cache in a process."""
    driver = str(config.image_cache_driver).strip().lower()
    return os.path.realpath(config.image_cache_dir), driver


class Registry:
    """The live caches of this process by ``cache_key``; ``build(config)`` makes one."""

    def __init__(self, build):
        self._build = build
        self._caches = weakref.WeakValueDictionary()
        self._settings = weakref.WeakKeyDictionary()   # cache -> the settings it was built with
        self._lock = threading.Lock()

    def get(self, config):
        """This process's cache for ``config``'s image_cache_dir and driver (a Config or a
        mapping of INI keys), built on first use: the one cache the filters of a pipeline
        (cache, cachemanage, metrics, peer) and the in-process maintenance share. Its users
        do not close it, unless alone with it (``has`` was False: a maintenance command);
        closing it makes the registry forget it. A Paste filter calls this through
        ``middleware.glance_compat.shared_cache``, which also takes Glance's lock around the
        first build."""
        if not isinstance(config, cfg.Config):
            config = cfg.Config.from_mapping(dict(config))
        key = cache_key(config)
        settings = {name: getattr(config, name) for name in CACHE_SETTINGS}
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._build(config)
                self._caches[key] = cache
                self._settings[cache] = settings
                return cache
        _warn_if_different(key, self._settings[cache], settings)
        return cache

    def forget(self, cache):
        """Stop handing out ``cache`` (it is being closed)."""
        with self._lock:
            for key, live in list(self._caches.items()):
                if live is cache:
                    del self._caches[key]

    def has(self, config):
        """True while a live cache for ``config``'s directory exists in this process."""
        if not isinstance(config, cfg.Config):
            config = cfg.Config.from_mapping(dict(config))
        with self._lock:
            return self._caches.get(cache_key(config)) is not None


def _warn_if_different(key, built_with, settings):
    for name in CACHE_SETTINGS:
        if settings[name] != built_with[name]:
            LOG.warning("%s=%s is ignored for the %s cache in %s: this process already uses "
                        "it with %s=%s (one cache per directory and process: give cache "
                        "settings once, not per filter)", name, _shown(name, settings[name]),
                        key[1], key[0], name, _shown(name, built_with[name]))


def _shown(name, value):
    """``value`` for a log line; a database URL may hold a password: never logged."""
    return "(another URL)" if name == "sql_connection" else repr(value)
