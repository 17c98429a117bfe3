"""Cluster mode: nodes that share the image database read each image from the origin once.

A node that misses fills from a peer that holds or is filling the image, over the peer endpoint
(middleware/peer.py, requests signed with ``cluster_secret``: cluster/signing.py); which node
fills an image from the origin right now is claimed in the database (db/fill_claims.py).
Cluster mode is on when ``cluster_secret`` is set and the cache driver is ``centralized_db``
(the driver that records every node's cached images in the shared database); otherwise every
node behaves exactly as a single node.
"""

PEER_PATH_PREFIX = "/cluster/v1/images/"
PEER_PATH_SUFFIX = "/file"


def is_enabled(config):
    """True when this node is part of a cluster (see the module docstring)."""
    driver = (config.image_cache_driver or "").strip().lower()
    return bool(config.cluster_secret) and driver == "centralized_db"


def peer_path(image_id):
    """The peer endpoint's path for ``image_id`` (what a request to a peer signs)."""
    return PEER_PATH_PREFIX + image_id + PEER_PATH_SUFFIX
