"""Signed peer requests (cluster/signing.py), and the cluster settings and cluster.is_enabled
(cluster/__init__.py) that go with them."""

import pytest

from glance_cache_mw import cluster, config, exception
from glance_cache_mw.cluster import signing

SECRET = "s3cret-of-the-cluster"
IMAGE_ID = "0b6f3b57-9b0f-4f27-8d7d-3b2a1f4e9c10"
PATH = cluster.peer_path(IMAGE_ID)
NODE = "http://node-b:9292"
TTL_S = 30
NOW = 1_800_000_000


def _headers(secret=SECRET, method="GET", path=PATH, image_id=IMAGE_ID, now=NOW):
    return signing.signed_headers(secret, method, path, image_id, NODE, TTL_S, now=now)


def _verify(headers, secret=SECRET, method="GET", path=PATH, image_id=IMAGE_ID, now=NOW):
    return signing.verify(secret, method, path, image_id, headers, TTL_S, now=now)


def test_a_good_signature_passes():
    assert _verify(_headers()) is None
    assert _verify(_headers(), now=NOW + TTL_S) is None   # still good at its last second


def test_signature_is_hmac_over_the_documented_fields():
    expires = NOW + TTL_S
    headers = _headers()
    assert headers == {
        signing.NODE_HEADER: NODE,
        signing.EXPIRES_HEADER: str(expires),
        signing.SIGNATURE_HEADER: signing.sign(SECRET, "GET", PATH, IMAGE_ID, NODE, expires),
    }
    assert len(headers[signing.SIGNATURE_HEADER]) == 64


@pytest.mark.parametrize("field, value", [
    ("method", "HEAD"),
    ("path", cluster.peer_path("00000000-0000-0000-0000-000000000000")),
    ("image_id", "00000000-0000-0000-0000-000000000000"),
])
def test_a_request_other_than_the_signed_one_is_rejected(field, value):
    """A signature for GET of one image does not open HEAD, another path or another image."""
    assert _verify(_headers(), **{field: value}) == "bad signature"


@pytest.mark.parametrize("header, value", [
    (signing.NODE_HEADER, "http://node-c:9292"),
    (signing.EXPIRES_HEADER, str(NOW + TTL_S - 1)),
    (signing.SIGNATURE_HEADER, "0" * 64),
])
def test_each_tampered_header_is_rejected(header, value):
    headers = {**_headers(), header: value}
    assert _verify(headers) == "bad signature"


def test_a_signature_made_with_another_secret_is_rejected():
    assert _verify(_headers(secret="another-secret-of-16")) == "bad signature"


def test_an_expired_signature_is_rejected():
    assert _verify(_headers(), now=NOW + TTL_S + 1) == "signature expired"


def test_a_signature_too_far_in_the_future_is_rejected():
    """A node whose clock runs ahead, or an attacker minting long-lived requests."""
    later = NOW + TTL_S + signing.CLOCK_SKEW_S + 1
    reason = _verify(_headers(now=later))
    assert reason.startswith("signature expires too far in the future")
    assert _verify(_headers(now=NOW + signing.CLOCK_SKEW_S)) is None   # within the skew


@pytest.mark.parametrize("header", [
    signing.NODE_HEADER, signing.EXPIRES_HEADER, signing.SIGNATURE_HEADER])
def test_a_missing_header_means_unsigned(header):
    headers = _headers()
    del headers[header]
    assert _verify(headers).startswith("unsigned request")
    assert _verify({}).startswith("unsigned request")


@pytest.mark.parametrize("header, value", [
    (signing.EXPIRES_HEADER, "soon"),
    (signing.EXPIRES_HEADER, "-5"),
    (signing.EXPIRES_HEADER, "9" * 40),
    (signing.SIGNATURE_HEADER, "xyz"),
    (signing.SIGNATURE_HEADER, "g" * 64),
    (signing.SIGNATURE_HEADER, "0" * 65),
    (signing.NODE_HEADER, ""),
    (signing.NODE_HEADER, "http://x/" + "a" * 300),
    (signing.NODE_HEADER, "http://a\nb"),
])
def test_malformed_headers_are_rejected_by_name(header, value):
    reason = _verify({**_headers(), header: value})
    assert reason.startswith("malformed %s" % header)


def test_no_secret_means_cluster_mode_off():
    assert _verify(_headers(), secret=None).startswith("cluster mode is off")
    with pytest.raises(ValueError):
        signing.sign("", "GET", PATH, IMAGE_ID, NODE, NOW)


def test_cluster_settings_defaults():
    conf = config.Config.from_mapping({})
    assert conf.cluster_secret is None
    assert (conf.cluster_fill_lease, conf.cluster_peer_timeout, conf.cluster_signature_ttl) \
        == (10, 30, 30)
    assert conf.cluster_ca_file is None
    assert not cluster.is_enabled(conf)


def test_a_short_secret_is_a_config_error_naming_the_key_not_the_value():
    short = "only-15-chars.."
    with pytest.raises(exception.InvalidConfiguration) as caught:
        config.Config.from_mapping({"cluster_secret": short})
    message = str(caught.value)
    assert "cluster_secret" in message and "16" in message
    assert short not in message


def test_cluster_mode_needs_the_secret_and_the_centralized_db_driver():
    with_secret = {"cluster_secret": SECRET, "worker_self_reference_url": NODE}
    assert cluster.is_enabled(config.Config.from_mapping(
        {**with_secret, "image_cache_driver": "centralized_db"}))
    assert not cluster.is_enabled(config.Config.from_mapping(
        {**with_secret, "image_cache_driver": "sqlite"}))
    assert not cluster.is_enabled(config.Config.from_mapping(
        {"image_cache_driver": "centralized_db", "worker_self_reference_url": NODE}))


@pytest.mark.parametrize("key", ["cluster_fill_lease", "cluster_peer_timeout",
                                 "cluster_signature_ttl"])
def test_cluster_durations_must_be_positive(key):
    with pytest.raises(exception.InvalidConfiguration, match="%s='0' must be at least 1" % key):
        config.Config.from_mapping({key: "0"})
