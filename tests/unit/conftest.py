"""Fixtures shared by unit tests: ``peers``, stand-ins of peer nodes (tests/unit/peer_stub.py).

    def test_failover(peers):
        good, silent = peers(), peers("silent")   # real HTTP servers on 127.0.0.1, closed after
"""

import pytest

from tests.unit.peer_stub import Peer


@pytest.fixture
def peers():
    """start(mode="serve") -> a started Peer in ``mode``; every one is closed after the test."""
    started = []

    def start(mode="serve"):
        peer = Peer()
        peer.mode = mode
        started.append(peer)
        return peer
    yield start
    for peer in started:
        peer.close()
