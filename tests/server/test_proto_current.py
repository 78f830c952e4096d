"""The committed generated code matches fairy.proto, and the server's parent process stays light."""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_generated_code_imports_without_grpc_tools():
    code = "import sys; sys.modules['grpc_tools'] = None; from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc; print(fairy_pb2.Job.DESCRIPTOR.full_name)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "fairy.v1.Job", result.stderr


def test_server_parent_process_never_imports_torch(tmp_path):
    # Everything the gRPC process runs: the app, the service, admission (which probes media with PyAV).
    code = f"""
import sys, pathlib
from fractions import Fraction
import fairy_server.app, fairy_server.cli, fairy_server.service, fairy_server.admission
from fairy.video import make_test_clip, probe
make_test_clip(pathlib.Path({str(tmp_path)!r}) / 'c.mp4', frames=2)
probe(pathlib.Path({str(tmp_path)!r}) / 'c.mp4')
assert 'torch' not in sys.modules, 'torch imported'
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
