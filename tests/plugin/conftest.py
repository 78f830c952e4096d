"""Fixtures for the plugin tests: a scripted fairy.v1 server on a loopback port."""

from __future__ import annotations

import pytest

from scripted_server import RunningServer, ScriptedFairy


@pytest.fixture
def scripted(tmp_path):
    """A started RunningServer around a ScriptedFairy (``.servicer`` has the knobs)."""
    results = tmp_path / "server-results"
    results.mkdir()
    server = RunningServer(ScriptedFairy(results)).start()
    yield server
    server.servicer.release.set()
    server.stop()


@pytest.fixture
def client(scripted):
    from fairy_plugin.client import FairyClient

    with FairyClient(scripted.address, connect_timeout=5.0) as c:
        yield c
