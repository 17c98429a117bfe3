"""The /metrics filter (middleware/metrics.py): the text format for allowed clients, a reason
for the others, other paths and methods, and a bad allowed list named by key and value."""

import pytest
import webob

from glance_cache_mw import exception
from glance_cache_mw.middleware import metrics as metrics_filter
from tests.unit.test_metrics import metrics  # noqa: F401  (fixture)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


def scrape(metrics, remote_addr, allowed="127.0.0.0/8, ::1", method="GET", path="/metrics"):
    filt = metrics_filter.MetricsFilter(
        app, metrics, metrics_filter.parse_networks("metrics_allowed_clients", allowed))
    return webob.Request.blank(path, method=method, remote_addr=remote_addr).get_response(filt)


def test_filter_serves_the_text_format_to_loopback(metrics):
    metrics.download("MISS", "2xx", 7)
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        response = scrape(metrics, address)
        assert response.status_int == 200
        assert response.content_type == "text/plain"
        assert b'glance_cache_mw_downloads_total{cache="MISS",code="2xx"} 1.0' in response.body


@pytest.mark.parametrize("address, allowed", [
    ("192.0.2.1", "127.0.0.0/8, ::1"),
    ("127.0.0.1", "10.0.0.0/8"),
    ("", "127.0.0.0/8"),
    ("not-an-address", "127.0.0.0/8"),
])
def test_filter_refuses_other_clients_with_a_reason(metrics, address, allowed):
    response = scrape(metrics, address, allowed)
    assert response.status_int == 403
    assert b"metrics_allowed_clients" in response.body
    assert b"glance_cache_mw_" not in response.body


def test_filter_passes_other_paths_and_refuses_other_methods(metrics):
    assert scrape(metrics, "127.0.0.1", path="/metrics/x").body == b"app"
    response = scrape(metrics, "127.0.0.1", method="POST")
    assert response.status_int == 405 and response.allow == ("GET", "HEAD")


def test_a_bad_allowed_list_names_the_key_and_the_value():
    with pytest.raises(exception.InvalidConfiguration,
                       match="metrics_allowed_clients=.*'10.0.0.300' is not an IP"):
        metrics_filter.parse_networks("metrics_allowed_clients", "127.0.0.1, 10.0.0.300")
