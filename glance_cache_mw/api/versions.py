"""The versions document: ``GET /`` (300 Multiple Choices) and ``GET /versions`` (200).

python-glanceclient reads ``/versions`` to decide whether a feature exists
(``utils.has_version``: v2.14 enables its cache-management calls), so the list names the v2
minor versions whose calls this service answers, newest first, the newest CURRENT.
"""

from glance_cache_mw.api import common

CURRENT_MINOR = 16
OLDEST_MINOR = 0


def versions_document(base_url):
    """{"versions": [...]} with self links under ``base_url`` (scheme://host[:port][/prefix])."""
    href = base_url.rstrip("/") + "/v2/"
    versions = []
    for minor in range(CURRENT_MINOR, OLDEST_MINOR - 1, -1):
        versions.append({"id": "v2.%d" % minor,
                         "status": "CURRENT" if minor == CURRENT_MINOR else "SUPPORTED",
                         "links": [{"rel": "self", "href": href}]})
    return {"versions": versions}


def root(req, context=None):
    """GET / : the client must choose (300), as Glance answers."""
    return common.json_response(versions_document(req.application_url), status=300)


def index(req, context=None):
    """GET /versions : the same document with 200."""
    return common.json_response(versions_document(req.application_url))
