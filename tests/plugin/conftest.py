"""Fixtures for the plugin tests.

``live`` / ``client``: the session's real ``fairy-server`` (tests/conftest.py ``fairy_server``), and a
FairyClient on it; before and after each test whatever is still queued or running is cancelled, so the
test finds the server's one worker free. Stand-ins are left only for faults a real server never makes on
demand (faulty_relay.py: downloads altered in transit, refusals; test_client_retries.py's own servicer), and
they answer with the real server's messages and translation.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def live(fairy_server):
    """The session's real server (real_server.SessionServer), settled before and after the test."""
    fairy_server.settle()
    yield fairy_server
    fairy_server.settle()


@pytest.fixture
def client(live):
    from fairy_plugin.client import FairyClient

    with FairyClient(live.address, connect_timeout=5.0) as c:
        yield c
