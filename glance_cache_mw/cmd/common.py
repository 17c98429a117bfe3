"""What every command shares: the --config option, settings and logging, clean error exits."""

import argparse
import functools
import logging
import sys

from glance_cache_mw import config, exception, log

LOG = logging.getLogger(__name__)


def build_parser(doc, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--config", "--config-file", dest="config_file", metavar="FILE",
                        help="INI file with a [DEFAULT] section (default: embedded defaults "
                             "under ./data)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    return parser


def load_config(args):
    conf = config.Config.from_file(args.config_file)
    log.setup(args.debug or conf.debug)
    return conf


# Exit status of every command (an argparse usage error is 2 too).
EXIT_BAD_CONFIGURATION = 2   # a bad value, an unusable cache driver
EXIT_FAILED = 1              # any other error (the message names the image or the cause)
EXIT_INTERRUPTED = 130       # Ctrl-C outside a daemon's stop handlers (128 + SIGINT)


def exit_status(err):
    """The exit status of a command that ``err`` (a GlanceException) ended."""
    if isinstance(err, (exception.InvalidConfiguration, exception.BadDriverConfiguration)):
        return EXIT_BAD_CONFIGURATION
    return EXIT_FAILED


def exits_cleanly(main):
    """Turn Glance errors into one line on stderr and their exit status (``exit_status``)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except exception.GlanceException as err:
            sys.stderr.write("error: %s\n" % err)
            return exit_status(err)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return wrapper
