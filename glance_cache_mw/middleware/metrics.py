"""``metrics`` filter: answer ``GET|HEAD /metrics`` in Prometheus' text format, pass the rest.

It sits in front of authentication (after healthcheck) so that Prometheus scrapes without
credentials, and answers only clients whose address is in ``metrics_allowed_clients``
(default: loopback only); others get 403 with a reason. The body holds this server's counters
and histograms (every worker's, see glance_cache_mw.metrics_dir) and the cache gauges computed
now; no image ids, names or owners.

    [filter:metrics]
    use = egg:glance_cache_mw#metrics
    # path = /metrics
"""

import ipaddress
import logging

import webob

from glance_cache_mw import config as cfg, exception, metrics as metrics_mod
from glance_cache_mw.middleware import glance_compat

LOG = logging.getLogger(__name__)

DEFAULT_PATH = "/metrics"


def parse_networks(key, text):
    """The networks of a comma-separated list of addresses/CIDRs; errors name the key."""
    networks = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise exception.InvalidConfiguration(
                reason="%s=%r: %r is not an IP address or network" % (key, text, item)) from None
    return tuple(networks)


def is_allowed(address, networks):
    """True if ``address`` (REMOTE_ADDR) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


class MetricsFilter:
    """WSGI filter that owns ``path`` and forwards all other requests to ``app``."""

    def __init__(self, app, metrics, allowed, collectors=(), path=DEFAULT_PATH):
        """``metrics``: a Metrics; ``allowed``: ip networks; ``collectors``: scraped too."""
        self.app = app
        self.metrics = metrics
        self.allowed = tuple(allowed)
        self.collectors = tuple(collectors)
        self.path = path

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "") != self.path:
            return self.app(environ, start_response)
        response = self._answer(environ)
        response.cache_control = "no-store"
        return response(environ, start_response)

    def _answer(self, environ):
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            response = _text(405, "Method Not Allowed")
            response.allow = ("GET", "HEAD")
            return response
        client = environ.get("REMOTE_ADDR")
        if not is_allowed(client, self.allowed):
            LOG.info("refused /metrics to %s (not in metrics_allowed_clients)", client)
            return _text(403, "403 Forbidden\n\n/metrics is not served to %s: it is not in "
                              "metrics_allowed_clients." % client)
        content_type, body = self.metrics.exposition(self.collectors)
        response = webob.Response(status=200, body=body)
        response.headers["Content-Type"] = content_type
        return response


def _text(status, text):
    return webob.Response(status=status, content_type="text/plain", charset="utf-8",
                          body=text.encode("utf-8"))


def filter_factory(global_conf, **local_conf):
    """Paste filter factory: ``[filter:metrics] use = egg:glance_cache_mw#metrics``."""
    # Inside Glance, unset keys come from the glance-api.conf it loaded, as for the cache.
    config = cfg.Config.from_mapping(glance_compat.merged_settings({**global_conf, **local_conf}))
    allowed = parse_networks("metrics_allowed_clients", config.metrics_allowed_clients)
    path = local_conf.get("path") or DEFAULT_PATH

    def make_filter(app):
        cache = glance_compat.shared_cache(config)   # the pipeline's cache, for its gauges
        return MetricsFilter(app, metrics_mod.shared(), allowed,
                             (metrics_mod.CacheCollector(cache),), path)
    return make_filter
