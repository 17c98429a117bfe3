"""The images app behind the cache filter: a Glance v2 images API subset on the DB API and store.

``router.app_factory`` is the Paste entry point (``egg:glance_cache_mw#images``).
"""
