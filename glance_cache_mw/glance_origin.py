"""Image data through Glance's own stores (glance_store): the prefetcher's origin inside Glance.

When our commands are given Glance's glance-api.conf (it has a ``[glance_store]`` section or
``[DEFAULT] enabled_backends``), image data is not where our ``filesystem_store_datadir``
says: it is in whatever Glance is configured with — its file store, Ceph, Swift, S3... So the
prefetcher reads it the way Glance does, in-process with glance_store: the options of
glance_store are registered on oslo.config, loaded from that glance-api.conf, the stores are
created, and each image is read from its active location(s) in the image database
(``image_locations``), with the backend named by the location's ``store`` metadata when
multiple stores are enabled. The bytes still go through the cache's verified fill (size and
hashes), exactly like the file store's.

``GlanceStoreOrigin.open_for_read(image_id)`` is the interface the prefetcher uses with
``store.FileStore``: an iterable of chunks with ``close()``; ImageNotFound when no location
has the data, OSError when the store fails.

glance_store's multi-store read API looks up ``enabled_backends`` on oslo.config's global
``CONF``; that is why ``from_glance_config`` loads glance-api.conf there. Only our commands
call it (each is its own process): inside glance-api nothing here runs.
"""

import configparser
import logging

from glance_cache_mw import bodies, exception
from glance_cache_mw.context import RequestContext

LOG = logging.getLogger(__name__)

STORE_SECTION = "glance_store"
MULTI_STORE_KEY = "enabled_backends"


def has_glance_stores(path):
    """True when the INI file at ``path`` configures Glance's stores ([glance_store] or
    enabled_backends): the prefetcher then reads through them. (config.is_glance_config asks
    another question: whether [DEFAULT]'s other keys are Glance's.)"""
    if not path:
        return False
    parser = configparser.RawConfigParser(strict=False)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error):
        return False   # Config.from_file has already said what is wrong with it
    return parser.has_section(STORE_SECTION) or parser.has_option("DEFAULT", MULTI_STORE_KEY)


class GlanceStoreOrigin:
    """Reads an image's data from its active locations with glance_store."""

    def __init__(self, glance_store, db_api, multi_store, context=None):
        """``glance_store``: the module, its stores created; ``db_api``: our DB API on
        Glance's database; ``multi_store``: whether ``enabled_backends`` is set."""
        self._gs = glance_store
        self.db_api = db_api
        self.multi_store = multi_store
        self.context = context or RequestContext.admin()

    def open_for_read(self, image_id):
        """The data of ``image_id`` from the first of its active locations that has it."""
        image = self.db_api.image_get(self.context, image_id)
        locations = [loc for loc in image.get("locations") or ()
                     if loc.get("status", "active") == "active"]
        if not locations:
            raise exception.ImageNotFound("image %s has no active location" % image_id)
        errors = []
        for loc in locations:
            try:
                chunks, _size = self._get(loc)
            except (self._gs.exceptions.NotFound, self._gs.exceptions.UnknownScheme) as err:
                # Not there, or in a store this configuration does not have: the next one.
                errors.append("%s: %s: %s" % (_redact(loc["url"]), type(err).__name__, err))
                continue
            except (self._gs.exceptions.GlanceStoreException,
                    self._gs.exceptions.BackendException) as err:
                raise OSError("store error reading %s: %s: %s" % (
                    _redact(loc["url"]), type(err).__name__, err)) from err
            LOG.debug("reading image %s from %s", image_id, _redact(loc["url"]))
            return _StoreReader(chunks)
        raise exception.ImageNotFound("no data for image %s in Glance's stores (%s)"
                                      % (image_id, "; ".join(errors)))

    def _get(self, loc):
        if not self.multi_store:
            return self._gs.get_from_backend(loc["url"])
        backend = (loc.get("metadata") or {}).get("store")
        return self._gs.multi_backend.get(loc["url"], backend)


class _StoreReader:
    """A store's chunk iterator with ``close()`` (glance_store's may or may not have one)."""

    def __init__(self, chunks):
        self._chunks = chunks
        self._iter = iter(chunks)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    def close(self):
        chunks, self._chunks, self._iter = self._chunks, None, None
        bodies.close_body(chunks)


def _redact(url):
    """A location URL without credentials (swift://user:key@host/... has them)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def from_glance_config(path, db_api):
    """A GlanceStoreOrigin for glance-api.conf at ``path``; InvalidConfiguration, naming the
    key, when glance_store is missing or Glance's store configuration is unusable."""
    try:
        import glance_store
        from oslo_config import cfg
    except ImportError as err:
        raise exception.InvalidConfiguration(
            reason="[%s] in %s: reading image data through Glance's stores needs the "
                   "glance_store library in this Python (%s); install it or run our command "
                   "with Glance's Python" % (STORE_SECTION, path, err)) from None
    conf = cfg.CONF
    try:
        conf.register_opt(cfg.DictOpt(MULTI_STORE_KEY, help="Glance's store backends."))
    except cfg.DuplicateOptError:
        pass   # Glance registered it (same key, its own help text)
    try:
        conf(args=[], project="glance", prog="glance-api", default_config_files=[path],
             default_config_dirs=[])
        backends = conf.enabled_backends
        if backends:
            glance_store.register_store_opts(conf)
            count = glance_store.create_multi_stores(conf)
            key = "[DEFAULT] %s = %s" % (MULTI_STORE_KEY, ",".join(
                "%s:%s" % item for item in backends.items()))
        else:
            glance_store.register_opts(conf)
            count = glance_store.create_stores(conf)
            key = "[%s] stores = %s" % (STORE_SECTION, ",".join(conf.glance_store.stores))
    except cfg.Error as err:
        raise exception.InvalidConfiguration(
            reason="Glance's store configuration in %s: %s" % (path, err)) from None
    except (glance_store.exceptions.GlanceStoreException,
            glance_store.exceptions.BackendException) as err:
        raise exception.InvalidConfiguration(
            reason="Glance's store configuration in %s: %s: %s"
            % (path, type(err).__name__, err)) from None
    if not count:
        raise exception.InvalidConfiguration(
            reason="%s in %s: no store could be loaded (see the log above)" % (key, path))
    LOG.info("prefetching through Glance's stores (%s, %d loaded) from %s", key, count, path)
    return GlanceStoreOrigin(glance_store, db_api, bool(backends))
