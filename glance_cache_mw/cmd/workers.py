"""How glance-cache-mw-api serves its socket: one process, or pre-forked workers.

``serve`` runs eventlet's WSGI server (with cmd/sendfile.py's protocol, or cmd/tls.py's over
https) on a listening socket until SIGTERM, then drains: the listening socket is closed at
once (new connections are refused), in-flight requests get up to the grace time to finish.
``Supervisor`` is the parent of ``workers`` forked processes that share the socket: it
replaces a worker that dies (and gives up when they keep dying right after start) and forwards
SIGTERM.
"""

import contextlib
import logging
import os
import signal
import time
import warnings

with warnings.catch_warnings():
    # eventlet warns on import that it is in maintenance mode; it is our chosen server.
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")
    import eventlet
    import eventlet.hubs
    import eventlet.wsgi

from glance_cache_mw import metrics_dir
from glance_cache_mw.cmd import sendfile

LOG = logging.getLogger(__name__)

POOL_SIZE = 1000
CLIENT_SOCKET_TIMEOUT_S = 900
STOP_POLL_S = 0.1
CRASH_WINDOW_S = 5
MAX_QUICK_CRASHES = 5


class _StopFlag:
    """Set by a signal handler; polled by the serving loop (nothing else is safe in a handler)."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, _frame):
        self.signum = signum


def serve(sock, app, grace_s, stop_on_sigint=False, parent_pid=None, maintain=None,
          protocol=sendfile.SendfileProtocol):
    """Serve ``app`` on ``sock`` until SIGTERM, then drain for up to ``grace_s``; return 0.

    ``protocol``: eventlet's HTTP protocol class (cmd/tls.py's for https).

    A worker passes its parent's pid: if the parent is gone (killed with SIGKILL), the worker
    stops as if it got SIGTERM instead of holding the port as an orphan.
    """
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop if stop_on_sigint else signal.SIG_IGN)
    maintenance = maintain() if maintain is not None else None
    try:
        return _serve_until_stopped(sock, app, grace_s, stop, parent_pid, protocol)
    finally:
        if maintenance is not None:
            maintenance.close()


def _serve_until_stopped(sock, app, grace_s, stop, parent_pid, protocol):
    pool = eventlet.GreenPool(POOL_SIZE)
    server = eventlet.spawn(eventlet.wsgi.server, sock, app, custom_pool=pool, log=LOG,
                            log_output=False, socket_timeout=CLIENT_SOCKET_TIMEOUT_S,
                            keepalive=True, debug=False, protocol=protocol)
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

    def __init__(self, sock, app, workers, grace_s, maintain=None,
                 protocol=sendfile.SendfileProtocol):
        self.maintain = maintain
        self.protocol = protocol
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
                           maintain=self.maintain, protocol=self.protocol)
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
            metrics_dir.mark_process_dead(pid)
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
