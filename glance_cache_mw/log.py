"""Logging set-up of a process: the commands (cmd/) and the WSGI entry point (wsgi.py).

Library modules only ask for their logger (``logging.getLogger(__name__)``); where the records
go and at which level is decided once per process, here.
"""

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(debug=False):
    """Log to stderr at INFO, or DEBUG with ``debug`` (a no-op if logging is set up already)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=FORMAT,
                        stream=sys.stderr)
