"""Paste filters in front of the images app: health check, request context, (later) the cache.

Each module exposes Paste ``filter_factory`` functions (entry points in setup.cfg); the filters
get everything they need through their constructors and pass what they do not handle to the
wrapped app.
"""
