"""Running inside Glance's own Paste pipeline (the drop-in): context, policy and settings.

Standalone, our context filters put a ``glance_cache_mw.context.RequestContext`` into
``environ['glance.context']`` and nothing here changes what the cache does. Inside Glance
(glance-api-paste.ini's ``[filter:cache]`` pointing at our factory), three things differ:

* **Context.** Glance's context middleware sets ``req.context``; WebOb keeps such attributes in
  ``environ['webob.adhoc_attrs']``. :func:`request_context` finds either and gives the DB API
  the view it reads (``is_admin``, ``owner``, ``can_see_deleted``) of any context object that
  has ``is_admin`` and a project (``project_id`` or ``owner``) — Glance's RequestContext
  included.
* **Policy.** :class:`DownloadPolicy` asks Glance's own policy enforcer for ``download_image``
  on the image as Glance's DB repository returns it for the caller — the check Glance's cache
  filter makes — before a hit or a coalesced follower gets a byte (403, or 404 when the
  caller may not even see the image). Glance is imported lazily, only when it is running.
* **Settings.** :func:`settings_from_glance` reads the cache's settings from the
  glance-api.conf Glance has already loaded (oslo.config's global ``CONF``); keys given in the
  Paste section win (:func:`merged_settings`).
"""

import contextlib
import logging
import os
import sys

import webob.exc

from glance_cache_mw import context as cache_context
from glance_cache_mw import image_cache

LOG = logging.getLogger(__name__)

ADHOC_ATTRS = "webob.adhoc_attrs"

# Our setting name -> (oslo.config group or None, option name) in glance-api.conf.
GLANCE_OPTIONS = {
    "image_cache_dir": (None, "image_cache_dir"),
    "image_cache_driver": (None, "image_cache_driver"),
    "image_cache_max_size": (None, "image_cache_max_size"),
    "image_cache_stall_time": (None, "image_cache_stall_time"),
    "worker_self_reference_url": (None, "worker_self_reference_url"),
    "sql_connection": ("database", "connection"),
}


def running_in_glance():
    """True inside a glance-api process (its configuration module is loaded)."""
    return "glance.common.config" in sys.modules


def foreign_context(environ):
    """The context another framework (Glance) stored as ``req.context``, or None."""
    adhoc = environ.get(ADHOC_ATTRS)
    if not isinstance(adhoc, dict):
        return None
    return adhoc.get("context")


def request_context(environ):
    """The caller's context as the cache's DB API reads it, or None when there is none.

    Ours (``environ['glance.context']``) is used as it is; any other context with
    ``is_admin`` and a project is viewed through a ``RequestContext`` carrying its identity.
    """
    ours = environ.get(cache_context.ENVIRON_KEY)
    if ours is not None:
        return ours
    other = foreign_context(environ)
    if other is None:
        return None
    return as_cache_context(other)


def as_cache_context(other):
    """Our RequestContext with the identity of ``other`` (None when it has no ``is_admin``)."""
    if isinstance(other, cache_context.RequestContext):
        return other
    if not hasattr(other, "is_admin"):
        LOG.warning("ignoring request context %r: it has no is_admin", type(other).__name__)
        return None
    project = getattr(other, "owner", None) or getattr(other, "project_id", None)
    roles = getattr(other, "roles", None) or []
    return cache_context.RequestContext(
        user_id=getattr(other, "user_id", None), project_id=project, roles=list(roles),
        is_admin=bool(other.is_admin), read_only=bool(getattr(other, "read_only", False)),
        show_deleted=bool(getattr(other, "show_deleted", False)),
        request_id=getattr(other, "request_id", None))


# -- settings ---------------------------------------------------------------------------------

def settings_from_glance():
    """The cache's settings from the glance-api.conf Glance has loaded ({} outside Glance).

    Only options Glance has registered and that have a value are returned."""
    if not running_in_glance():
        return {}
    try:
        from oslo_config import cfg as oslo_cfg
        from oslo_db import options as db_options
        import glance.image_cache  # noqa: F401  registers the image_cache_* options
    except ImportError as err:
        LOG.warning("running in Glance but cannot read its settings: %s", err)
        return {}
    conf = oslo_cfg.CONF
    # [database] is registered when Glance's DB layer is imported, maybe not yet: idempotent.
    conf.register_opts(db_options.database_opts, group="database")
    values = {}
    for name, (group, option) in GLANCE_OPTIONS.items():
        try:
            value = getattr(conf[group], option) if group else conf[option]
        except (oslo_cfg.NoSuchOptError, oslo_cfg.NoSuchGroupError, oslo_cfg.Error,
                KeyError, AttributeError) as err:
            LOG.debug("glance option %s.%s not available: %s", group or "DEFAULT", option, err)
            continue
        if value is not None and value != "":
            values[name] = value
    return values


def merged_settings(paste_settings):
    """Glance's settings overridden by the Paste section's (``global_conf`` + local conf)."""
    glance_settings = settings_from_glance()
    if glance_settings:
        given = {key for key, value in paste_settings.items()
                 if key in GLANCE_OPTIONS and str(value).strip()}
        LOG.info("inside Glance: cache settings %s from glance-api.conf%s",
                 ", ".join(sorted(set(glance_settings) - given)) or "none",
                 "; %s from the paste section" % ", ".join(sorted(given)) if given else "")
    return {**glance_settings, **{k: v for k, v in paste_settings.items()
                                  if not (k in GLANCE_OPTIONS and not str(v).strip())}}


@contextlib.contextmanager
def cache_init_lock(image_cache_dir):
    """Inside Glance, hold the inter-process lock Glance's sqlite driver holds while it
    creates ``cache.db`` (oslo.concurrency's ``image_cache_db_init``, in
    ``[oslo_concurrency] lock_path``, else the cache directory as Glance's driver defaults it),
    so that our driver's set-up (WAL switch, schema) never overlaps Glance's: Glance runs that
    CREATE without a busy timeout and fails its worker with "database is locked".
    Standalone: no lock."""
    if not running_in_glance():
        yield
        return
    from oslo_concurrency import lockutils
    from oslo_config import cfg as oslo_cfg
    try:
        lock_path = oslo_cfg.CONF.oslo_concurrency.lock_path
    except (oslo_cfg.Error, AttributeError):
        lock_path = None
    lock_path = lock_path or image_cache_dir
    os.makedirs(lock_path, exist_ok=True)
    with lockutils.lock("image_cache_db_init", external=True, lock_path=lock_path):
        yield


def shared_cache(config):
    """The ImageCache every filter of a pipeline uses (``image_cache.shared``: one per process
    and cache directory), built under ``cache_init_lock`` the first time."""
    if image_cache.is_shared(config):
        return image_cache.shared(config)
    with cache_init_lock(config.image_cache_dir):
        return image_cache.shared(config)


# -- policy -----------------------------------------------------------------------------------

class DownloadPolicy:
    """Glance's ``download_image`` policy for cached bytes (inside Glance only).

    Called with the WSGI environ and the image record the cache already checked; returns
    None when the download is allowed, else the webob.exc error to answer (403, or 404 when the
    caller may not see the image at all, as Glance answers).
    """

    def __init__(self):
        from glance.api import policy as glance_policy
        self._enforcer = glance_policy.Enforcer(suppress_deprecation_warnings=True)

    @classmethod
    def if_in_glance(cls):
        """A DownloadPolicy inside Glance, None standalone."""
        if not running_in_glance():
            return None
        return cls()

    def __call__(self, environ, image):
        context = foreign_context(environ)
        if context is None or isinstance(context, cache_context.RequestContext):
            return None   # our own pipeline: our visibility rules are the whole check
        from glance import db as glance_db
        from glance.api.v2 import policy as api_policy
        from glance.common import exception as glance_exception
        image_id = image["id"]
        try:
            glance_image = glance_db.ImageRepo(context, glance_db.get_api()).get(image_id)
            api_policy.ImageAPIPolicy(context, glance_image, self._enforcer).download_image()
        except glance_exception.NotFound:
            return webob.exc.HTTPNotFound(explanation="No image found with ID %s" % image_id)
        except (glance_exception.Forbidden, webob.exc.HTTPForbidden):
            LOG.debug("download_image policy denies image %s to %s", image_id, context)
            return webob.exc.HTTPForbidden(
                explanation="You are not authorized to download image %s." % image_id)
        except webob.exc.HTTPNotFound:
            return webob.exc.HTTPNotFound(explanation="No image found with ID %s" % image_id)
        return None
