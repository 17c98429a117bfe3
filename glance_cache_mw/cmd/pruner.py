"""glance-cache-mw-pruner: evict images gone from the database, then prune to the size limit.

Each pass first evicts cached images that are deleted, deactivated or missing in the database
(deleted through another node, for instance), then removes least recently used images until
the cache fits ``image_cache_max_size`` and leaves ``image_cache_min_free`` bytes free. Runs
once (cron) or with ``--daemon`` every ``--interval`` seconds (default:
``image_cache_maintenance_interval`` when set, else 300). A second pruner on the same cache
logs that it is skipping.
"""

import sys

from glance_cache_mw import maintenance
from glance_cache_mw.cmd import periodic


def main(argv=None):
    """Entry point of glance-cache-mw-pruner; returns the exit status."""
    return periodic.run(argv, __doc__, "glance-cache-mw-pruner",
                        (maintenance.EVICT, maintenance.PRUNE))


if __name__ == "__main__":
    sys.exit(main())
