"""Typed settings from one INI file ([DEFAULT] section) or a mapping; bad values are clear errors.

Every key the server, the images app and the commands read is declared in ``SETTINGS`` with
its type and default, so there is one place that says what can be configured: one
``Setting(name, kind, default, help, ...)`` line there makes the typed attribute
``Config.<name>`` (``Config`` is a frozen dataclass made from ``SETTINGS``). Paths default
under ``data_dir``. A boolean is one of the words of ``bool_from_text``, everywhere.

Two ways in, on purpose with different strictness:

* ``Config.from_file(path)`` reads our own INI file (the commands, gunicorn/uWSGI through
  glance_cache_mw.wsgi). Its [DEFAULT] may hold only ``SETTINGS``, ``flavor`` and variables
  other values interpolate (``%(name)s``): anything else is an error naming the key and the
  nearest known one, and a key that belongs in a Paste section (keystonemiddleware's, the
  health check's) says which section. The cache driver's name and what it needs are checked
  too, so nothing is written on a typo. Glance's glance-api.conf (a file with [database] or
  [glance_store]) is read for our keys only: its other [DEFAULT] keys are Glance's.
* ``Config.from_mapping(mapping)`` types the keys it knows and ignores the rest: the Paste
  factories use it on ``{**global_conf, **local_conf}``, which in Glance's own paste pipeline
  carries Glance's keys.
"""

import configparser
import dataclasses
import difflib
import os
import re
import typing

from glance_cache_mw import exception

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def bool_from_text(text):
    """True or False for one of the boolean words (any case, spaces around); ValueError
    otherwise. The settings and the DB API's boolean columns take the same words."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("%r is not a boolean" % (text,))


def _parse_int(key, raw, minimum=0, maximum=None):
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise exception.InvalidConfiguration(
            reason="%s=%r is not an integer" % (key, raw)) from None
    if minimum is not None and value < minimum:
        raise exception.InvalidConfiguration(
            reason="%s=%r must be at least %d" % (key, raw, minimum))
    if maximum is not None and value > maximum:
        raise exception.InvalidConfiguration(
            reason="%s=%r must be at most %d" % (key, raw, maximum))
    return value


def _parse_bool(key, raw):
    if isinstance(raw, bool):
        return raw
    try:
        return bool_from_text(str(raw))
    except ValueError:
        raise exception.InvalidConfiguration(
            reason="%s=%r is not a boolean (use true or false)" % (key, raw)) from None


def _parse_str(key, raw):
    text = str(raw).strip()
    return text or None


# The Python type of each kind of setting (a "str" setting may be unset: None).
_TYPES = {"int": int, "bool": bool, "str": typing.Optional[str], "path": str,
          "secret": typing.Optional[str]}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of [DEFAULT]: its kind ("int", "bool", "str", "path" or "secret": a string
    never shown, at least ``minimum`` characters long), default and help."""

    name: str
    kind: str
    default: object      # may be a callable taking the partially built values
    help: str
    minimum: int = 0     # an "int" setting's lower bound (None: none); a "secret"'s length
    choices: tuple = ()  # a "str" setting that must be one of these
    maximum: int = None
    allow_empty: bool = True   # an empty value means the default


SETTINGS = (
    Setting("data_dir", "path", "./data", "Where the embedded defaults keep everything."),
    Setting("sql_connection", "str",
            lambda v: "sqlite:///" + os.path.join(v["data_dir"], "glance-cache-mw.sqlite"),
            "SQLAlchemy URL of the image database."),
    Setting("filesystem_store_datadir", "path", lambda v: os.path.join(v["data_dir"], "images"),
            "Directory of the file store (the origin of image data)."),
    Setting("image_cache_dir", "path", lambda v: os.path.join(v["data_dir"], "image-cache"),
            "Directory of the image cache."),
    Setting("image_cache_driver", "str", "sqlite",
            "Cache metadata driver: sqlite, xattr or centralized_db."),
    Setting("image_cache_max_size", "int", 10 * 1024 ** 3,
            "Upper bound of the cache in bytes, enforced when a fill is admitted."),
    Setting("image_cache_min_free", "int", 0,
            "Bytes that must stay free on the cache's filesystem."),
    Setting("image_cache_stall_time", "int", 86400,
            "Seconds after which an abandoned incomplete file may be cleaned."),
    Setting("image_cache_follow_idle_timeout", "int", 300,
            "Seconds a fill's file may go without growing (its origin stalled) before the "
            "fill is abandoned: its clients read the rest from the origin and the next "
            "request fills afresh. A slow client never counts.", minimum=1),
    Setting("image_cache_verify_hashes", "str", "strongest",
            "Hashes a fill checks: strongest (os_hash_value, else checksum) or all (both).",
            choices=("strongest", "all")),
    Setting("image_cache_verify_before_last_byte", "bool", False,
            "Hold a fill's last chunk until the bytes are verified, so that a mismatch ends "
            "the filler's response short (else it gets the origin's bytes as sent)."),
    Setting("image_cache_maintenance_interval", "int", 0,
            "Seconds between in-process prune/clean/prefetch passes (0 = off)."),
    Setting("worker_self_reference_url", "str", None,
            "This node's URL; keys its rows with the centralized_db driver."),
    Setting("cluster_secret", "secret", None,
            "Shared secret of the nodes' signed peer requests (16+ characters); with the "
            "centralized_db driver it turns cluster mode on. Never logged.", minimum=16),
    Setting("cluster_fill_lease", "int", 10,
            "Seconds a node's cluster-wide fill claim lasts unless renewed (every third of it).",
            minimum=1),
    Setting("cluster_peer_timeout", "int", 30,
            "Seconds a peer may send nothing (or take to connect) before it is abandoned.",
            minimum=1),
    Setting("cluster_peer_min_rate", "int", 1048576,
            "Bytes per second a peer holding the whole image must send, counted over the "
            "time this node waits for its bytes (not over wall time: a slow client does not "
            "count) and judged every cluster_peer_timeout seconds of waiting; a slower "
            "holder is left for another source at the byte reached. A peer still filling the "
            "image is exempt (its origin sets its pace). 0: no minimum.", minimum=0),
    Setting("cluster_signature_ttl", "int", 30,
            "Seconds a signed peer request stays valid.", minimum=1),
    Setting("cluster_ca_file", "str", None,
            "CA bundle that verifies https:// peer URLs (default: the system's)."),
    Setting("cache_prefetcher_interval", "int", 300, "Seconds between prefetcher passes.",
            minimum=1),
    Setting("cache_prefetcher_workers", "int", 4, "Images fetched at once by the prefetcher.",
            minimum=1),
    Setting("bind_host", "str", "127.0.0.1", "Address the server listens on."),
    Setting("bind_port", "int", 9292, "Port the server listens on (0 = any free port).",
            maximum=65535, allow_empty=False),
    Setting("workers", "int", 1, "Server processes (0 = one per core)."),
    Setting("cert_file", "str", None,
            "PEM certificate (its chain after it) of glance-cache-mw-api: with key_file "
            "it serves https (gunicorn and uWSGI use their own options)."),
    Setting("key_file", "str", None,
            "PEM private key (unencrypted) of cert_file; both or neither."),
    Setting("chunk_size", "int", 1048576, "Bytes per read when streaming image data.", minimum=1),
    Setting("debug", "bool", False, "Log at DEBUG level."),
    # The images app's limits (api/router.py), Glance's options of the same names.
    Setting("image_member_quota", "int", 128,
            "Members per image (a negative value means unlimited).", minimum=None),
    Setting("image_tag_quota", "int", 128,
            "Tags per image (a negative value means unlimited).", minimum=None),
    Setting("image_property_quota", "int", 128,
            "Additional properties per image (a negative value means unlimited).",
            minimum=None),
    Setting("image_size_cap", "int", 1024 ** 4,
            "Largest image upload in bytes (a negative value means unlimited).", minimum=None),
    Setting("limit_param_default", "int", 25,
            "Images per page of a listing without a limit.", minimum=1),
    Setting("api_limit_max", "int", 1000, "Most images per page of a listing.", minimum=1),
    Setting("admin_without_context", "bool", False,
            "A request without a context is admin (only behind a filter that makes one)."),
    Setting("metrics_dir", "path", lambda v: os.path.join(v["data_dir"], "metrics"),
            "Directory of the worker processes' metric files (emptied at server start)."),
    Setting("metrics_allowed_clients", "str", "127.0.0.0/8, ::1",
            "Client addresses or networks (comma-separated) that may GET /metrics."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}

# The other key [DEFAULT] may hold: the flavor (wsgi.read_flavor).
FLAVOR_KEY = "flavor"
# Keys of Paste sections, which their factories read from the section only: in [DEFAULT] they
# would be ignored, so the error says where they belong.
SECTION_KEYS = {
    "filter:authtoken": (
        "www_authenticate_uri", "auth_uri", "auth_url", "auth_type", "auth_section",
        "project_domain_name", "project_domain_id", "user_domain_name", "user_domain_id",
        "project_name", "project_id", "username", "user_id", "password", "region_name",
        "interface", "delay_auth_decision", "memcached_servers", "service_type",
        "service_token_roles", "service_token_roles_required", "cafile", "certfile",
        "keyfile", "insecure", "http_connect_timeout", "include_service_catalog",
        "token_cache_time", "system_scope"),
    "filter:healthcheck": ("path", "disable_by_file_path"),
}
_PASTE_DEFAULTS = ("here", "__file__")   # Paste (and read_ini_defaults) define these
_INTERPOLATED = re.compile(r"%\(([^)]+)\)s")


def known_default_keys():
    """Every key our INI's [DEFAULT] may hold (besides interpolation variables)."""
    return tuple(_BY_NAME) + (FLAVOR_KEY,)


def check_default_keys(keys, path, variables=()):
    """InvalidConfiguration for the first key of ``keys`` (from [DEFAULT] of ``path``) that
    is not ours; ``variables``: names other values interpolate, which are allowed."""
    known = known_default_keys()
    for key in keys:
        if key in known or key in _PASTE_DEFAULTS or key in variables:
            continue
        section = next((name for name, names in SECTION_KEYS.items() if key in names), None)
        if section is not None:
            raise exception.InvalidConfiguration(
                reason="%s in [DEFAULT] of %s belongs in [%s]" % (key, path, section))
        nearest = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = ("; did you mean %s?" % nearest[0]) if nearest else (
            "; known keys: %s" % ", ".join(sorted(known)))
        raise exception.InvalidConfiguration(
            reason="unknown key %s in [DEFAULT] of %s%s" % (key, path, hint))


def check_cache_driver(conf):
    """InvalidConfiguration unless image_cache_driver names a driver and has what it needs
    (centralized_db: worker_self_reference_url), checked before anything is written."""
    from glance_cache_mw.image_cache import drivers   # no import cycle at module load

    name = (conf.image_cache_driver or "").strip().lower()
    if name not in drivers.DRIVERS:
        raise exception.InvalidConfiguration(
            reason="image_cache_driver=%r is not one of %s"
            % (conf.image_cache_driver, ", ".join(sorted(drivers.DRIVERS))))
    if name == "centralized_db" and not conf.worker_self_reference_url:
        raise exception.InvalidConfiguration(
            reason="image_cache_driver=centralized_db needs worker_self_reference_url "
                   "(this node's URL, e.g. http://HOST:9292)")


class _ConfigMethods:
    """How a Config is read and shown; its fields are made from SETTINGS (below)."""

    def as_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping):
        """Build from INI-style strings (or already typed values); unknown keys are ignored."""
        values = {}
        for setting in SETTINGS:
            raw = mapping.get(setting.name)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if raw is not None and not setting.allow_empty:
                    raise exception.InvalidConfiguration(
                        reason="%s is empty (remove the line for the default, %r)"
                        % (setting.name, setting.default))
                default = setting.default
                values[setting.name] = default(values) if callable(default) else default
                continue
            values[setting.name] = _convert(setting, raw)
        return cls(**values)

    @classmethod
    def from_file(cls, path=None):
        """Read [DEFAULT] of our INI file, strictly (unknown keys and an unusable cache driver
        are errors, see the module docstring); ``None`` means the embedded defaults."""
        if path is None:
            return cls.from_mapping({})
        values = read_ini_defaults(path)
        if not is_glance_config(path):   # Glance's [DEFAULT] is Glance's, not ours to judge
            check_default_keys(values, path, _interpolated_names(path))
        conf = cls.from_mapping(values)
        check_cache_driver(conf)
        return conf


Config = dataclasses.make_dataclass(
    "Config", [(setting.name, _TYPES[setting.kind]) for setting in SETTINGS],
    bases=(_ConfigMethods,), frozen=True, repr=False,   # no repr: sql_connection has passwords
    namespace={"__module__": __name__, "__doc__": (
        "Read-only settings: one typed attribute per SETTINGS entry, named like the INI key "
        "(build it with from_file or from_mapping; dataclasses.replace makes a changed copy).")})


def _convert(setting, raw):
    if setting.kind == "int":
        return _parse_int(setting.name, raw, setting.minimum, setting.maximum)
    if setting.kind == "bool":
        return _parse_bool(setting.name, raw)
    value = _parse_str(setting.name, raw)
    if setting.kind == "secret" and value is not None and len(value) < setting.minimum:
        # The value is a secret: the error names the key only.
        raise exception.InvalidConfiguration(
            reason="%s is shorter than %d characters" % (setting.name, setting.minimum))
    if setting.choices and value not in setting.choices:
        raise exception.InvalidConfiguration(
            reason="%s=%r must be one of %s" % (setting.name, raw, ", ".join(setting.choices)))
    return value


def read_ini_defaults(path):
    """Return the [DEFAULT] section of an INI file as a dict, interpolated as Paste does it
    (``%(here)s`` is the file's directory; a literal ``%`` is written ``%%``)."""
    check_config_path(path)
    path = os.path.abspath(path)
    parser = configparser.ConfigParser(
        defaults={"here": os.path.dirname(path), "__file__": path})
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except configparser.Error as err:
        raise exception.InvalidConfiguration(
            reason="config file %s cannot be parsed: %s" % (path, err)) from None
    values = {}
    for key in parser.defaults():
        try:
            values[key] = parser.get(configparser.DEFAULTSECT, key)
        except configparser.InterpolationError as err:
            if key not in _BY_NAME:
                continue   # not ours: e.g. an oslo.log format string in glance-api.conf
            detail = str(err).splitlines()[0]
            if _BY_NAME[key].kind == "secret" or key == "sql_connection":
                # configparser quotes the value: never show a secret or a password.
                detail = "a '%' that starts no %(name)s (the value is not shown)"
            raise exception.InvalidConfiguration(
                reason="%s in %s: %s (write a literal %% as %%%%)"
                % (key, path, detail)) from None
    # Glance's glance-api.conf names the database [database] connection.
    if "sql_connection" not in values and parser.has_option("database", "connection"):
        values["sql_connection"] = parser.get("database", "connection", raw=True)
    return values


GLANCE_SECTIONS = ("database", "glance_store")


def is_glance_config(path):
    """True for Glance's glance-api.conf (it has a [database] or [glance_store] section, which
    our INI never has): our commands then read our keys from it and leave Glance's alone."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeError, configparser.Error):
        return False
    return any(parser.has_section(name) for name in GLANCE_SECTIONS)


def check_config_path(path):
    """InvalidConfiguration unless ``path`` is an existing file (a directory says so)."""
    if os.path.isdir(path):
        raise exception.InvalidConfiguration(
            reason="config file %s is a directory (give the INI file's path)" % path)
    if not os.path.isfile(path):
        raise exception.InvalidConfiguration(reason="config file %s does not exist" % path)


def _interpolated_names(path):
    """Names used as ``%(name)s`` in any value of ``path`` (raw text; read once parsed)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return set(_INTERPOLATED.findall(handle.read()))
    except (OSError, UnicodeError):
        return set()


def describe():
    """Yield (name, default, help) for documentation and --help output."""
    for setting in SETTINGS:
        default = setting.default
        yield setting.name, ("(derived from data_dir)" if callable(default) else default), setting.help
