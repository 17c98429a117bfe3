"""Where the worker processes of one server keep their metric values (prometheus_client's
multiprocess mode), set up before prometheus_client is first imported.

prometheus_client decides between in-memory and per-process file values when
``prometheus_client.values`` is imported, from ``PROMETHEUS_MULTIPROC_DIR``. So a server sets
that variable before it loads the pipeline (which imports glance_cache_mw.metrics):

* glance-cache-mw-api (``prepare_server_dir``): the parent uses ``metrics_dir`` (default
  ``{data_dir}/metrics``), removes the files of an earlier run, then forks its workers. A
  worker that dies leaves its counters (summed into every scrape until the server stops);
  the supervisor drops its live gauges (``mark_process_dead``).
* gunicorn / uWSGI (``prepare_wsgi_dir``): an operator-set ``PROMETHEUS_MULTIPROC_DIR`` is
  used as it is (the operator wipes it when the server starts, as prometheus_client
  documents). Otherwise every worker of one server run agrees on
  ``{metrics_dir}/pgid-{process group}``: a server's master and workers share their process
  group; directories of groups that no longer exist are removed.

This module must not import prometheus_client at import time.
"""

import glob
import logging
import os
import shutil
import sys

from glance_cache_mw import exception

LOG = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
GROUP_PREFIX = "pgid-"


def prepare_server_dir(path, environ=os.environ):
    """Create ``path``, remove the value files of an earlier run, point ENV at it."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.unlink(stale)
    except OSError as err:
        raise exception.InvalidConfiguration(
            reason="metrics_dir=%r cannot be used: %s" % (path, err)) from None
    _set(path, environ)
    return path


def prepare_wsgi_dir(metrics_dir, environ=os.environ):
    """ENV as the operator set it, else a directory per process group under ``metrics_dir``."""
    if environ.get(ENV):
        os.makedirs(environ[ENV], exist_ok=True)
        _warn_if_too_late(environ[ENV])
        return environ[ENV]
    metrics_dir = os.path.abspath(metrics_dir)
    path = os.path.join(metrics_dir, "%s%d" % (GROUP_PREFIX, os.getpgrp()))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise exception.InvalidConfiguration(
            reason="metrics_dir=%r cannot be used: %s" % (metrics_dir, err)) from None
    remove_dead_groups(metrics_dir)
    _set(path, environ)
    return path


def remove_dead_groups(metrics_dir):
    """Remove ``pgid-N`` directories whose process group is gone."""
    for entry in glob.glob(os.path.join(metrics_dir, GROUP_PREFIX + "*")):
        try:
            pgid = int(os.path.basename(entry)[len(GROUP_PREFIX):])
        except ValueError:
            continue
        if pgid != os.getpgrp() and not is_group_alive(pgid):
            LOG.info("removing the metrics of a server run that ended: %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def is_group_alive(pgid):
    """True while a process of group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_process_dead(pid):
    """Drop the live gauges of a worker that exited (its counters stay)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


def _set(path, environ):
    environ[ENV] = path
    _select_value_class(path)


def _select_value_class(path):
    """prometheus_client chose its value class when it was imported (reading the settings
    imports the cache drivers, and so it, before the directory is known): choose again. Metric
    objects read ``values.ValueClass`` when they are created, and the server creates them
    (``metrics.shared()``) only when it loads the pipeline, after this."""
    values = sys.modules.get("prometheus_client.values")
    if values is None or values.ValueClass.__name__ == "MmapedValue":
        return
    if os.environ.get(ENV) == path:
        values.ValueClass = values.get_value_class()
    _warn_if_too_late(path)


def _warn_if_too_late(path):
    values = sys.modules.get("prometheus_client.values")
    metrics = sys.modules.get("glance_cache_mw.metrics")
    if (values is not None and values.ValueClass.__name__ != "MmapedValue") or (
            metrics is not None and getattr(metrics, "_shared", None) is not None):
        LOG.warning("prometheus_client was imported before %s=%s was set: this process "
                    "keeps its metrics in memory only", ENV, path)
