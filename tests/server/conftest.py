"""Fixtures for the server tests: tiny clips and one real in-process server.

The server listens on a loopback port chosen by the OS and renders with the
tiny random model on the CPU in a real spawned worker process. Subprocess
servers come from ``server_testing.ServerProcess``.
"""

from __future__ import annotations

from fractions import Fraction

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2_grpc as pbg

from server_testing import wait_serving


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    from fairy.video import make_test_clip

    root = tmp_path_factory.mktemp("media")
    make_test_clip(root / "clip.mp4", frames=12, width=96, height=64, fps=Fraction(24), audio=True)
    make_test_clip(root / "ntsc.mp4", frames=8, width=96, height=64, fps=Fraction(24000, 1001), audio=False)
    (root / "notes.txt").write_text("not a video")
    return root.resolve()


@pytest.fixture(scope="session")
def server(tmp_path_factory, media_root):
    """An in-process server (its worker is a real spawned process)."""
    from fairy_server.app import FairyServer
    from fairy_server.config import Limits, ServerConfig

    data = tmp_path_factory.mktemp("server-data")
    config = ServerConfig(
        data_dir=data,
        address="127.0.0.1:0",
        model="builtin:tiny",
        devices="cpu",
        media_roots=(media_root,),
        limits=Limits(max_frames=48, max_pixels=200 * 200, max_instruction_length=200, max_upload_bytes=10_000_000),
    )
    instance = FairyServer(config).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{instance.port}")
    wait_serving(channel)
    instance.channel = channel
    instance.stub = pbg.FairyEditorStub(channel)
    yield instance
    channel.close()
    instance.stop()
