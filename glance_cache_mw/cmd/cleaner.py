"""glance-cache-mw-cleaner: remove failed and abandoned fills from the image cache.

Deletes the files in ``invalid/`` (fills whose bytes did not match the image record) and the
files in ``incomplete/`` older than ``image_cache_stall_time`` seconds whose writer is gone. A
fill in progress holds a lock on its file, so it is never removed, whatever its age. Runs once
(cron) or with ``--daemon`` every ``--interval`` seconds (default:
``image_cache_maintenance_interval`` when set, else 300). A second cleaner on the same cache
logs that it is skipping.
"""

import sys

from glance_cache_mw import maintenance
from glance_cache_mw.cmd import periodic


def main(argv=None):
    """Entry point of glance-cache-mw-cleaner; returns the exit status."""
    return periodic.run(argv, __doc__, "glance-cache-mw-cleaner", (maintenance.CLEAN,))


if __name__ == "__main__":
    sys.exit(main())
