"""A real ``fairy-server`` for the tests, and the few things a test needs around one.

(A module with its own name rather than ``conftest``: several test folders have a
conftest.py and only one of them can be imported as ``conftest``. tests/ is on
``sys.path`` because tests/conftest.py lives there.)

* ``ServerProcess``: ``python -m fairy_server`` (or ``tests/server/faulty_server.py``) in its own
  process on 127.0.0.1:0; the port is the one the server bound, read from ``--port-file``.
* ``wait_serving``: gRPC's ``channel_ready_future``, then the health service's Watch stream until
  SERVING (no fixed sleep: the server says when it is ready).
* ``SessionServer``: the one server of the ``fairy_server`` session fixture (tests/conftest.py): the
  tiny model on the CPU, small defaults, a media root with two clips, and two faults a job can ask for
  in its instruction (``HOLD``, ``OOM``; see tests/server/faulty_server.py).
* ``Proxy``: a TCP forwarder in front of a server, with a port the OS picked: one address that can
  refuse connections (a server that is not up yet), move to another server (a restart), or cut every
  open connection (a network drop) while the server behind it stays as it is.
* ``closed_port``: an address nothing listens on, held for as long as the test needs it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import grpc
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg
from fairy_proto.v1.jobs import TERMINAL_STATES
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["FAULTY_SERVER", "ServerProcess", "wait_serving", "SessionServer", "Proxy", "closed_port", "unique_seed"]

FAULTY_SERVER = pathlib.Path(__file__).parent / "server" / "faulty_server.py"
SERVING = health_pb2.HealthCheckResponse.SERVING
UNFINISHED_STATES = [s for s in pb.JobState.values() if s != pb.JOB_STATE_UNSPECIFIED and s not in TERMINAL_STATES]
_seeds = itertools.count(1000)


def unique_seed() -> int:
    """A seed no other request of this test run uses: the server serves an identical request from its result
    cache (DONE at once, no FRAMES), so a test that wants a render asks for a new seed."""
    return next(_seeds)


def wait_serving(channel: grpc.Channel, timeout: float = 120.0) -> None:
    """Until the server's health service says SERVING (its worker has loaded the model)."""
    deadline = time.monotonic() + timeout
    grpc.channel_ready_future(channel).result(timeout=timeout)
    health = health_pb2_grpc.HealthStub(channel)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the server never became SERVING")
        try:
            for answer in health.Watch(health_pb2.HealthCheckRequest(), timeout=left):
                if answer.status == SERVING:
                    return
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        grpc.channel_ready_future(channel).result(timeout=max(0.0, deadline - time.monotonic()))


class ServerProcess:
    """``python -m fairy_server`` on 127.0.0.1:0, its port read from --port-file."""

    def __init__(self, data_dir: pathlib.Path, *args: str, env: dict | None = None, faults: tuple[str, ...] = (),
                 address: str = "127.0.0.1:0"):
        """``faults``: options of ``faulty_server.py`` (for example ``("--inject-oom", "5")``); with them the
        server runs through that wrapper, whose workers meet those faults."""
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        self.port_file.unlink(missing_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.args = [
            *([sys.executable, str(FAULTY_SERVER), *faults, "--"] if faults else [sys.executable, "-m", "fairy_server"]),
            "--address", address, "--data-dir", str(self.data_dir),
            "--model", "builtin:tiny", "--devices", "cpu", "--port-file", str(self.port_file), *args,
        ]
        self._log = open(self.log_path, "ab")
        # One torch thread per worker unless asked otherwise: on two cores shared with the tests (and
        # whatever else runs), torch's spinning thread pool makes a tiny render ten times slower.
        env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}
        self.process = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
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
        """What the server wrote, for a failure's message (tests assert states, not log lines)."""
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


class SessionServer:
    """A real ``fairy-server`` (tiny model, CPU, one worker) with what the plugin tests ask of it.

    Its defaults are small (2 steps, 2 anchors, long side 64) so a 12-frame job renders in well under a
    second on two cores. Two faults, from tests/server/faulty_server.py, touch only the jobs that ask:

    * an instruction containing ``HOLD`` stops in FRAMES, previews sent, until it is cancelled or
      ``release(job_id)`` is called (a job that is deterministically still running);
    * an instruction containing ``OOM`` runs out of GPU memory at every batch size and FAILS with the
      server's own message.
    """

    HOLD = "[hold]"
    OOM = "[oom]"
    # What a request leaves unset (server flags; a flag this server does not have is left out).
    DEFAULTS = ("--steps", "2", "--anchors", "2", "--long-side", "64")

    def __init__(self, root: pathlib.Path, *args: str):
        from fairy.video import make_test_clip

        self.root = pathlib.Path(root)
        self.media_root = (self.root / "media").resolve()
        self.media_root.mkdir(parents=True, exist_ok=True)
        self.clip = make_test_clip(self.media_root / "clip.mp4", frames=24, fps=Fraction(24), audio=False)
        self.ntsc = make_test_clip(self.media_root / "ntsc.mp4", frames=24, fps=Fraction(24000, 1001), audio=False)
        self.release_dir = self.root / "release"
        self.release_dir.mkdir(exist_ok=True)
        self.process = ServerProcess(
            self.root / "data", "--media-root", str(self.media_root), *self.defaults(), *args, faults=self.faults(),
        )
        self.channel = grpc.insecure_channel(self.address)
        try:
            wait_serving(self.channel)
        except BaseException:
            self.stop()
            raise
        self.stub = pbg.FairyEditorStub(self.channel)

    @classmethod
    def defaults(cls) -> tuple[str, ...]:
        """``DEFAULTS``, less the flags ``fairy-server --help`` does not list."""
        from fairy_server.cli import build_parser

        flags = {flag for action in build_parser()._actions for flag in action.option_strings}
        pairs = zip(cls.DEFAULTS[::2], cls.DEFAULTS[1::2])
        return tuple(item for flag, value in pairs if flag in flags for item in (flag, value))

    def faults(self) -> tuple[str, ...]:
        """The faulty_server.py options of this server (another server on the same release folder uses them too)."""
        return ("--hold-frames", self.HOLD, str(self.release_dir), "--oom-instructions", self.OOM)

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def address(self) -> str:
        return self.process.address

    @property
    def data_dir(self) -> pathlib.Path:
        return self.process.data_dir

    def release(self, job_id: str) -> None:
        """Let a held job go on (now, or at its next attempt)."""
        (self.release_dir / job_id).touch()

    def job(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)

    def wait_for(self, job_id: str, states, timeout: float = 60.0) -> pb.Job:
        """Watch until the job is in one of ``states`` (or final)."""
        states = set(states)
        for event in self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout):
            if event.job.state in states or event.job.state in TERMINAL_STATES:
                return event.job
        raise AssertionError(f"the watch of {job_id} ended early")

    def settle(self, timeout: float = 60.0) -> None:
        """Cancel whatever a test left queued or running and wait until it ended: the next test finds the
        worker free."""
        unfinished = self.stub.ListJobs(pb.ListJobsRequest(states=UNFINISHED_STATES, limit=1000), timeout=30).jobs
        for job in unfinished:
            self.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), timeout=30)
        for job in unfinished:
            final = self.wait_for(job.job_id, TERMINAL_STATES, timeout)
            assert final.state in TERMINAL_STATES, f"job {job.job_id} is still {pb.JobState.Name(final.state)}"

    def stop(self) -> None:
        self.channel.close()
        self.process.stop()


class _Link:
    """One client connection and its connection to the server, pumped both ways."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket, on_close):
        self._sockets = (downstream, upstream)
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        for source, sink in ((downstream, upstream), (upstream, downstream)):
            threading.Thread(target=self._pump, args=(source, sink), name="proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._on_close(self)


class Proxy:
    """A TCP forwarder on 127.0.0.1 (the OS picks the port) in front of a server's port.

    Made with no port, it starts down. ``down()``: every connection is cut as it arrives (the client sees a server that is not running;
    ``refused`` counts them, so a test can wait until the client has tried). ``up(port)``: forward to that
    port (another server after a restart). ``drop()``: cut every open connection, the server untouched.
    """

    def __init__(self, target_port: int | None = None):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._target = target_port
        self._open = target_port is not None
        self._changed = threading.Condition()
        self._links: set[_Link] = set()
        self.refused = 0
        self.accepted = 0
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="proxy-accept", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_read:
                        return
                    conn, _ = self._listener.accept()
                    self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        with self._changed:
            target = self._target if self._open else None
        upstream = None
        if target is not None:
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
                upstream.settimeout(None)
            except OSError:
                upstream = None
        with self._changed:
            if upstream is None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, like a refusal
                conn.close()
                self.refused += 1
            else:
                self._links.add(_Link(conn, upstream, self._forget))
                self.accepted += 1
            self._changed.notify_all()

    def _forget(self, link: _Link) -> None:
        with self._changed:
            self._links.discard(link)

    def up(self, target_port: int | None = None) -> None:
        """Forward new connections (to ``target_port`` from now on, if given)."""
        with self._changed:
            self._target = target_port if target_port is not None else self._target
            assert self._target is not None, "up() needs a port the first time"
            self._open = True

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._changed:
            self._open = False
        self.drop()

    def drop(self) -> None:
        with self._changed:
            links = list(self._links)
        for link in links:
            link.close()

    def wait_refused(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until ``count`` connections were refused since the proxy was made."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.refused >= count, timeout=timeout):
                raise TimeoutError(f"only {self.refused} connections were refused")

    def close(self) -> None:
        self._wake_write.send(b"x")
        self._thread.join(10)
        self._listener.close()
        self.drop()
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> "Proxy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    """``127.0.0.1:PORT`` where nothing listens: a socket bound to a port the OS picked and kept (not
    listening, so connections are refused) until the block ends, so no other program can take the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{holder.getsockname()[1]}"
