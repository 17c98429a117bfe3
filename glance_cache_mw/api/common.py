"""Request and response plumbing shared by the images API controllers.

Errors are Glance's (WebOb's) error bodies, HTML, JSON or text by the request's Accept header
(``api/faults.py``). Client mistakes raise ``HTTPError`` (or a Glance exception, mapped by
``error_for_exception``); only a bug becomes a 500, and then without a traceback in the body.
"""

import json
import logging

import webob

from glance_cache_mw import exception
from glance_cache_mw.api import faults
from glance_cache_mw.context import ENVIRON_KEY, RequestContext

LOG = logging.getLogger(__name__)

MAX_JSON_BODY = 1024 * 1024
# Glance's bodies are a few levels deep (a JSON patch: list → operation → value → tags); the
# limit keeps every recursive walk over a body (ours, json.dumps, the DB drivers) far from
# Python's recursion limit, which json.loads alone hits at about 1000 levels (RecursionError).
MAX_JSON_DEPTH = 32


class HTTPError(Exception):
    """A response with an error status; raise it anywhere below a controller."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self):
        return faults.error(self.status, self.message, self.headers)


def error_response(status, message):
    """The error in Glance's format (``api/faults.py``: HTML, JSON or text by Accept)."""
    return faults.error(status, message)


def json_response(body, status=200, headers=None):
    resp = webob.Response(status=status, content_type="application/json", charset="UTF-8")
    resp.body = json.dumps(body).encode("utf-8")
    if headers:
        resp.headers.update(headers)
    return resp


def empty_response(status=204):
    resp = webob.Response(status=status)
    # PEP 3333 / RFC 9110: a 204 has no body and no Content-Type.
    del resp.content_type
    resp.content_length = None if status == 204 else 0
    return resp


def error_for_exception(err):
    """The HTTPError for a Glance exception raised while serving a request."""
    if isinstance(err, HTTPError):
        return err
    if isinstance(err, exception.NotFound):
        return HTTPError(404, str(err))
    if isinstance(err, exception.Forbidden):
        return HTTPError(403, str(err))
    if isinstance(err, (exception.Duplicate, exception.Conflict)):
        return HTTPError(409, str(err))
    if isinstance(err, exception.LimitExceeded):
        return HTTPError(413, str(err))
    if isinstance(err, exception.Invalid):
        return HTTPError(400, str(err))
    return None


def media_type(req):
    """The request's Content-Type without parameters, lower-cased ('' when absent)."""
    return (req.content_type or "").split(";")[0].strip().lower()


def require_media_type(req, *allowed):
    if media_type(req) not in allowed:
        raise HTTPError(415, "Unsupported Content-Type %r; use %s."
                        % (req.content_type or "", " or ".join(allowed)))


def read_json(req, expect=dict):
    """The JSON body of ``req``, which must decode to ``expect``; 400/413/415 otherwise."""
    if media_type(req) not in ("application/json", ""):
        raise HTTPError(415, "Unsupported Content-Type %r; use application/json."
                        % req.content_type)
    return parse_json(req, expect)


def parse_json(req, expect):
    length = req.content_length
    if length is not None and length > MAX_JSON_BODY:
        raise HTTPError(413, "The request body is larger than %d bytes." % MAX_JSON_BODY)
    raw = body_stream(req).read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise HTTPError(413, "The request body is larger than %d bytes." % MAX_JSON_BODY)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "The request body is not valid JSON.") from None
    except RecursionError:
        raise HTTPError(400, "The request body is nested more than %d levels deep."
                        % MAX_JSON_DEPTH) from None
    check_json_document(body)
    if not isinstance(body, expect):
        kind = "an object" if expect is dict else "a list"
        raise HTTPError(400, "The request body must be %s." % kind)
    return body


def check_json_document(document):
    """400 for a parsed JSON body nested too deeply or with a lone surrogate in a string.

    JSON's ``\\ud800`` escapes decode to lone surrogates, which are not Unicode text: no
    database stores them (RFC 8259 section 8.2, RFC 7493 section 2.1). Walks the document
    without recursion; the message names where the bad string is.
    """
    pending = [(document, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise HTTPError(400, "The request body is nested more than %d levels deep."
                            % MAX_JSON_DEPTH)
        if isinstance(value, str):
            _check_text(value, "string", where)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, "key", where)
                pending.append((item, "%s/%s" % (where, key), depth + 1))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                pending.append((item, "%s/%d" % (where, index), depth + 1))


def _check_text(text, what, where):
    if has_lone_surrogate(text):
        raise HTTPError(400, "The request body has a lone surrogate (not valid Unicode) in the "
                             "%s %s%s." % (what, _short(text),
                                           " at " + _short(where)[1:-1] if where else ""))


def has_lone_surrogate(text):
    """True when ``text`` has a code point in U+D800..U+DFFF (not encodable as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _short(value):
    text = ascii(value)
    return text if len(text) <= 64 else text[:61] + "..."


def body_stream(req):
    """A file to read the request body from, chunked transfer encoding included.

    WebOb only trusts a body without Content-Length when the server sets
    ``wsgi.input_terminated``; eventlet.wsgi decodes chunked input without saying so.
    """
    if req.content_length is not None:
        return req.body_file
    if "chunked" in req.headers.get("Transfer-Encoding", "").lower():
        return req.environ["wsgi.input"]
    return req.body_file


def get_context(req, admin_without_context=False):
    """The RequestContext the context middleware stored; 401 without one (unless allowed)."""
    context = req.environ.get(ENVIRON_KEY)
    if context is not None:
        return context
    if admin_without_context:
        context = RequestContext.admin()
        req.environ[ENVIRON_KEY] = context
        return context
    raise HTTPError(401, "This server could not verify that you are authorized to access the "
                         "resource: no request context.")


def require_writable(context):
    if getattr(context, "read_only", False):
        raise HTTPError(403, "This request context is read-only.")


def load_image(db_api, context, image_id, with_tags=True):
    """The image ``context`` may see, with its live tags; 404 when missing, deleted or hidden."""
    try:
        image = db_api.image_get(context, image_id)
    except (exception.NotFound, exception.Forbidden):
        raise HTTPError(404, "No image found with ID %s" % image_id) from None
    if image["deleted"] or image["status"] == "deleted":
        raise HTTPError(404, "No image found with ID %s" % image_id)
    if with_tags:
        image["tags"] = db_api.image_tag_get_all(context, image_id)
    return image


def require_mutable(db_api, context, image):
    """403 unless ``context`` may change ``image`` (its owner, or an admin)."""
    require_writable(context)
    if not db_api.is_image_mutable(context, image):
        raise HTTPError(403, "You are not permitted to modify image %s." % image["id"])
