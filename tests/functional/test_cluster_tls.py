"""Issue 14 over TLS: cluster nodes that serve https fill from each other over verified TLS.

Four real nodes (tests/functional/cluster.py) on a PostgreSQL database this test creates, each
serving https with a certificate for 127.0.0.1 signed by a CA made at test time
(tests/tlsfixtures.py): glance-cache-mw-api with cert_file/key_file, or gunicorn with
--certfile/--keyfile. worker_self_reference_url is https://127.0.0.1:PORT and cluster_ca_file
the CA on nodes 0-2; node 3 has another CA in cluster_ca_file, so it trusts none of its peers.
Checked: cold downloads on nodes 0-2 read the origin once, the other two nodes fill from a peer
over TLS, every body is identical; then node 3 reads from no peer (each refused for its
certificate, logged with the peer's URL and the certificate error), reads the origin itself
(reason="fallback") and still gives its client the right bytes.
"""

import os

import pytest

from tests import tlsfixtures
from tests.functional import cluster as cluster_mod
from tests.functional.server import wait_for

pytestmark = pytest.mark.realservice

MIB = 1024 * 1024
PER_NODE = 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(the cluster's TLS files, the CA file of another CA)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = tlsfixtures.CertificateAuthority(directory / "ca")
    other = tlsfixtures.CertificateAuthority(directory / "other", name="another CA")
    cert_file, key_file = ca.issue("node", hosts=("127.0.0.1",))
    return cluster_mod.TLS(cert_file, key_file, ca.ca_file), other.ca_file


@pytest.mark.parametrize("server", ["eventlet", "gunicorn"])
def test_nodes_fill_from_each_other_over_tls_and_an_untrusting_node_reads_the_origin(
        server, postgres, pki, tmp_path):
    tls, other_ca = pki
    data = os.urandom(8 * MIB + 5)
    with cluster_mod.Cluster(tmp_path / "cluster", postgres.url, 4, tls=tls, server=server,
                             node_settings={3: {"cluster_ca_file": other_ca}},
                             image_cache_verify_before_last_byte="true") as cluster:
        assert all(url.startswith("https://127.0.0.1:") for url in cluster.urls)
        image_id = cluster.upload(data)
        results = cluster.download_all(image_id, PER_NODE, nodes=[0, 1, 2])
        bad = [r for r in results if (r.status, r.ended) != (200, "complete") or r.body != data]
        assert not bad, bad
        assert cluster.origin_reads() == 1, cluster.fill_log()
        assert [line for line in cluster.origin_log() if line.startswith(image_id)] == [
            image_id + " -"]
        assert cluster.metric("peer_bytes_read_total") == 2 * len(data), cluster.fill_log()
        assert cluster.metric("peer_reads_total", outcome="ok") == 2
        for node in range(3):
            wait_for(lambda: cluster.cached_file(node, image_id) == data,
                     what="node %d to cache the image" % node)

        # Node 3 trusts another CA: it reads nothing from its peers, the origin instead.
        alone = cluster.download(3, image_id)
        assert (alone.status, alone.ended, alone.body == data) == (200, "complete", True)
        assert cluster.metric("origin_reads_total", [3], reason="fallback") == 1
        assert cluster.metric("peer_bytes_read_total", [3]) == 0
        assert cluster.metric("peer_reads_total", [3], outcome="failed") == 3
        wait_for(lambda: cluster.cached_file(3, image_id) == data, what="node 3 to cache")
        log = cluster.nodes[3].stderr()
        for url in cluster.urls[:3]:
            assert [line for line in log.splitlines()
                    if "peer %s" % url in line and "CERTIFICATE_VERIFY_FAILED" in line], (
                url, log)
        if server == "eventlet":   # the peers log the refused handshakes, and go on serving
            assert "TLSV1_ALERT_UNKNOWN_CA" in cluster.nodes[0].stderr()
    assert len(cluster.origin_log()) == 2
