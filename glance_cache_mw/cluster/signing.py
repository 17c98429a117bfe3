"""Signed node-to-node requests: HMAC-SHA256 with the cluster's shared secret.

The asking node signs ``method``, ``path``, ``image_id``, its own URL and an expiry (epoch
seconds), joined by newlines, and sends them in three headers. The serving node recomputes the
signature with its secret and compares in constant time (``hmac.compare_digest``). No tenant
context travels: the asking node authorised its client before asking. A signature is good for
``ttl_s`` seconds; an expiry further ahead than ``ttl_s`` plus ``CLOCK_SKEW_S`` is refused too,
so a leaked request cannot be replayed for long. The secret is never logged or put in a reason.
"""

import hashlib
import hmac
import re
import time

NODE_HEADER = "X-Cache-Peer-Node"
EXPIRES_HEADER = "X-Cache-Peer-Expires"
SIGNATURE_HEADER = "X-Cache-Peer-Signature"
CLOCK_SKEW_S = 5

_EXPIRES = re.compile(r"\A[0-9]{1,12}\Z")
_SIGNATURE = re.compile(r"\A[0-9a-f]{64}\Z")
_MAX_NODE_URL = 255   # node_reference_url's length


def sign(secret, method, path, image_id, node_url, expires):
    """The hex HMAC-SHA256 of the request's fields under ``secret`` (a non-empty string)."""
    if not secret:
        raise ValueError("cannot sign a peer request without a cluster_secret")
    message = "\n".join([method, path, image_id, node_url, str(expires)])
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(secret, method, path, image_id, node_url, ttl_s, now=None):
    """The three headers of a request from ``node_url``, good for ``ttl_s`` seconds."""
    expires = int(time.time() if now is None else now) + int(ttl_s)
    return {
        NODE_HEADER: node_url,
        EXPIRES_HEADER: str(expires),
        SIGNATURE_HEADER: sign(secret, method, path, image_id, node_url, expires),
    }


def verify(secret, method, path, image_id, headers, ttl_s, now=None):
    """None if ``headers`` (any mapping with ``get``: WebOb's, a dict) sign this request and
    are current; else the reason it is refused, for a 403 body and the log."""
    if not secret:
        return "cluster mode is off on this node (no cluster_secret)"
    node_url = headers.get(NODE_HEADER)
    expires = headers.get(EXPIRES_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if node_url is None or expires is None or signature is None:
        return "unsigned request (%s, %s and %s are required)" % (
            NODE_HEADER, EXPIRES_HEADER, SIGNATURE_HEADER)
    reason = _malformed(node_url, expires, signature)
    if reason:
        return reason
    now = time.time() if now is None else now
    if int(expires) < now:
        return "signature expired"
    if int(expires) > now + ttl_s + CLOCK_SKEW_S:
        return "signature expires too far in the future (more than %d s ahead)" % ttl_s
    expected = sign(secret, method, path, image_id, node_url, int(expires))
    if not hmac.compare_digest(expected, signature.lower()):
        return "bad signature"
    return None


def _malformed(node_url, expires, signature):
    if not node_url or len(node_url) > _MAX_NODE_URL or any(c in node_url for c in "\r\n\0"):
        return "malformed %s" % NODE_HEADER
    if not _EXPIRES.match(expires):
        return "malformed %s (epoch seconds expected)" % EXPIRES_HEADER
    if not _SIGNATURE.match(signature.lower()):
        return "malformed %s (64 hex digits expected)" % SIGNATURE_HEADER
    return None
