"""A small synchronous client for the Fairy editing server (gRPC, fairy.v1).

Thread-safe (one channel, shared by every thread). Every call retries while the
server is starting or briefly unreachable (gRPC UNAVAILABLE) for up to
``connect_timeout`` seconds, then raises ServerUnavailableError with a message
that says what to do. Other failures become PluginError subclasses with the
server's one-line message.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import threading
import time
from typing import Callable, Iterator

import grpc
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from fairy_proto.v1.jobs import TERMINAL_STATES, new_job_id

from .errors import (AuthenticationError, DownloadError, PluginError, RequestRejectedError,
                     ServerUnavailableError)

__all__ = ["DEFAULT_ADDRESS", "FairyClient", "TERMINAL_STATES", "state_name", "format_server_info"]

DEFAULT_ADDRESS = "127.0.0.1:50151"


_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_UPLOAD_CHUNK_BYTES = 1024 * 1024
_STOP_POLL_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 1.0
# Words in the details of an UNAVAILABLE that gRPC itself produced (no server
# reached), as opposed to one the server sent on purpose.
_TRANSPORT_MARKERS = ("failed to connect", "connection refused", "connect failed", "socket closed",
                      "connections to all backends failing", "resolution", "connection reset", "broken pipe",
                      "transport", "goaway", "end of tcp stream", "subchannel", "handshake", "timeout",
                      "timed out", "network is unreachable", "no route to host", "connection aborted")
_WHICH_FILE = {"video": fairy_pb2.RESULT_FILE_VIDEO, "otio": fairy_pb2.RESULT_FILE_OTIO}


def state_name(state: int) -> str:
    """"DONE" for JOB_STATE_DONE, and so on (the names JobUpdate.state uses)."""
    return fairy_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def format_server_info(info: fairy_pb2.ServerInfo) -> str:
    """One line for a "Check connection" button: version and devices."""
    devices = ", ".join(
        f"{d.kind} {d.name}" + (f" ({d.total_memory_bytes / 2**30:.0f} GiB)" if d.total_memory_bytes else "")
        for d in info.devices) or "no devices"
    model = f"; model {info.default_model}" if info.default_model else ""
    return f"Fairy server {info.version} (API {info.api_version}): {devices}{model}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class FairyClient:
    """Connect to a Fairy server; use as a context manager or call close()."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, token: str | None = None,
                 root_certificates: bytes | None = None, connect_timeout: float = 10.0,
                 tls: bool | None = None, reattach_timeout: float = 120.0):
        """``tls`` None means TLS exactly when ``root_certificates`` are given;
        ``tls=True`` with no certificates uses the system's roots.
        ``reattach_timeout``: how long ``watch`` keeps trying to re-attach to a
        job whose server went away (a restarted server reloads its model and
        resumes the job, which takes longer than a first connect)."""
        self.address = address
        self.connect_timeout = connect_timeout
        self.reattach_timeout = max(reattach_timeout, connect_timeout)
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            # gRPC's default reconnect backoff grows to minutes; a server that is
            # starting should be picked up within a second.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        use_tls = tls if tls is not None else root_certificates is not None
        if use_tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = fairy_pb2_grpc.FairyEditorStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    # -- errors and retries -------------------------------------------------

    def _unavailable(self) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"Fairy server is not running at {self.address} (start it with `fairy-server`)")

    def _translate(self, exc: grpc.RpcError) -> PluginError:
        code = exc.code() if hasattr(exc, "code") else None
        details = _one_line(exc.details() or "") if hasattr(exc, "details") else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            if details and not any(marker in details.lower() for marker in _TRANSPORT_MARKERS):
                # The server answered, but cannot take work (e.g. no worker alive).
                return ServerUnavailableError(f"Fairy server at {self.address}: {details}")
            return self._unavailable()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServerUnavailableError(f"Fairy server at {self.address} did not answer in time")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AuthenticationError(
                f"Fairy server at {self.address} refused the token ({details or code.name.lower()}); "
                "check the token in the plugin's settings")
        name = code.name if code is not None else "UNKNOWN"
        return RequestRejectedError(details or f"Fairy server refused the request ({name})")

    def _retrying(self, call: Callable[[], object]):
        """Run ``call`` (one RPC), retrying UNAVAILABLE with backoff up to connect_timeout."""
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + delay > deadline:
                    raise self._translate(exc) from None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_SECONDS)

    # -- unary calls --------------------------------------------------------

    def server_info(self) -> fairy_pb2.ServerInfo:
        return self._retrying(lambda: self._stub.GetServerInfo(
            fairy_pb2.GetServerInfoRequest(), metadata=self._metadata))

    def submit(self, request: fairy_pb2.SubmitEditRequest) -> fairy_pb2.Job:
        """Queue an edit. A request without job_id gets one first, so a retry
        after a lost answer finds the same job instead of queueing a second."""
        if not request.job_id:
            filled = fairy_pb2.SubmitEditRequest()
            filled.CopyFrom(request)
            filled.job_id = new_job_id()
            request = filled
        return self._retrying(lambda: self._stub.SubmitEdit(request, metadata=self._metadata))

    def get(self, job_id: str) -> fairy_pb2.Job:
        return self._retrying(lambda: self._stub.GetJob(
            fairy_pb2.GetJobRequest(job_id=job_id), metadata=self._metadata))

    def cancel(self, job_id: str) -> fairy_pb2.Job:
        return self._retrying(lambda: self._stub.CancelJob(
            fairy_pb2.CancelJobRequest(job_id=job_id), metadata=self._metadata))

    def list_jobs(self, states: list[int] | None = None, limit: int = 0) -> list[fairy_pb2.Job]:
        response = self._retrying(lambda: self._stub.ListJobs(
            fairy_pb2.ListJobsRequest(states=states or [], limit=limit), metadata=self._metadata))
        return list(response.jobs)

    # -- watching -----------------------------------------------------------

    def watch(self, job_id: str, on_update: Callable[[fairy_pb2.Job], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> fairy_pb2.Job:
        """Block until the job is DONE, FAILED or CANCELLED (or ``should_stop()``
        turns true, checked about ten times a second), calling ``on_update(job)``
        for every event. Once attached, re-attaches after a disconnect of up to
        ``reattach_timeout`` seconds; the server replays the current state on
        each attach."""
        last: fairy_pb2.Job | None = None
        deadline = time.monotonic() + self.connect_timeout  # until the first event: a plain connect
        delay = 0.05
        while True:
            if should_stop is not None and should_stop():
                return self._last_known(job_id, last)
            call = self._stub.WatchJob(fairy_pb2.WatchJobRequest(job_id=job_id), metadata=self._metadata)
            stopper = _CallStopper(call, should_stop)
            try:
                for event in call:
                    last = event.job
                    deadline = time.monotonic() + self.reattach_timeout
                    delay = 0.05
                    if on_update is not None:
                        on_update(last)
                    if last.state in TERMINAL_STATES:
                        return last
                # The stream ended without a final state (the server is shutting
                # down gracefully): fall through and re-attach.
            except grpc.RpcError as exc:
                if stopper.stopped:
                    return self._last_known(job_id, last)
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + delay > deadline:
                    raise self._translate(exc) from None
            finally:
                stopper.close()
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_SECONDS)

    def _last_known(self, job_id: str, last: fairy_pb2.Job | None) -> fairy_pb2.Job:
        if last is not None:
            return last
        try:
            return self.get(job_id)
        except PluginError:
            return fairy_pb2.Job(job_id=job_id)

    # -- files --------------------------------------------------------------

    def download(self, job_id: str, dest: pathlib.Path, *, which: str = "video") -> pathlib.Path:
        """Fetch a job's rendered clip (``which="video"``) or OTIO sidecar
        (``"otio"``) to ``dest`` (a file path, or a folder: the server's file
        name is used). Written atomically after the SHA-256 checks out; a failed
        download leaves nothing behind."""
        if which not in _WHICH_FILE:
            raise PluginError(f"which must be 'video' or 'otio', got '{which}'")
        dest = pathlib.Path(dest)
        folder = dest if dest.is_dir() else dest.parent
        if not folder.is_dir():
            raise DownloadError(f"download folder {folder} does not exist")
        request = fairy_pb2.DownloadResultRequest(job_id=job_id, file=_WHICH_FILE[which])
        return self._retrying(lambda: self._download_once(request, dest, folder))

    def _download_once(self, request, dest: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".fairy-{request.job_id}-", suffix=".part")
        try:
            digest, size, total, filename, expected = hashlib.sha256(), 0, None, "", ""
            with os.fdopen(fd, "wb") as out:
                for chunk in self._stub.DownloadResult(request, metadata=self._metadata):
                    if chunk.offset != size:
                        raise DownloadError(
                            f"download of job {request.job_id} skipped from byte {size} to {chunk.offset}")
                    out.write(chunk.data)
                    digest.update(chunk.data)
                    size += len(chunk.data)
                    filename = filename or chunk.filename
                    total = chunk.total_size or total
                    expected = chunk.sha256 or expected
            if not expected:
                raise DownloadError(f"download of job {request.job_id} ended before the last chunk")
            if total is not None and size != total:
                raise DownloadError(f"download of job {request.job_id} got {size} of {total} bytes")
            if digest.hexdigest() != expected.lower():
                raise DownloadError(f"download of job {request.job_id} is corrupt (SHA-256 mismatch)")
            if dest.is_dir():
                name = os.path.basename(filename.replace("\\", "/")) or f"{request.job_id}.mp4"
                final = dest / name
            else:
                final = dest
            # mkstemp made it private (0600); a result goes into a media folder editors share, so it gets
            # the mode any new file of the user gets.
            os.chmod(temp_name, 0o666 & ~_umask())
            os.replace(temp_name, final)
            return final
        except BaseException:
            os.unlink(temp_name)
            raise

    def upload(self, path: pathlib.Path) -> str:
        """Send a media file to a server on another machine; returns its upload id."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise PluginError(f"media file {path} does not exist")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(_UPLOAD_CHUNK_BYTES), b""):
                digest.update(block)
        header = fairy_pb2.UploadHeader(filename=path.name, total_size=path.stat().st_size,
                                        sha256=digest.hexdigest())

        def parts() -> Iterator[fairy_pb2.UploadMediaRequest]:
            yield fairy_pb2.UploadMediaRequest(header=header)
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(_UPLOAD_CHUNK_BYTES), b""):
                    yield fairy_pb2.UploadMediaRequest(data=block)

        response = self._retrying(lambda: self._stub.UploadMedia(parts(), metadata=self._metadata))
        return response.upload_id

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "FairyClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _CallStopper:
    """Cancels a streaming call from a helper thread once ``should_stop()`` is
    true: iterating a gRPC stream blocks, so the caller cannot poll itself."""

    def __init__(self, call, should_stop: Callable[[], bool] | None):
        self.stopped = False
        self._call = call
        self._should_stop = should_stop
        self._done = threading.Event()
        self._thread = None
        if should_stop is not None:
            self._thread = threading.Thread(target=self._poll, name="fairy-watch-stop", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(_STOP_POLL_SECONDS):
            if self._should_stop():
                self.stopped = True
                self._call.cancel()
                return

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it, and is not thread-safe)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
