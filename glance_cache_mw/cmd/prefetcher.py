"""glance-cache-mw-prefetcher: cache every queued image from the image store.

Queued images (``glance-cache-mw-manage cache queue ID``, or ``PUT /v2/cache/{id}``) are read
from ``filesystem_store_datadir`` — or, given Glance's glance-api.conf (a ``[glance_store]``
section or ``enabled_backends``), through Glance's stores with glance_store — and verified
against their image record like any fill,
``cache_prefetcher_workers`` at a time. Images that are gone, deleted or not active are dropped
from the queue; an image that fails (missing data, wrong checksum, no room) is logged with its
id and dropped from the queue, and the command exits 1. On a terminal, a status line shows
the images, bytes and rate. Runs once (cron) or with ``--daemon`` every ``--interval`` seconds
(default: ``cache_prefetcher_interval``). A second prefetcher on the same cache logs that it
is skipping.
"""

import sys

from glance_cache_mw import maintenance
from glance_cache_mw.cmd import periodic


def default_interval(conf):
    return conf.cache_prefetcher_interval


def main(argv=None):
    """Entry point of glance-cache-mw-prefetcher; returns the exit status.

    No eventlet here: the workers are plain threads, so nothing is monkey-patched.
    """
    return periodic.run(argv, __doc__, "glance-cache-mw-prefetcher", (maintenance.PREFETCH,),
                        default_interval, "cache_prefetcher_interval")


if __name__ == "__main__":
    sys.exit(main())
