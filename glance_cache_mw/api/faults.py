"""Error responses in Glance's format, for every layer (images app, cache filters, server).

Glance raises ``webob.exc`` errors and lets WebOb render them by the request's Accept header:
HTML for ``*/*`` (what python-glanceclient sends: it prints ``HTTP 404 Not Found: <message>``
from the title and text), JSON ``{"message", "code", "title"}`` when JSON is preferred, plain
text otherwise. :func:`error` builds the same WebOb errors, with two differences: the JSON
message is the message alone (WebOb's carries the HTML template's ``<br /><br />`` and
newlines), and a message is never more than text (a lone surrogate cannot break the rendering).
"""

import webob.exc

# WebOb's default body, for the statuses whose own template ignores the explanation (405).
_BODY_TEMPLATE = webob.exc.WSGIHTTPException.body_template_obj.template


def error(status, message, headers=None):
    """A WebOb HTTP error (a WSGI app and a Response) for ``status`` saying ``message``."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    exc_class = webob.exc.status_map.get(status, webob.exc.HTTPInternalServerError)
    kwargs = {}
    if exc_class.body_template_obj is not webob.exc.WSGIHTTPException.body_template_obj:
        kwargs["body_template"] = _BODY_TEMPLATE
    return exc_class(explanation=message, headers=list((headers or {}).items()),
                     json_formatter=_json_formatter(message), **kwargs)


def _json_formatter(message):
    def formatter(body, status, title, environ):
        return {"message": message, "code": status, "title": title}
    return formatter
