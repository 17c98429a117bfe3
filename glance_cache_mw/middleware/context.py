"""Who is asking: filters that put a RequestContext into ``environ['glance.context']``.

Three ways to authenticate, one per Paste flavor (etc/glance-cache-mw.ini):

* ``context`` (:class:`ContextMiddleware`) trusts the identity headers set by something in
  front of it — keystonemiddleware's auth_token in the ``keystone`` flavor, or an
  authenticating proxy in the ``context`` flavor: ``X-User-Id``, ``X-Project-Id``, ``X-Roles``
  (comma separated; ``admin`` makes the context admin), ``X-Auth-Token``. A request whose
  ``X-Identity-Status`` is not ``Confirmed`` (or missing) is answered 401, as Glance does when
  anonymous access is off. Only deploy it behind something that strips or sets these headers:
  a client that can reach it directly can claim any identity.
* ``noauth`` (:class:`NoAuthMiddleware`): a single-user local service. Every request gets an
  admin context. Roles and identity status are ignored; ``X-Project-Id`` and ``X-User-Id`` are
  honoured when given, only to record who owns what the caller creates (an admin sees every
  image either way). Never expose it beyond the local machine.
* ``authtoken`` (:func:`authtoken_filter_factory`): keystonemiddleware's auth_token, loaded when
  the ``keystone`` flavor is used; without keystonemiddleware installed that flavor fails at
  start-up with a message naming the missing extra.

Both context filters add ``x-openstack-request-id`` to the response, as Glance does.
"""

import logging
import uuid

import webob
import webob.exc

from glance_cache_mw import context as glance_context, exception
from glance_cache_mw.api import faults

LOG = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-openstack-request-id"


def _header(environ, name, *legacy):
    """The first non-empty value of a request header (``name`` or a legacy alias), or None."""
    for header in (name,) + legacy:
        value = environ.get("HTTP_" + header.upper().replace("-", "_"), "").strip()
        if value:
            return value
    return None


def parse_roles(value):
    """``"admin, member"`` → ``["admin", "member"]`` (empty items dropped)."""
    return [role.strip() for role in (value or "").split(",") if role.strip()]


def _request_id(environ):
    # Reuse an id set by an earlier filter (oslo.middleware request_id) so logs line up.
    return environ.get("openstack.request_id") or "req-%s" % uuid.uuid4()


class _ContextFilter:
    """Common part: build a context, store it in the environ, tag the response with its id."""

    def __init__(self, app):
        self.app = app

    def make_context(self, environ):
        """Return a RequestContext, or raise a webob HTTP error to refuse the request."""
        raise NotImplementedError

    def __call__(self, environ, start_response):
        try:
            ctx = self.make_context(environ)
        except webob.exc.HTTPException as err:
            return err(environ, start_response)
        environ[glance_context.ENVIRON_KEY] = ctx

        def start_with_request_id(status, headers, exc_info=None):
            if not any(name.lower() == REQUEST_ID_HEADER for name, _ in headers):
                headers = list(headers) + [(REQUEST_ID_HEADER, ctx.request_id)]
            return start_response(status, headers, exc_info)
        return self.app(environ, start_with_request_id)


class ContextMiddleware(_ContextFilter):
    """Trust the identity headers of an authenticating layer in front (``context`` filter)."""

    def make_context(self, environ):
        status = _header(environ, "X-Identity-Status")
        if status != "Confirmed":
            reason = ("X-Identity-Status is %r, not 'Confirmed'" % status if status
                      else "missing X-Identity-Status header (no authenticated identity)")
            LOG.debug("refusing %s %s: %s", environ.get("REQUEST_METHOD"),
                      environ.get("PATH_INFO"), reason)
            raise faults.error(401, "Authentication required: " + reason)
        return glance_context.RequestContext(
            user_id=_header(environ, "X-User-Id", "X-User"),
            project_id=_header(environ, "X-Project-Id", "X-Tenant-Id", "X-Tenant"),
            roles=parse_roles(_header(environ, "X-Roles")),
            auth_token=_header(environ, "X-Auth-Token"),
            request_id=_request_id(environ))


class NoAuthMiddleware(_ContextFilter):
    """Single-user local service: an admin context for everyone (``noauth`` filter)."""

    def make_context(self, environ):
        return glance_context.RequestContext.admin(
            user_id=_header(environ, "X-User-Id", "X-User"),
            project_id=_header(environ, "X-Project-Id", "X-Tenant-Id", "X-Tenant"),
            request_id=_request_id(environ))


def context_filter_factory(global_conf, **local_conf):
    """``[filter:context] use = egg:glance_cache_mw#context``."""
    return ContextMiddleware


def noauth_filter_factory(global_conf, **local_conf):
    """``[filter:noauth] use = egg:glance_cache_mw#noauth``."""
    LOG.info("noauth: every request is served as an admin (single-user local service)")
    return NoAuthMiddleware


def authtoken_filter_factory(global_conf, **local_conf):
    """keystonemiddleware.auth_token, or a clear error naming the extra that provides it.

    ``[filter:authtoken] paste.filter_factory =
    glance_cache_mw.middleware.context:authtoken_filter_factory``; the section's other options
    (``www_authenticate_uri``, ``auth_type``, ...) are auth_token's own.
    """
    try:
        from keystonemiddleware import auth_token
    except ImportError as err:
        raise exception.InvalidConfiguration(
            reason="the keystone flavor needs keystonemiddleware, which cannot be imported (%s): "
                   "pip install glance_cache_mw[keystone]" % err) from None
    return auth_token.filter_factory(global_conf, **local_conf)
