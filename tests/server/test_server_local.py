"""fairy_server.local: a private server in a child process (used by `fairy demo` and the plugin tests)."""

from __future__ import annotations

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc

from fairy_server.local import LocalServerError, local_server


def test_local_server_listens_and_stops(tmp_path):
    with local_server(tmp_path / "data", model="builtin:tiny", devices="cpu") as address:
        with grpc.insecure_channel(address) as channel:
            info = fairy_pb2_grpc.FairyEditorStub(channel).GetServerInfo(fairy_pb2.GetServerInfoRequest(), timeout=30)
        assert info.api_version == "fairy.v1"
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
        fairy_pb2_grpc.FairyEditorStub(channel).GetServerInfo(fairy_pb2.GetServerInfoRequest(), timeout=2)


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(LocalServerError, match="did not start: .+"):
        with local_server(tmp_path / "data", model="builtin:tiny", extra_args=["--address", "0.0.0.0:0"]):
            pass
