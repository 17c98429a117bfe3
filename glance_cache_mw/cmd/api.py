"""glance-cache-mw-api: serve the Paste pipeline with eventlet's WSGI server.

Start-up, in this order, so that every mistake is reported before a port is taken: read the
settings (``--config FILE``, or the embedded defaults under ./data) and check them (unknown
keys, the cache driver, ``cert_file``/``key_file``, the flavor: exit 2 before anything is
written), create or check the database schema (SQLite is created/upgraded in place; PostgreSQL
and MySQL must have been synced with ``glance-cache-mw-manage db sync``), build the pipeline
of the configured flavor, bind ``bind_host:bind_port`` (port 0 = any free port) and print
where it listens. With ``cert_file`` and ``key_file`` it serves https (cmd/tls.py: each
connection's handshake in its own green thread).

With ``workers`` = 1 the server runs in this process; otherwise (0 = one per core) worker
processes are forked after the socket is bound and share it; the parent replaces a worker that
dies and forwards SIGTERM (cmd/workers.py). SIGTERM (or Ctrl-C) stops gracefully: the listening
socket is closed at once in every process (new connections are refused), in-flight requests get
up to ``--graceful-timeout`` seconds to finish, then the process exits 0.

The server offers ``wsgi.file_wrapper``: a cache hit is sent with sendfile (cmd/sendfile.py;
over https eventlet writes it through the SSL object).
Each response is logged on the ``glance_cache_mw.access`` logger when its body is done, with
the ``X-Image-Cache`` status (HIT, MISS, ...) when the response has one
(middleware/access_log.py); the schema is prepared by db/migration.py.
"""

import atexit
import contextlib
import functools
import logging
import os
import socket
import sys
import warnings

with warnings.catch_warnings():
    # eventlet warns on import that it is in maintenance mode; it is our chosen server.
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet

from glance_cache_mw import exception, metrics_dir
from glance_cache_mw.cmd import common, tls, workers as workers_mod

LOG = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 60
BACKLOG = 4096


def build_parser():
    parser = common.build_parser(__doc__, prog="glance-cache-mw-api")
    parser.add_argument("--graceful-timeout", type=float, default=GRACEFUL_TIMEOUT_S,
                        metavar="SECONDS",
                        help="on SIGTERM, how long in-flight requests may still run "
                             "(default: %(default)s)")
    return parser


def main(argv=None):
    """Entry point of glance-cache-mw-api: serves, then ends the process with the exit status
    (it does not return; see ``exit_now``)."""
    # Patched here, not at import, so that importing this module (tests, docs) has no effect;
    # everything that creates sockets or locks is imported after this line.
    eventlet.monkey_patch()
    exit_now(_run(argv))


def exit_now(status):
    """End the process with ``status`` once everything is done, without the interpreter's
    teardown: collecting every module's objects (SQLAlchemy, eventlet, Paste) took seconds
    on a busy host after "all requests done". The atexit handlers (a cache driver's last hit
    statistics), logging and the standard streams are flushed first."""
    atexit._run_exitfuncs()   # pylint: disable=protected-access  (what exit() would run)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


@common.exits_cleanly
def _run(argv):
    from glance_cache_mw import wsgi
    from glance_cache_mw.db import migration
    from glance_cache_mw.middleware.access_log import AccessLog

    args = build_parser().parse_args(argv)
    conf = common.load_config(args)
    tls_context = tls.server_context(conf.cert_file, conf.key_file)   # exit 2 if unusable
    if not conf.debug and not args.debug:
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    flavor = wsgi.check_flavor(args.config_file)   # settings and flavor checked: now write
    migration.prepare_database(conf.sql_connection)
    metrics_dir.prepare_server_dir(conf.metrics_dir)   # before the pipeline imports metrics
    if args.config_file:
        app = AccessLog(wsgi.load_app(args.config_file))
    else:
        app = AccessLog(wsgi.load_embedded_app())
    sock = bind(conf.bind_host, conf.bind_port)
    workers = conf.workers or os.cpu_count() or 1
    protocol = tls.protocol(tls_context)
    scheme = "https" if tls_context is not None else "http"
    print_banner(sock, conf, flavor, workers, args.config_file, scheme)
    maintain = functools.partial(start_maintenance, conf)
    if workers == 1:
        return workers_mod.serve(sock, app, args.graceful_timeout, stop_on_sigint=True,
                                 maintain=maintain, protocol=protocol)
    return workers_mod.Supervisor(sock, app, workers, args.graceful_timeout, maintain,
                                  protocol).run()


def start_maintenance(conf):
    """The in-process prune/clean/prefetch loop when image_cache_maintenance_interval > 0.

    Every serving process runs one; the per-task locks let one of them do each task.
    """
    if conf.image_cache_maintenance_interval <= 0:
        return None
    from glance_cache_mw.maintenance import Maintenance
    return Maintenance.from_config(conf).start(conf.image_cache_maintenance_interval)


def bind(host, port):
    """A listening green socket; errors name the settings."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
        # No SO_REUSEPORT: a second server on the same port must fail, not share it.
        return eventlet.listen(address, family=family, backlog=BACKLOG, reuse_port=False)
    except OSError as err:
        raise exception.InvalidConfiguration(
            reason="cannot listen on bind_host=%r bind_port=%r: %s" % (host, port, err)) from None


def base_url(sock, scheme="http"):
    """``scheme://host:port`` of a listening socket (wildcard addresses shown as loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = "[%s]" % host
    return "%s://%s:%d" % (scheme, host, port)


def print_banner(sock, conf, flavor, workers, config_file, scheme="http"):
    """Tell the operator where the server listens and, for noauth, how to upload an image."""
    import sqlalchemy as sa

    url = base_url(sock, scheme)
    LOG.info("listening on %s (flavor %s, workers=%d)", url, flavor, workers)
    lines = ["glance-cache-mw-api: listening on %s (flavor %s, %d worker%s, pid %d)"
             % (url, flavor, workers, "" if workers == 1 else "s", os.getpid())]
    if config_file:
        lines.append("  settings: %s" % os.path.abspath(config_file))
    else:
        lines.append("  settings: embedded defaults (no --config); data under %s"
                     % os.path.abspath(conf.data_dir))
    lines.append("  database: %s" % sa.engine.make_url(conf.sql_connection).render_as_string(
        hide_password=True))
    if flavor == "noauth":
        lines += [
            "Upload an image (noauth: no real token needed):",
            "  glance --os-image-url %s --os-auth-token noauth image-create --name cirros "
            "--disk-format qcow2 --container-format bare --file cirros.img" % url,
            "or with curl:",
            "  curl -X POST %s/v2/images -H 'Content-Type: application/json' -d '{\"name\": "
            "\"cirros\", \"disk_format\": \"qcow2\", \"container_format\": \"bare\"}'" % url,
            "  curl -X PUT %s/v2/images/IMAGE_ID/file -H 'Content-Type: "
            "application/octet-stream' --data-binary @cirros.img" % url,
            "Download (cached from the first download on): curl -o cirros.img "
            "%s/v2/images/IMAGE_ID/file" % url,
        ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
