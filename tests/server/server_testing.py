"""Helpers for the server tests: requests, waiting on jobs, and servers in subprocesses.

(A module with its own name rather than ``conftest``: several test folders have
a conftest.py and only one of them can be imported as ``conftest``.)
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import grpc
from fairy_server.jobs import EditPlan
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg
from grpc_health.v1 import health_pb2, health_pb2_grpc

FINAL = {pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
SERVING = health_pb2.HealthCheckResponse.SERVING
# Small enough for a 2-core CPU: tiny model, 96x64 clips, few frames, 2 steps.
FAST = dict(steps=2, long_side=64)


def edit_request(path, *, job_id="", start=0, count=4, rate=(24, 1), instruction="make it red", handles=(0, 0), **params):
    params = {**FAST, **params}
    return pb.SubmitEditRequest(
        job_id=job_id,
        source=pb.MediaSource(path=str(path)),
        range=pb.FrameRange(start_frame=start, frame_count=count, rate=pb.Rational(num=rate[0], den=rate[1])),
        handles=pb.Handles(before=handles[0], after=handles[1]),
        instruction=instruction,
        parameters=pb.EditParameters(**params),
    )


def wait_serving(channel: grpc.Channel, timeout: float = 120.0) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server never became SERVING")


def watch_until_final(stub: pbg.FairyEditorStub, job_id: str, timeout: float = 180.0, metadata=None) -> list[pb.Job]:
    jobs = []
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout, metadata=metadata):
        jobs.append(event.job)
        if event.job.state in FINAL:
            break
    return jobs


def wait_state(stub, job_id: str, states, timeout: float = 120.0) -> pb.Job:
    """Watch until the job reaches one of ``states`` (or a final state)."""
    states = set(states)
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout):
        if event.job.state in states or event.job.state in FINAL:
            return event.job
    raise AssertionError(f"watch of {job_id} ended early")


class ServerProcess:
    """``python -m fairy_server`` on 127.0.0.1:0, its port read from --port-file."""

    def __init__(self, data_dir: pathlib.Path, *args: str, env: dict | None = None, faults: tuple[str, ...] = ()):
        """``faults``: options of ``faulty_server.py`` (for example ``("--inject-oom", "5")``); with them the
        server runs through that wrapper, whose workers meet those faults."""
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        self.port_file.unlink(missing_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.args = [
            *([sys.executable, str(pathlib.Path(__file__).with_name("faulty_server.py")), *faults, "--"] if faults
              else [sys.executable, "-m", "fairy_server"]),
            "--address", "127.0.0.1:0", "--data-dir", str(self.data_dir),
            "--model", "builtin:tiny", "--devices", "cpu", "--port-file", str(self.port_file), *args,
        ]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        self.port = self._wait_port()

    def _wait_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                return int(self.port_file.read_text())
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"server did not start:\n{self.log()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server process only (its workers must die on their own)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


def make_plan(**over) -> EditPlan:
    """A plausible EditPlan for tests that need no media."""
    fields = dict(
        source="/m/clip.mp4", source_sha256="ab" * 32, start_frame=2, frame_count=4, rate_num=24, rate_den=1,
        render_start=1, render_count=6, width=96, height=64, instruction="make it red", model="builtin:tiny",
        seed=0, steps=2, anchors=3, guidance_scale=7.5, image_guidance_scale=1.5, long_side=64, codec="h264", noise=None,
    )
    return EditPlan(**{**fields, **over})
