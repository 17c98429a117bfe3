"""glance-cache-mw-api: serve the Paste pipeline with eventlet's WSGI server.

Start-up, in this order, so that every mistake is reported before a port is taken: read the
settings (``--config FILE``, or the embedded defaults under ./data) and check them (unknown
keys, the cache driver, the flavor: exit 2 before anything is written), create or check the
database schema (SQLite is created/upgraded in place; PostgreSQL and MySQL must have been synced
with ``glance-cache-mw-manage db sync``), build the pipeline of the configured flavor, bind
``bind_host:bind_port`` (port 0 = any free port) and print where it listens.

With ``workers`` = 1 the server runs in this process; otherwise (0 = one per core) worker
processes are forked after the socket is bound and share it; the parent replaces a worker that
dies and forwards SIGTERM. SIGTERM (or Ctrl-C) stops gracefully: the listening socket is
closed at once in every process (new connections are refused), in-flight requests get up to
``--graceful-timeout`` seconds to finish, then the process exits 0.

The server offers ``wsgi.file_wrapper``: a cache hit is sent with sendfile (cmd/sendfile.py).
Each response is logged on the ``glance_cache_mw.access`` logger when its body is done, with
the ``X-Image-Cache`` status (HIT, MISS, ...) when the response has one.
"""

import atexit
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
import urllib.parse
import warnings

with warnings.catch_warnings():
    # eventlet warns on import that it is in maintenance mode; it is our chosen server.
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet
    import eventlet.hubs
    import eventlet.wsgi

from glance_cache_mw import exception
from glance_cache_mw.api import faults
from glance_cache_mw.cmd import common, sendfile

LOG = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("glance_cache_mw.access")

GRACEFUL_TIMEOUT_S = 60
POOL_SIZE = 1000
BACKLOG = 4096
CLIENT_SOCKET_TIMEOUT_S = 900
STOP_POLL_S = 0.1
CRASH_WINDOW_S = 5
MAX_QUICK_CRASHES = 5


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

    args = build_parser().parse_args(argv)
    conf = common.load_config(args)
    if not conf.debug and not args.debug:
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    flavor = wsgi.check_flavor(args.config_file)   # settings and flavor checked: now write
    prepare_database(conf.sql_connection)
    if args.config_file:
        app = AccessLog(wsgi.load_app(args.config_file))
    else:
        app = AccessLog(wsgi.load_embedded_app())
    sock = bind(conf.bind_host, conf.bind_port)
    workers = conf.workers or os.cpu_count() or 1
    print_banner(sock, conf, flavor, workers, args.config_file)
    maintain = functools.partial(start_maintenance, conf)
    if workers == 1:
        return serve(sock, app, args.graceful_timeout, stop_on_sigint=True, maintain=maintain)
    return Supervisor(sock, app, workers, args.graceful_timeout, maintain).run()


def start_maintenance(conf):
    """The in-process prune/clean/prefetch loop when image_cache_maintenance_interval > 0.

    Every serving process runs one; the per-task locks let one of them do each task.
    """
    if conf.image_cache_maintenance_interval <= 0:
        return None
    from glance_cache_mw.maintenance import Maintenance
    return Maintenance.from_config(conf).start(conf.image_cache_maintenance_interval)


def prepare_database(url):
    """Create/upgrade a SQLite schema in place; require a synced schema on a database server."""
    import alembic.util
    import sqlalchemy as sa

    from glance_cache_mw.db import engine as db_engine, migration

    engine = db_engine.create_engine(url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if engine.url.get_backend_name() == "sqlite":
            database = engine.url.database
            if database not in (None, "", ":memory:"):
                os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
            migration.sync(engine)
            return
        current, head = migration.version(engine), migration.head()
        if current != head:
            raise exception.GlanceException(
                "database %s is at revision %s, this version needs %s: run "
                "glance-cache-mw-manage --config FILE db sync" % (where, current, head))
    except sa.exc.DBAPIError as err:
        reason = " ".join(str(err.orig).split())   # drivers' messages span lines
        raise exception.GlanceException("database %s: %s" % (where, reason)) from None
    except (OSError, alembic.util.CommandError) as err:
        # e.g. a revision from a newer release of this package
        raise exception.GlanceException("database %s: %s" % (where, err)) from None
    finally:
        engine.dispose()


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


def base_url(sock):
    """``http://host:port`` of a listening socket (wildcard addresses shown as loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = "[%s]" % host
    return "http://%s:%d" % (host, port)


def print_banner(sock, conf, flavor, workers, config_file):
    """Tell the operator where the server listens and, for noauth, how to upload an image."""
    import sqlalchemy as sa

    url = base_url(sock)
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


class _StopFlag:
    """Set by a signal handler; polled by the serving loop (nothing else is safe in a handler)."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, _frame):
        self.signum = signum


def serve(sock, app, grace_s, stop_on_sigint=False, parent_pid=None, maintain=None):
    """Serve ``app`` on ``sock`` until SIGTERM, then drain for up to ``grace_s``; return 0.

    A worker passes its parent's pid: if the parent is gone (killed with SIGKILL), the worker
    stops as if it got SIGTERM instead of holding the port as an orphan.
    """
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop if stop_on_sigint else signal.SIG_IGN)
    maintenance = maintain() if maintain is not None else None
    try:
        return _serve_until_stopped(sock, app, grace_s, stop, parent_pid)
    finally:
        if maintenance is not None:
            maintenance.close()


def _serve_until_stopped(sock, app, grace_s, stop, parent_pid):
    pool = eventlet.GreenPool(POOL_SIZE)
    server = eventlet.spawn(eventlet.wsgi.server, sock, app, custom_pool=pool, log=LOG,
                            log_output=False, socket_timeout=CLIENT_SOCKET_TIMEOUT_S,
                            keepalive=True, debug=False, protocol=sendfile.SendfileProtocol)
    while stop.signum is None and not server.dead:
        eventlet.sleep(STOP_POLL_S)
        if parent_pid is not None and os.getppid() != parent_pid:
            LOG.warning("worker %d: the parent process is gone; stopping", os.getpid())
            stop(signal.SIGTERM, None)
    if stop.signum is None:
        LOG.error("the server loop of worker %d ended unexpectedly", os.getpid())
        return 1
    LOG.info("worker %d: signal %d, no longer accepting; %d requests in flight (up to %g s)",
             os.getpid(), stop.signum, pool.running(), grace_s)
    # eventlet.wsgi.server catches SystemExit in its accept loop, closes idle keep-alive
    # connections, marks busy ones to close after their response and waits for the pool.
    server.kill(SystemExit)
    sock.close()
    with eventlet.Timeout(grace_s, False):
        server.wait()
        LOG.info("worker %d: all requests done, exiting", os.getpid())
        return 0
    LOG.warning("worker %d: %d requests still running after %g s, exiting anyway",
                os.getpid(), pool.running(), grace_s)
    return 0


class Supervisor:
    """Parent of the worker processes: fork them, replace the dead ones, stop them all."""

    def __init__(self, sock, app, workers, grace_s, maintain=None):
        self.maintain = maintain
        self.sock = sock
        self.app = app
        self.workers = workers
        self.grace_s = grace_s
        self.children = {}           # pid -> start time (monotonic)
        self.parent_pid = os.getpid()
        self.quick_crashes = 0

    def run(self):
        """Return 0 after a graceful stop, 1 if workers keep dying right after start."""
        stop = _StopFlag()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for _ in range(self.workers):
            self.spawn()
        status = 0
        while stop.signum is None:
            if not self.reap(respawn=True):
                status = 1
                break
            time.sleep(STOP_POLL_S)
        # Our copy of the listening socket goes first: once the workers close theirs (right
        # after the signal) the kernel refuses new connections instead of queueing them for
        # nobody until the drain ends.
        self.sock.close()
        self.stop_children()
        return status

    def spawn(self):
        # SIGTERM is held back across fork: a child must not get it while it still has the
        # parent's handler (which would swallow it and leave the worker serving).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        pid = os.fork()
        if pid == 0:
            os._exit(self._child_main())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        LOG.info("started worker %d", pid)
        self.children[pid] = time.monotonic()

    def _child_main(self):
        # Until serve() installs its handler, SIGTERM simply ends a worker with no requests yet
        # (the parent's handler, inherited, would swallow it).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})   # held in spawn()
        status = 1
        try:
            # A fresh hub: the parent's epoll instance must not be shared with the children.
            eventlet.hubs.use_hub()
            _forget_inherited_connections()
            status = serve(self.sock, self.app, self.grace_s, parent_pid=self.parent_pid,
                           maintain=self.maintain)
        except BaseException:  # the child must never return into the parent's code
            LOG.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
        return status

    def reap(self, respawn):
        """Collect exited workers; replace them when ``respawn``. False: give up (crash loop)."""
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            started = self.children.pop(pid, None)
            if started is None:
                continue
            if not respawn:
                continue
            LOG.error("worker %d exited (status %d); starting another", pid,
                      os.waitstatus_to_exitcode(status))
            if time.monotonic() - started < CRASH_WINDOW_S:
                self.quick_crashes += 1
                if self.quick_crashes >= MAX_QUICK_CRASHES:
                    LOG.error("workers keep exiting right after start; giving up")
                    return False
            else:
                self.quick_crashes = 0
            self.spawn()
        return True

    def stop_children(self):
        """SIGTERM every worker, wait for the drain, SIGKILL what is left."""
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 5
        while self.children and time.monotonic() < deadline:
            self.reap(respawn=False)
            time.sleep(0.05)
        for pid in list(self.children):
            LOG.warning("worker %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.children.pop(pid, None)
        LOG.info("all workers stopped")


def _signal(pid, signum):
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _forget_inherited_connections():
    """Drop (without closing) pooled DB connections a worker inherited from the parent."""
    from glance_cache_mw.db import engine as db_engine

    if db_engine.is_configured():
        db_engine.get_engine().dispose(close=False)


class AccessLog:
    """WSGI wrapper: one line per request on ``glance_cache_mw.access``, when its body is done.

    A body is wrapped to count its bytes, except this server's ``wsgi.file_wrapper``, which
    must reach the server as it is (else no sendfile): it counts them itself and calls back at
    close(). (gunicorn and uWSGI serve glance_cache_mw.wsgi, which has no AccessLog; they log
    unhandled errors themselves.)

    It is also where an error nothing else handled ends: logged with its traceback (eventlet's
    own error log is off, it would go nowhere) and, while nothing was sent yet, answered with a
    500 that gives a reason and no traceback.
    """

    def __init__(self, app, log=ACCESS_LOG):
        self.app = app
        self.log = log

    def __call__(self, environ, start_response):
        record = _Record(environ, self.log)

        def start_and_record(status, headers, exc_info=None):
            record.status = status.split(None, 1)[0]
            record.cache = next((value for name, value in headers
                                 if name.lower() == "x-image-cache"), None)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_and_record)
        except Exception:
            LOG.exception("unhandled error in %s %s", record.method, record.target)
            return _internal_error(environ, start_and_record, record)
        except BaseException:
            record.status = record.status or "500"
            record.emit()
            raise
        if isinstance(body, sendfile.FileWrapper):
            body.add_close_callback(record.emit_file)
            return body
        return _LoggedBody(body, record)


def _internal_error(environ, start_response, record):
    """A 500 with a reason (in the format the client accepts, like every other error)."""
    response = faults.error(
        500, "The server could not complete the request; its log has the details.")
    body = response(environ, lambda status, headers: start_response(status, headers,
                                                                    sys.exc_info()))
    return _LoggedBody(body, record)


class _Record:
    """What the access log line says about one request."""

    def __init__(self, environ, log):
        self.log = log
        self.started = time.monotonic()
        self.client = environ.get("REMOTE_ADDR", "-")
        self.method = environ.get("REQUEST_METHOD", "-")
        path = environ.get("RAW_PATH_INFO") or urllib.parse.quote(
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING")
        self.target = path + ("?" + query if query else "")
        self.status = None
        self.cache = None
        self.sent = 0
        self.done = False

    def emit(self):
        if self.done:
            return
        self.done = True
        self.log.info('%s "%s %s" %s %d %.3fs cache=%s', self.client, self.method,
                      self.target, self.status or "-", self.sent,
                      time.monotonic() - self.started, self.cache or "-")

    def emit_file(self, wrapper):
        """emit() for a body that was a sendfile.FileWrapper, with the bytes it sent."""
        self.sent = wrapper.sent
        self.emit()


class _LoggedBody:
    """Counts the body's bytes; close() reaches the wrapped body, then writes the log line."""

    def __init__(self, body, record):
        self._body = body
        self._chunks = iter(body)
        self._record = record

    def __iter__(self):
        return self

    def __next__(self):
        try:
            chunk = next(self._chunks)
        except StopIteration:
            raise
        except Exception:
            LOG.exception("unhandled error in the body of %s %s after %d bytes",
                          self._record.method, self._record.target, self._record.sent)
            raise
        self._record.sent += len(chunk)
        return chunk

    def close(self):
        try:
            getattr(self._body, "close", lambda: None)()  # PEP 3333: close() must reach it
        finally:
            self._record.emit()


if __name__ == "__main__":
    sys.exit(main())
