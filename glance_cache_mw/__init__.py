"""glance_cache_mw: an image-download cache in front of a Glance-compatible images API."""
