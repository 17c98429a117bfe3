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


def exits_cleanly(main):
    """Turn configuration and Glance errors into one line on stderr and exit status 2 or 1."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except exception.InvalidConfiguration as err:
            sys.stderr.write("error: %s\n" % err)
            return 2
        except exception.GlanceException as err:
            sys.stderr.write("error: %s\n" % err)
            return 1
        except KeyboardInterrupt:
            return 130
    return wrapper
