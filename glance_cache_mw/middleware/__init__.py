"""Paste filters in front of the images app, in pipeline order (etc/glance-cache-mw.ini).

``healthcheck`` (healthcheck.py) and ``metrics`` (metrics.py) answer probes and scrapes before
authentication; ``noauth``/``context``/``authtoken`` (context.py) put the request context into
the environ; ``cachemanage`` (api/cache_manage.py) answers ``/v2/cache``; ``cache`` (cache.py,
the CacheFilter) serves image downloads from the image cache and fills it on misses. The
filters of one pipeline share one ImageCache per process (``glance_compat.shared_cache``).
download.py holds the response headers every download path shares, glance_compat.py what
differs inside Glance's own pipeline, cork.py the TCP_CORK wrapper for gunicorn.

Each module exposes Paste ``filter_factory`` functions (entry points in setup.cfg); the filters
get everything they need through their constructors and pass what they do not handle to the
wrapped app.
"""
