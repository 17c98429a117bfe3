"""What the maintenance commands share: run once (cron) or as a daemon, stop on a signal.

    glance-cache-mw-pruner [--config FILE]                        one pass, then exit
    glance-cache-mw-pruner [--config FILE] --daemon [--interval SECONDS]

Exit status (cmd/common.py): 0 done (also when another run held the lock and this one skipped,
and when a daemon was stopped by SIGTERM/SIGINT), 1 a task failed or some images failed
(prefetcher), 2 bad configuration (a bad value, an unusable cache driver).

SIGTERM and SIGINT set a stop event: prune and clean finish the pass they are in; the
prefetcher abandons the image it is reading (its partial file is never servable and goes to
invalid/, the queue entry stays) and starts no other. Then the command exits 0.
"""

import argparse
import logging
import signal
import sys
import threading

from glance_cache_mw import maintenance as maintenance_mod
from glance_cache_mw import prefetcher as prefetcher_mod
from glance_cache_mw.cmd import common, progress as progress_mod

LOG = logging.getLogger(__name__)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the interval must be more than 0 seconds")
    return value


def build_parser(doc, prog, interval_help):
    parser = common.build_parser(doc, prog=prog)
    parser.add_argument("--daemon", action="store_true",
                        help="keep running, one pass every --interval seconds, until "
                             "SIGTERM or SIGINT")
    parser.add_argument("--interval", type=_seconds, metavar="SECONDS",
                        help="seconds between passes with --daemon (default: %s)"
                             % interval_help)
    return parser


def install_stop_handlers(stop_event):
    """SIGTERM and SIGINT set ``stop_event``; returns a function restoring the old ones."""
    previous = {}

    def handle(signum, _frame):
        LOG.info("received %s: stopping after the current step", signal.Signals(signum).name)
        stop_event.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handle)

    def restore():
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return restore


def pass_status(results):
    """Exit status of one pass: 1 if a task raised or prefetched images failed, else 0."""
    for result in results.values():
        if isinstance(result, Exception):
            return common.EXIT_FAILED
        if isinstance(result, prefetcher_mod.PrefetchResult) and result.failed:
            return common.EXIT_FAILED
    return 0


DEFAULT_INTERVAL_S = 300
MAINTENANCE_INTERVAL_HELP = ("image_cache_maintenance_interval, or %d when it is 0"
                             % DEFAULT_INTERVAL_S)


def maintenance_interval(conf):
    """The pruner's and cleaner's daemon interval when --interval is not given."""
    return conf.image_cache_maintenance_interval or DEFAULT_INTERVAL_S


def run(argv, doc, prog, tasks, default_interval=maintenance_interval,
        interval_help=MAINTENANCE_INTERVAL_HELP):
    """Parse ``argv``, then run ``tasks`` once or as a daemon; returns the exit status.

    ``default_interval(config)`` gives the daemon's interval when --interval is not given;
    ``interval_help`` says where it comes from in --help.
    """
    parser = build_parser(doc, prog, interval_help)
    args = parser.parse_args(argv)
    if args.interval is not None and not args.daemon:
        parser.error("--interval needs --daemon")
    return _run(args, tasks, default_interval)


@common.exits_cleanly
def _run(args, tasks, default_interval):
    conf = common.load_config(args)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    progress = None
    if maintenance_mod.PREFETCH in tasks and not args.daemon:
        progress = progress_mod.Progress(sys.stderr)
        if progress.enabled:
            for handler in logging.getLogger().handlers:
                handler.addFilter(progress)
    # Only a prefetch reads image data: the pruner and cleaner need no glance_store.
    prefetches = maintenance_mod.PREFETCH in tasks
    maintenance = maintenance_mod.Maintenance.from_config(
        conf, progress=progress, config_file=args.config_file if prefetches else None)
    stop_event = threading.Event()
    restore = install_stop_handlers(stop_event)
    try:
        if not args.daemon:
            results = maintenance.run_pass(stop_event, tasks)
            return pass_status(results)
        interval = args.interval or default_interval(conf)
        maintenance.run_loop(interval, stop_event, tasks)
        return 0
    finally:
        restore()
        maintenance.close()
