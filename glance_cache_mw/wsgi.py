"""Load the Paste pipeline; ``application`` for gunicorn and uWSGI.

``glance_cache_mw.wsgi:application`` is built on first access (PEP 562 module ``__getattr__``,
so merely importing this module does no work; inside uWSGI, whose loader reads the module's
dict, it is built at import) from the INI file named by the environment
variable ``GLANCE_CACHE_MW_CONFIG``. Unset, it is the embedded default: every setting at its
default (everything under ./data) and the noauth pipeline, read from the sample
``etc/glance-cache-mw.ini`` when that is installed (source tree, editable install), else built
from ``EMBEDDED_PIPELINE`` (a test keeps the two equal).

The INI's ``[composite:main]`` uses :func:`flavor_factory`, which picks the pipeline of the
configured flavor, like Glance's ``[paste_deploy] flavor``: the ``flavor`` key of the
``[paste_deploy]`` section wins over ``flavor`` in ``[DEFAULT]``; the default is ``noauth``.
So ``loadapp("config:FILE")``, ``uwsgi --paste config:FILE`` and this module all build the
same pipeline. An INI file with only a [DEFAULT] section gets the embedded noauth pipeline,
with its settings.
"""

import configparser
import logging
import os
import sys

import paste.deploy

from glance_cache_mw import config, exception, log, metrics_dir
from glance_cache_mw.middleware import cork

LOG = logging.getLogger(__name__)

CONFIG_ENV = "GLANCE_CACHE_MW_CONFIG"
DEFAULT_FLAVOR = "noauth"
APP_NAME = "main"

_SAMPLE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "etc", "glance-cache-mw.ini")


# The sample's noauth pipeline (entry point names), for installs that do not ship etc/ and for
# INI files that hold only [DEFAULT] settings.
EMBEDDED_PIPELINE = ("healthcheck", "metrics", "noauth", "cachemanage", "cache", "images")
_MAIN_SECTIONS = ("composite:main", "pipeline:main", "app:main", "filter-app:main")


def load_embedded_app(sample_path=_SAMPLE_CONFIG):
    """The app of the embedded defaults: the sample INI if installed, else EMBEDDED_PIPELINE."""
    if os.path.isfile(sample_path):
        return load_app(sample_path)
    LOG.info("%s is not installed; using the embedded pipeline", sample_path)
    return build_embedded_pipeline({})


def build_embedded_pipeline(global_conf):
    """EMBEDDED_PIPELINE from the package's entry points, with ``global_conf`` as settings."""
    LOG.info("embedded pipeline: %s", " ".join(EMBEDDED_PIPELINE))
    *filters, app_name = EMBEDDED_PIPELINE
    try:
        app = paste.deploy.loadapp("egg:glance_cache_mw#" + app_name, global_conf=global_conf)
        for name in reversed(filters):
            make_filter = paste.deploy.loadfilter("egg:glance_cache_mw#" + name,
                                                  global_conf=global_conf)
            app = make_filter(app)
    except (LookupError, ImportError) as err:
        raise exception.InvalidConfiguration(
            reason="embedded pipeline cannot be loaded: %s: %s" % (type(err).__name__, err)
        ) from None
    return app


def config_path_from_env(environ=None):
    """The INI named by GLANCE_CACHE_MW_CONFIG, else None (the embedded defaults)."""
    value = (environ if environ is not None else os.environ).get(CONFIG_ENV, "").strip()
    return value or None


def read_flavor(path, defaults=None):
    """The flavor an INI file selects: ``[paste_deploy] flavor``, ``[DEFAULT] flavor``, noauth.

    ``path`` None (the embedded defaults) is noauth.
    """
    if path is None:
        return DEFAULT_FLAVOR
    parser = _read_ini(path)
    flavor = parser.get("paste_deploy", "flavor", fallback=None)
    if not (flavor and flavor.strip()):
        flavor = (defaults or {}).get("flavor") or parser.defaults().get("flavor")
    return (flavor or "").strip() or DEFAULT_FLAVOR


def _read_ini(path):
    config.check_config_path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as err:
        raise exception.InvalidConfiguration(
            reason="config file %s cannot be read: %s" % (path, err)) from None
    return parser


# The flavors of the sample's [composite:main]; a file without Paste sections has the first.
KNOWN_FLAVORS = ("noauth", "keystone", "context")


def check_flavor(path):
    """The flavor ``path`` selects (see read_flavor), or InvalidConfiguration when the file
    cannot serve it: "unknown flavor X; known: ..." for a name its [composite:main] (or, in a
    settings-only file, the sample's) does not define."""
    flavor = read_flavor(path)
    if path is None:
        return flavor
    parser = _read_ini(path)
    composite = "composite:" + APP_NAME
    if parser.has_section(composite) and "flavor_factory" in parser.get(
            composite, "use", fallback=""):
        known = sorted(key for key in parser.options(composite)
                       if key != "use" and key not in parser.defaults())
    elif any(parser.has_section(s) for s in _MAIN_SECTIONS):
        return flavor   # a pipeline of the operator's own: the flavor does not choose it
    else:
        known = sorted(KNOWN_FLAVORS)
    if flavor not in known:
        raise exception.InvalidConfiguration(
            reason="unknown flavor %s; known: %s (in %s)" % (flavor, ", ".join(known), path))
    return flavor


def flavor_factory(loader, global_conf, **local_conf):
    """Paste composite: ``[composite:main] use = call:glance_cache_mw.wsgi:flavor_factory``.

    Its options map each flavor to the name of a pipeline section, e.g.
    ``noauth = glance-cache-mw-noauth``.
    """
    flavor = read_flavor(global_conf["__file__"], global_conf)
    pipeline = local_conf.get(flavor)
    if not pipeline:
        raise exception.InvalidConfiguration(
            reason="unknown flavor %s; known: %s (see [composite:main] in %s)"
            % (flavor, ", ".join(sorted(local_conf)), global_conf["__file__"]))
    LOG.info("paste flavor %s: pipeline %s", flavor, pipeline)
    return loader.get_app(pipeline, global_conf=global_conf)


def load_app(path, name=APP_NAME):
    """Build the WSGI app of ``path``; a broken pipeline is an InvalidConfiguration.

    Factories raise InvalidConfiguration themselves for bad setting values; Paste's own errors
    (missing section, entry point or module) are turned into one line naming the file.
    """
    path = os.path.abspath(path)
    parser = _read_ini(path)
    if name == APP_NAME and not any(parser.has_section(s) for s in _MAIN_SECTIONS):
        # Only settings in this file: the embedded (noauth) pipeline with these settings.
        flavor = check_flavor(path)
        if flavor != DEFAULT_FLAVOR:
            raise exception.InvalidConfiguration(
                reason="flavor=%r needs the Paste sections of etc/glance-cache-mw.ini, which %s "
                       "does not have" % (flavor, path))
        return build_embedded_pipeline(
            {**parser.defaults(), "here": os.path.dirname(path), "__file__": path})
    try:
        return paste.deploy.loadapp("config:" + path, name=name)
    except exception.InvalidConfiguration:
        raise
    except (LookupError, ImportError, configparser.Error) as err:
        LOG.debug("loading the paste pipeline of %s failed", path, exc_info=True)
        raise exception.InvalidConfiguration(
            reason="paste pipeline %r in %s cannot be loaded: %s: %s"
            % (name, path, type(err).__name__, err)) from None


def load_settings(path):
    """The typed [DEFAULT] settings of ``path`` (None: the embedded defaults)."""
    return config.Config.from_file(path)


def build_application(environ=None):
    """The pipeline named by GLANCE_CACHE_MW_CONFIG (or the embedded default), logging set up."""
    path = config_path_from_env(environ)
    settings = load_settings(path)
    log.setup(settings.debug)
    metrics_dir.prepare_wsgi_dir(settings.metrics_dir)   # before the pipeline imports metrics
    app = load_app(path) if path else load_embedded_app()
    return cork.CorkFileResponses(app)


_application = None


def __getattr__(name):
    # PEP 562: ``application`` is built when a server asks for it, not when this is imported.
    global _application
    if name != "application":
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    if _application is None:
        _application = build_application()
    return _application


if "uwsgi" in sys.modules:
    # Inside uWSGI (its embedded ``uwsgi`` module is there before any app is imported): its
    # ``--module`` loader looks ``application`` up in this module's dict, where __getattr__ is
    # never asked, so build it now (in each worker with --lazy-apps, as documented). The INI's
    # ``call:glance_cache_mw.wsgi:flavor_factory`` makes Paste look this module up as an
    # attribute of the package, which the import system only sets once we return: set it.
    setattr(sys.modules[__package__], "wsgi", sys.modules[__name__])
    application = _application = build_application()
