"""Issue 14: three real server processes on one database read each image from the origin once.

Each cluster (tests/functional/cluster.py) is three glance-cache-mw-api processes on
127.0.0.1 with the centralized_db driver on a database this test creates (PostgreSQL, and
MariaDB for the storm), one file store as their origin, and the same cluster_secret. Origin
reads are counted twice: by each node's /metrics and by the test filter in front of each
node's images app. Checked: 3 nodes x 16 concurrent cold downloads read the origin once and
give 48 identical bodies and one copy per node (on MariaDB with the nodes under gunicorn
too); SIGKILL of the node reading the origin
mid-fill costs the other nodes' clients nothing (they go on from a peer or the origin at the
offset reached) and leaves no partial or wrong file; a peer whose cached file was tampered
with (same size) gets nothing cached anywhere and the asking node's clients right bytes or a
cut connection; a tenant that may not see the image gets 404 on every node during and after
the cluster fill. Three nodes under uWSGI (docs/deployment.md's command line, 2 processes x 8
threads each) on PostgreSQL: a storm of 3 x 4 downloads reads the origin once; a uWSGI node
serves its growing fill (PEER-FILL) to both peers and its worker renews the claim meanwhile;
its peer endpoint refuses an unsigned request and answers a signed Range; SIGKILL of the
worker reading the origin (uWSGI respawns it) costs the other nodes' clients nothing.
Range GETs that are not hits, and a miss on a node with no room for the image, are read
from a node holding it (X-Image-Cache: PEER) with no origin read and no local copy, and from
the origin (BYPASS) when nobody holds it.
Also: the node that read the origin logs it ("filling from origin at byte 0"), no node keeps
anything of the image in incomplete/ or invalid/ after a storm or a SIGKILL and refill; a
node prefers a holder to the node filling the image, and spreads its fills over the holders;
every node refuses a request signed with another secret and one image's signature used for
another image's path; a claimant whose peer has another secret loses its claim to it and
both read the origin (docs/cluster.md, "Rotating the secret").
"""

import concurrent.futures
import os
import signal

import pytest
import sqlalchemy as sa

from glance_cache_mw.cluster import peer_path, signing
from glance_cache_mw.db import cache_api, fill_claims, models
from tests import dbfixtures
from tests.functional import cluster as cluster_mod
from tests.functional import server
from tests.functional.server import wait_for

pytestmark = pytest.mark.realservice

MIB = 1024 * 1024
PER_NODE = 16


def identity(project, roles="member"):
    """The headers an authenticating proxy sets (the context flavor)."""
    return {"X-Identity-Status": "Confirmed", "X-User-Id": "user-" + project,
            "X-Project-Id": project, "X-Roles": roles}


OWNER = identity("proj-owner")
OTHER = identity("proj-other")


@pytest.fixture(scope="module")
def pg_cluster(postgres, tmp_path_factory):
    """Three nodes on PostgreSQL, context flavor, bytes verified before the last one."""
    with cluster_mod.Cluster(tmp_path_factory.mktemp("cluster"), postgres.url, 3,
                             flavor="context",
                             image_cache_verify_before_last_byte="true") as cluster:
        yield cluster


def assert_storm(cluster, db, per_node=PER_NODE, size=4 * MIB + 123):
    """3 x ``per_node`` concurrent cold downloads of ``size`` bytes: 1 origin read, identical
    bodies, 3 copies, the other two nodes' bytes from peers."""
    data = os.urandom(size)
    image_id = cluster.upload(data, headers=OWNER)
    reads_before = cluster.origin_reads()
    ok_before = cluster.metric("peer_reads_total", outcome="ok")
    corrupt_before = cluster.metric("peer_reads_total", outcome="corrupt")
    peer_bytes_before = cluster.metric("peer_bytes_read_total")
    results = cluster.download_all(image_id, per_node, headers=OWNER)
    assert len(results) == 3 * per_node
    bad = [r for r in results if (r.status, r.ended) != (200, "complete") or r.body != data]
    assert not bad, bad
    assert cluster.origin_reads() - reads_before == 1, cluster.fill_log()
    assert [line for line in cluster.origin_log() if line.startswith(image_id)] == [
        image_id + " -"]
    # The node whose origin log has the read says so in its own log, from byte 0, once.
    reader = [node for node in range(3) if image_id + " -" in cluster.origin_log([node])]
    assert len(reader) == 1, cluster.fill_log()
    assert "image %s: filling from origin at byte 0" % image_id in (
        cluster.nodes[reader[0]].stderr()), cluster.fill_log()
    assert cluster.fill_sources(reader[0], image_id) == ["origin"], cluster.fill_log()
    for node in range(3):
        wait_for(lambda: cluster.cached_file(node, image_id) == data,
                 what="node %d to cache the image" % node)
        # Nothing partial or failed left behind for this image (the writers commit, then go).
        wait_for(lambda: cluster.leftovers(node, image_id) == [],
                 what="node %d's incomplete/ and invalid/ to hold nothing of the image"
                 % node)
    assert cache_api.get_cached_nodes(image_id, engine=db.engine) == sorted(cluster.urls)
    for node in set(range(3)) - set(reader):   # the others filled from peers only
        assert cluster.fill_sources(node, image_id), cluster.fill_log()
        assert "origin" not in cluster.fill_sources(node, image_id), cluster.fill_log()
    assert cluster.metric("peer_reads_total", outcome="ok") >= ok_before + 2
    assert cluster.metric("peer_reads_total", outcome="corrupt") == corrupt_before
    # The two nodes that did not read the origin filled every byte from peers.
    assert (cluster.metric("peer_bytes_read_total") - peer_bytes_before == 2 * len(data)), \
        cluster.fill_log()
    assert fill_claims.filler(image_id, engine=db.engine) is None   # released


def test_3_nodes_x_16_cold_downloads_read_the_origin_once_on_postgresql(pg_cluster, postgres):
    assert_storm(pg_cluster, postgres)


def test_the_same_on_mariadb_with_nodes_under_gunicorn(tmp_path):
    """Also fills in real OS threads, two worker processes per node (forked after the app
    loaded, each with its own database connections), as docs/deployment.md runs gunicorn."""
    db = dbfixtures.ScratchDatabase("mysql", tmp_path)
    try:
        with cluster_mod.Cluster(tmp_path / "cluster", db.url, 3, flavor="context",
                                 server="gunicorn") as cluster:
            assert_storm(cluster, db)
    finally:
        db.close()


def test_a_tenant_that_may_not_see_the_image_gets_404_on_every_node(pg_cluster, postgres):
    data = os.urandom(3 * MIB)
    image_id = pg_cluster.upload(data, headers=OWNER, visibility="private")

    def refused_everywhere():
        for node in range(3):
            result = pg_cluster.download(node, image_id, headers=OTHER)
            assert result.status == 404, result
            # Its credentials do not open the peer endpoint either.
            status, _, _ = pg_cluster.nodes[node].request(
                "GET", peer_path(image_id), headers=OTHER)
            assert status == 403

    # A slow origin (each 1 MiB chunk waits) keeps the cluster fill going while we ask.
    with pg_cluster.slow_origin(0.4), concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = _submit(pool, pg_cluster, [0], image_id, 2)
        _wait_for_claim(pg_cluster, postgres, image_id)
        refused_everywhere()
        peers = _submit(pool, pg_cluster, [1, 2], image_id, 2)
        wait_for(lambda: all(pg_cluster.incomplete_files(node) for node in (1, 2)),
                 what="nodes 1 and 2 to fill from node 0")
        refused_everywhere()
        results = [future.result() for future in first + peers]
    assert all(r.status == 200 and r.body == data for r in results), results
    for node in range(3):
        wait_for(lambda: pg_cluster.cached_file(node, image_id) == data,
                 what="node %d to cache the image" % node)
    refused_everywhere()


def test_bytes_of_a_tampered_peer_are_never_cached(pg_cluster, postgres):
    data = os.urandom(2 * MIB + 5)
    image_id = pg_cluster.upload(data, headers=OWNER)
    assert pg_cluster.download(0, image_id, OWNER).body == data
    wait_for(lambda: cache_api.get_cached_nodes(image_id, engine=postgres.engine)
             == [pg_cluster.urls[0]], what="node 0 to record its copy")
    path = os.path.join(pg_cluster.nodes[0].data_dir, "image-cache", image_id)
    with open(path, "r+b") as handle:   # same size, other bytes: a hit does not notice
        handle.seek(MIB)
        handle.write(bytes(255 - b for b in data[MIB:MIB + 4096]))
    corrupt_before = pg_cluster.metric("peer_reads_total", outcome="corrupt")

    results = pg_cluster.download_all(image_id, 4, nodes=[1], headers=OWNER)
    assert not [r for r in results if r.ended == "complete" and r.body != data], results
    assert [r for r in results if r.ended == "cut"], "verified before the last byte"
    wait_for(lambda: not pg_cluster.incomplete_files(1), what="node 1's fill to end")
    assert pg_cluster.cached_file(1, image_id) is None
    assert pg_cluster.metric("peer_reads_total", [1], outcome="corrupt") == 1 + corrupt_before
    log = pg_cluster.nodes[1].stderr()
    assert "bytes from peer %s failed verification" % pg_cluster.urls[0] in log

    # Node 1 now leaves node 0 out for this image: the origin, right bytes, cached.
    again = pg_cluster.download(1, image_id, OWNER)
    assert (again.status, again.ended, again.body == data) == (200, "complete", True)
    wait_for(lambda: pg_cluster.cached_file(1, image_id) == data, what="node 1 to cache")
    # Node 2 may pick either holder: right bytes or a cut, and never a wrong copy.
    third = pg_cluster.download(2, image_id, OWNER)
    assert third.body == data or third.ended == "cut", third
    wait_for(lambda: not pg_cluster.incomplete_files(2), what="node 2's fill to end")
    assert pg_cluster.cached_file(2, image_id) in (None, data)


def test_sigkill_of_the_node_reading_the_origin_costs_the_others_nothing(pg_cluster, postgres):
    data = os.urandom(6 * MIB)
    image_id = pg_cluster.upload(data, headers=OWNER)
    with pg_cluster.slow_origin(0.5), concurrent.futures.ThreadPoolExecutor(12) as pool:
        doomed = _submit(pool, pg_cluster, [0], image_id, 4)
        _wait_for_claim(pg_cluster, postgres, image_id)
        others = _submit(pool, pg_cluster, [1, 2], image_id, 4)
        wait_for(lambda: all(_filled(pg_cluster, node, image_id) > 0 for node in (1, 2)),
                 what="nodes 1 and 2 to fill from node 0")
        assert _filled(pg_cluster, 1, image_id) < len(data)
        pg_cluster.nodes[0].signal(signal.SIGKILL)
        pg_cluster.nodes[0].wait()
        results = [future.result() for future in others]
        lost = [future.result() for future in doomed]
    bad = [r for r in results if (r.status, r.ended) != (200, "complete") or r.body != data]
    assert not bad, bad
    assert all(r.ended in ("cut", "failed") for r in lost), lost
    # Exactly one survivor took the claim over and read the rest, from where it was.
    reads = [line for line in pg_cluster.origin_log([1, 2]) if line.startswith(image_id)]
    assert len(reads) == 1 and reads[0].startswith(image_id + " bytes="), reads
    assert int(reads[0].split("=")[1].rstrip("-")) > 0
    for node in (1, 2):
        wait_for(lambda: pg_cluster.cached_file(node, image_id) == data,
                 what="node %d to cache the image" % node)
        assert pg_cluster.incomplete_files(node) == []
    assert pg_cluster.cached_file(0, image_id) is None
    # Node 0 comes back: what it left in incomplete/ is never served; it fills from a peer.
    pg_cluster.nodes[0].start()
    again = pg_cluster.download(0, image_id, OWNER)
    assert (again.status, again.ended, again.body == data) == (200, "complete", True)
    wait_for(lambda: pg_cluster.cached_file(0, image_id) == data, what="node 0 to cache")
    _assert_nothing_partial_kept(pg_cluster, 0, image_id)
    assert [line for line in pg_cluster.origin_log([0]) if line.startswith(image_id)] == [
        image_id + " -"]   # its one read, before it was killed


def test_a_holder_is_preferred_to_the_node_filling_the_image(pg_cluster, postgres):
    """Node 0 holds the image and node 2 holds its fill claim (as if it were reading the
    origin): node 1's miss fills from node 0, and node 2's peer endpoint is not asked."""
    data = os.urandom(256 * 1024 + 1)
    image_id = _held_by_node_0(pg_cluster, postgres, data)
    assert fill_claims.claim(image_id, pg_cluster.urls[2], 60, engine=postgres.engine)
    try:
        asked_before = pg_cluster.peer_requests(2)
        result = pg_cluster.download(1, image_id, OWNER)
        assert (result.status, result.ended, result.body == data) == (200, "complete", True)
        assert pg_cluster.fill_sources(1, image_id) == [pg_cluster.urls[0]], \
            pg_cluster.fill_log()
        assert pg_cluster.peer_requests(2) == asked_before
        assert fill_claims.filler(image_id, engine=postgres.engine) == pg_cluster.urls[2]
    finally:
        fill_claims.release(image_id, pg_cluster.urls[2], engine=postgres.engine)
    wait_for(lambda: pg_cluster.cached_file(1, image_id) == data, what="node 1 to cache it")


def test_fills_spread_over_the_holders(pg_cluster, postgres):
    """Nodes 0 and 1 hold each of 16 small images; node 2's fills of them pick a holder at
    random: both are read from (all from one would happen once in 2**15 runs), the origin
    never."""
    images = [(pg_cluster.upload(data, headers=OWNER), data)
              for data in (os.urandom(16 * 1024 + i) for i in range(16))]
    for node in (0, 1):
        for image_id, data in images:
            assert pg_cluster.download(node, image_id, OWNER).body == data
    for image_id, _ in images:
        wait_for(lambda: cache_api.get_cached_nodes(image_id, engine=postgres.engine)
                 == sorted(pg_cluster.urls[:2]), what="nodes 0 and 1 to record their copies")
    reads_before = pg_cluster.origin_reads([2])
    for image_id, data in images:
        result = pg_cluster.download(2, image_id, OWNER)
        assert (result.status, result.ended, result.body == data) == (200, "complete", True)
    sources = [source for image_id, _ in images
               for source in pg_cluster.fill_sources(2, image_id)]
    assert len(sources) == len(images), pg_cluster.fill_log()
    assert set(sources) == set(pg_cluster.urls[:2]), sources
    assert pg_cluster.origin_reads([2]) == reads_before


def test_forged_peer_requests_are_403_on_every_node(pg_cluster, postgres):
    """Every node holds images A and B: a request signed with another secret, and A's valid
    signature sent with B's path, are refused by each node; B's own signature gets B."""
    images = []
    for size in (70 * 1024, 70 * 1024 + 1):
        data = os.urandom(size)
        image_id = pg_cluster.upload(data, headers=OWNER)
        for node in range(3):
            assert pg_cluster.download(node, image_id, OWNER).body == data
        images.append((image_id, data))
    (image_a, data_a), (image_b, data_b) = images
    for node in range(3):
        wait_for(lambda: all(pg_cluster.cached_file(node, i) == d for i, d in images),
                 what="node %d to cache both images" % node)
    asker = pg_cluster.urls[1]
    for node in range(3):
        target = pg_cluster.nodes[node]
        wrong = signing.signed_headers("not-the-cluster-secret-at-all", "GET",
                                       peer_path(image_a), image_a, asker, 30)
        status, _, body = target.request("GET", peer_path(image_a), headers=wrong)
        assert (status, b"bad signature" in body, data_a[:64] in body) == (403, True, False)
        for_a = signing.signed_headers(pg_cluster.secret, "GET", peer_path(image_a), image_a,
                                       asker, 30)
        status, _, body = target.request("GET", peer_path(image_b), headers=for_a)
        assert (status, b"bad signature" in body, data_b[:64] in body) == (403, True, False)
        for_b = signing.signed_headers(pg_cluster.secret, "GET", peer_path(image_b), image_b,
                                       asker, 30)
        status, headers, body = target.request("GET", peer_path(image_b), headers=for_b)
        assert (status, headers["x-image-cache"], body == data_b) == (200, "PEER-HIT", True)


def test_a_claimant_its_peer_cannot_talk_to_loses_its_claim(postgres, tmp_path):
    """docs/cluster.md, "Rotating the secret": node 1 has another cluster_secret (a rotation
    half done). Node 0 claims the fill and reads a slow origin; node 1's signed request is
    refused (403), so node 1 takes node 0 for failed, steals the claim and reads the origin
    too; node 0 finds its claim gone at its next renewal and finishes its read. Two origin
    reads, right bytes and a right copy on both nodes."""
    with cluster_mod.Cluster(tmp_path, postgres.url, 2, flavor="context",
                             cluster_fill_lease="3",   # renewed every second
                             node_settings={1: {"cluster_secret": "another-secret-" * 2}}
                             ) as cluster:
        data = os.urandom(8 * MIB + 1)   # 9 chunks of 0.5 s: node 0 renews after the steal
        image_id = cluster.upload(data, headers=OWNER)
        with cluster.slow_origin(0.5), concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = _submit(pool, cluster, [0], image_id, 1)
            _wait_for_claim(cluster, postgres, image_id)
            second = _submit(pool, cluster, [1], image_id, 1)
            results = [future.result() for future in first + second]
        assert [(r.status, r.ended, r.body == data) for r in results] == [
            (200, "complete", True)] * 2, results
        assert [line for line in cluster.origin_log() if line.startswith(image_id)] == [
            image_id + " -"] * 2
        assert cluster.metric("peer_requests_total", [0], outcome="refused") >= 1
        assert ("took over the fill claim of %s" % cluster.urls[0]
                in cluster.nodes[1].stderr()), cluster.fill_log()
        assert "image %s: lost its fill claim" % image_id in cluster.nodes[0].stderr()
        for node in (0, 1):
            wait_for(lambda: cluster.cached_file(node, image_id) == data,
                     what="node %d to cache the image" % node)


def _assert_nothing_partial_kept(cluster, node, image_id):
    """After node ``node`` lost a fill of ``image_id`` to a SIGKILL and filled it again: no
    incomplete/{id} and no hidden reservation name of the dead writer (the refill took both
    over and committed) and nothing in invalid/; what may remain, if the dead process followed
    a fill, is its empty follower mark, unlocked, so that the cleaner removes it
    (docs/cluster.md, "On the dead node")."""
    wait_for(lambda: not [name for name in cluster.leftovers(node, image_id)
                          if not name.startswith("incomplete/.")],
             what="node %d's incomplete/%s and invalid/ to be gone" % (node, image_id))
    for name in cluster.leftovers(node, image_id):
        assert name == "incomplete/.f.%s" % image_id, name
    cluster.clean(node)
    assert cluster.leftovers(node, image_id) == []


def _submit(pool, cluster, nodes, image_id, count):
    """``count`` downloads of ``image_id`` (as its owner) on each of ``nodes``, in ``pool``."""
    return [pool.submit(cluster.download, node, image_id, OWNER)
            for node in nodes for _ in range(count)]


def _wait_for_claim(cluster, db, image_id):
    wait_for(lambda: fill_claims.filler(image_id, engine=db.engine) == cluster.urls[0],
             what="node 0 to claim the fill")


def _filled(cluster, node, image_id):
    """Bytes in node ``node``'s incomplete/ file of ``image_id`` (0 when there is none)."""
    path = os.path.join(cluster.nodes[node].data_dir, "image-cache", "incomplete", image_id)
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


# -- nodes under uWSGI (docs/deployment.md's command line) -----------------------------------

@pytest.fixture(scope="module")
def uwsgi_cluster(postgres, tmp_path_factory):
    """Three nodes under uWSGI on PostgreSQL: 2 processes x 8 threads each, --lazy-apps (each
    worker builds the app, with its own claims, lease renewals and peer requests); a 3 s
    claim lease, renewed every second, so that a test sees a renewal."""
    with cluster_mod.Cluster(tmp_path_factory.mktemp("uwsgi-cluster"), postgres.url, 3,
                             flavor="context", server="uwsgi", cluster_fill_lease="3",
                             image_cache_verify_before_last_byte="true") as cluster:
        yield cluster


def test_3_uwsgi_nodes_x_4_cold_downloads_read_the_origin_once(uwsgi_cluster, postgres):
    assert_storm(uwsgi_cluster, postgres, per_node=4, size=16 * MIB + 7)


def test_a_uwsgi_node_serves_its_growing_fill_to_the_other_nodes(uwsgi_cluster, postgres):
    """The node reading a slowed origin serves PEER-FILL (its incomplete file, from whichever
    of its worker processes the peer request reaches) to both other nodes, and its worker's
    lease-renewal thread keeps the claim while it reads."""
    cluster = uwsgi_cluster
    data = os.urandom(6 * MIB + 9)
    image_id = cluster.upload(data, headers=OWNER)
    fills_before = cluster.metric("peer_requests_total", [0], outcome="fill")
    with cluster.slow_origin(0.5), concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = _submit(pool, cluster, [0], image_id, 2)
        _wait_for_claim(cluster, postgres, image_id)
        claimed_until = _lease_end(postgres, image_id)
        peers = _submit(pool, cluster, [1, 2], image_id, 2)
        wait_for(lambda: cluster.metric("peer_requests_total", [0], outcome="fill")
                 >= fills_before + 2, what="node 0 to serve its fill to nodes 1 and 2")
        wait_for(lambda: (_lease_end(postgres, image_id) or claimed_until) > claimed_until,
                 what="node 0 to renew its claim")
        assert cluster.cached_file(0, image_id) is None   # still growing
        assert fill_claims.filler(image_id, engine=postgres.engine) == cluster.urls[0]
        results = [future.result() for future in first + peers]
    bad = [r for r in results if (r.status, r.ended) != (200, "complete") or r.body != data]
    assert not bad, bad
    assert [line for line in cluster.origin_log() if line.startswith(image_id)] == [
        image_id + " -"]
    for node in range(3):
        wait_for(lambda: cluster.cached_file(node, image_id) == data,
                 what="node %d to cache the image" % node)
    for node in (1, 2):
        assert ("image %s: filling from peer %s at byte 0" % (image_id, cluster.urls[0])
                in cluster.nodes[node].stderr()), cluster.fill_log()
    assert "serving the fill of image %s to peer" % image_id in cluster.nodes[0].stderr()


def test_the_peer_endpoint_under_uwsgi(uwsgi_cluster, postgres):
    """Unsigned → 403; signed with a Range (a failover resuming at an offset) → 206 with
    exactly those bytes, although uWSGI's file_wrapper always sends a file from its start."""
    cluster = uwsgi_cluster
    data = os.urandom(2 * MIB + 3)
    image_id = cluster.upload(data, headers=OWNER)
    assert cluster.download(0, image_id, OWNER).body == data
    wait_for(lambda: cluster.cached_file(0, image_id) == data, what="node 0 to cache it")
    path = peer_path(image_id)
    status, _, body = cluster.nodes[0].request("GET", path)
    assert status == 403 and b"unsigned request" in body, body
    headers = signing.signed_headers(cluster.secret, "GET", path, image_id, cluster.urls[1],
                                     30)
    status, got, body = cluster.nodes[0].request(
        "GET", path, headers={**headers, "Range": "bytes=%d-" % MIB})
    assert (status, got["x-image-cache"]) == (206, "PEER-HIT")
    assert body == data[MIB:]


def test_sigkill_of_the_uwsgi_worker_reading_the_origin(uwsgi_cluster, postgres):
    """Node 0's worker that reads the origin dies (the OOM killer, a harakiri), not the node:
    uWSGI's master respawns it. The other nodes go on from the offset they reached (one of
    them takes the claim over), their clients get every byte; node 0 keeps nothing partial as
    cached and, asked again, fills from a peer. Last of the uWSGI tests: node 0 has a
    respawned worker afterwards."""
    cluster = uwsgi_cluster
    data = os.urandom(6 * MIB)
    image_id = cluster.upload(data, headers=OWNER)
    with cluster.slow_origin(0.5), concurrent.futures.ThreadPoolExecutor(6) as pool:
        doomed = _submit(pool, cluster, [0], image_id, 1)[0]   # served by the filler
        _wait_for_claim(cluster, postgres, image_id)
        others = _submit(pool, cluster, [1, 2], image_id, 2)
        wait_for(lambda: all(_filled(cluster, node, image_id) > 0 for node in (1, 2)),
                 what="nodes 1 and 2 to fill from node 0")
        writer = cluster.fill_writer(0, image_id)
        assert writer not in (None, cluster.nodes[0].process.pid)   # a worker
        assert cluster.cached_file(0, image_id) is None
        os.kill(writer, signal.SIGKILL)
        results = [future.result() for future in others]
        lost = doomed.result()
    bad = [r for r in results if (r.status, r.ended) != (200, "complete") or r.body != data]
    assert not bad, (bad, cluster.fill_log())
    assert lost.ended in ("cut", "failed"), lost
    reads = [line for line in cluster.origin_log([1, 2]) if line.startswith(image_id)]
    assert len(reads) == 1 and reads[0].startswith(image_id + " bytes="), reads
    for node in (1, 2):
        wait_for(lambda: cluster.cached_file(node, image_id) == data,
                 what="node %d to cache the image" % node)
        assert cluster.incomplete_files(node) == []
    assert cluster.cached_file(0, image_id) is None
    wait_for(lambda: cluster.nodes[0].stderr().count(server.UWSGI_APP_READY) == 3,
             what="node 0's respawned worker to load the app")
    again = cluster.download(0, image_id, OWNER)
    assert (again.status, again.ended, again.body == data) == (200, "complete", True)
    wait_for(lambda: cluster.cached_file(0, image_id) == data, what="node 0 to cache it")
    assert cluster.incomplete_files(0) == []
    _assert_nothing_partial_kept(cluster, 0, image_id)
    assert [line for line in cluster.origin_log([0]) if line.startswith(image_id)] == [
        image_id + " -"]   # its one read, before its worker was killed


def _lease_end(db, image_id):
    """The lease end of the fill claim on ``image_id`` (None without one)."""
    with db.engine.connect() as conn:
        return conn.execute(sa.select(models.fills.c.lease_expires_at)
                            .where(models.fills.c.image_id == image_id)).scalar()


RANGES = ["bytes=0-0", "bytes=100-65636", "bytes=1048576-", "bytes=-1000",
          "bytes=5-99999999"]   # the last ends beyond the image: up to its end


def _range_get(cluster, node, image_id, range_header, headers=OWNER):
    """(status, lower-cased headers, body) of a Range GET of the image on node ``node``."""
    return cluster.nodes[node].request("GET", "/v2/images/%s/file" % image_id,
                                       headers={**headers, "Range": range_header})


def _held_by_node_0(cluster, db, data, **upload):
    image_id = cluster.upload(data, headers=OWNER, **upload)
    assert cluster.download(0, image_id, OWNER).body == data
    wait_for(lambda: cache_api.get_cached_nodes(image_id, engine=db.engine)
             == [cluster.urls[0]], what="node 0 to record its copy")
    return image_id


def test_ranges_on_another_node_are_read_from_the_holder_not_the_origin(pg_cluster, postgres):
    data = os.urandom(MIB + 77)
    image_id = _held_by_node_0(pg_cluster, postgres, data)
    reads_before = pg_cluster.origin_reads()
    peer_bytes_before = pg_cluster.metric("peer_bytes_read_total", [1])
    expected_bytes = 0
    for range_header in RANGES:
        status, headers, body = _range_get(pg_cluster, 1, image_id, range_header)
        hit = _range_get(pg_cluster, 0, image_id, range_header)
        assert (status, headers["x-image-cache"]) == (206, "PEER"), (range_header, body)
        assert (hit[0], hit[1]["x-image-cache"], hit[2]) == (206, "HIT", body)
        first, last = (int(n) for n in headers["content-range"][6:].split("/")[0].split("-"))
        assert body == data[first:last + 1] and len(body) == int(headers["content-length"])
        for name in ("content-range", "content-length", "content-md5", "etag",
                     "accept-ranges", "content-type"):
            assert headers.get(name) == hit[1].get(name), (range_header, name)
        expected_bytes += len(body)
    # Unsatisfiable: the hit's 416, from the record's size, nothing read.
    status, headers, body = _range_get(pg_cluster, 1, image_id, "bytes=%d-" % len(data))
    hit = _range_get(pg_cluster, 0, image_id, "bytes=%d-" % len(data))
    assert (status, headers["content-range"], body) == (416, "bytes */%d" % len(data), hit[2])
    assert hit[0] == 416
    assert pg_cluster.origin_reads() == reads_before, pg_cluster.fill_log()
    assert [line for line in pg_cluster.origin_log() if line.startswith(image_id)] == [
        image_id + " -"]
    assert pg_cluster.metric("peer_bytes_read_total", [1]) == peer_bytes_before + expected_bytes
    assert pg_cluster.cached_file(1, image_id) is None   # a range fills nothing
    assert image_id not in pg_cluster.incomplete_files(1)


def test_a_range_nobody_holds_is_read_from_the_origin_as_before(pg_cluster):
    data = os.urandom(300 * 1024)
    image_id = pg_cluster.upload(data, headers=OWNER)
    status, headers, body = _range_get(pg_cluster, 1, image_id, "bytes=10-19")
    assert (status, headers["x-image-cache"], body) == (206, "BYPASS", data[10:20])
    assert [line for line in pg_cluster.origin_log([1]) if line.startswith(image_id)] == [
        image_id + " bytes=10-19"]


def test_a_range_of_an_image_a_tenant_may_not_see_is_404_before_any_peer(pg_cluster,
                                                                          postgres):
    data = os.urandom(200 * 1024)
    image_id = _held_by_node_0(pg_cluster, postgres, data, visibility="private")
    served_before = pg_cluster.metric("peer_bytes_served_total", [0])
    for node in (1, 2):
        status, headers, _ = _range_get(pg_cluster, node, image_id, "bytes=0-99", OTHER)
        assert (status, headers["x-image-cache"]) == (404, "BYPASS")
    assert pg_cluster.metric("peer_bytes_served_total", [0]) == served_before
    status, headers, body = _range_get(pg_cluster, 2, image_id, "bytes=0-99")
    assert (status, headers["x-image-cache"], body) == (206, "PEER", data[:100])


def test_a_node_with_no_room_for_the_image_reads_it_from_a_holder(postgres, tmp_path):
    """Node 1 may cache 1 MiB: a 2 MiB image is not admitted there. Its miss is read from
    node 0 (PEER), verified on the way, cached nowhere new; once node 0's copy is found
    wrong (tampered), node 1's client gets a cut connection, never wrong bytes, and node 1
    goes to the origin after that (BYPASS)."""
    with cluster_mod.Cluster(tmp_path, postgres.url, 2, flavor="context",
                             image_cache_verify_before_last_byte="true",
                             node_settings={1: {"image_cache_max_size": str(MIB)}}) as cluster:
        data = os.urandom(2 * MIB + 3)
        image_id = _held_by_node_0(cluster, postgres, data)
        reads_before = cluster.origin_reads()
        result = cluster.download(1, image_id, OWNER)
        assert (result.status, result.cache, result.ended) == (200, "PEER", "complete")
        assert result.body == data
        assert cluster.origin_reads() == reads_before
        assert cluster.cached_file(1, image_id) is None and cluster.incomplete_files(1) == []

        path = os.path.join(cluster.nodes[0].data_dir, "image-cache", image_id)
        with open(path, "r+b") as handle:   # same size, other bytes: a hit does not notice
            handle.seek(MIB)
            handle.write(bytes(255 - b for b in data[MIB:MIB + 4096]))
        cut = cluster.download(1, image_id, OWNER)
        assert (cut.status, cut.cache, cut.ended) == (200, "PEER", "cut"), cut
        assert len(cut.body) < len(data)   # the last bytes waited for the verdict
        assert cluster.metric("peer_reads_total", [1], outcome="corrupt") == 1
        again = cluster.download(1, image_id, OWNER)
        assert (again.status, again.cache, again.ended) == (200, "BYPASS", "complete")
        assert again.body == data
