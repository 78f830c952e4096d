"""A small synchronous client for the Fairy editing server (gRPC, fairy.v1).

Thread-safe (one channel, shared by every thread). gRPC itself does the
waiting and retrying: every call waits for a server that is starting for up
to ``connect_timeout`` seconds (``wait_for_ready`` with a deadline; long
streams wait for the channel to connect first), and the channel's service
config retries a call that met a transport failure (UNAVAILABLE) with backoff.
What still fails becomes a PluginError subclass with a message that says what
to do: ServerUnavailableError when no server was reached, else the server's
own one-line message. The two are told apart by the mark a Fairy server puts
on every error it sends on purpose (fairy_proto.v1.status), never by the
wording of a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
import time
from typing import Callable, Iterator

import grpc
from fairy_proto.files import StagedPath
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from fairy_proto.v1.jobs import TERMINAL_STATES, new_job_id
from fairy_proto.v1.status import error_reason

from .errors import (AuthenticationError, DownloadError, PluginError, RequestRejectedError,
                     ServerUnavailableError)

__all__ = ["DEFAULT_ADDRESS", "FairyClient", "TERMINAL_STATES", "state_name", "format_server_info"]

DEFAULT_ADDRESS = "127.0.0.1:50151"


_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_UPLOAD_CHUNK_BYTES = 1024 * 1024
_STOP_POLL_SECONDS = 0.1
# gRPC retries a call that failed UNAVAILABLE before the server answered anything (nothing listening yet, a
# connection reset, a GOAWAY), at most maxAttempts times in all. An UNAVAILABLE the server sends on purpose
# carries a retry pushback of -1 (fairy_proto.v1.status), and gRPC does not repeat it.
_SERVICE = fairy_pb2.DESCRIPTOR.services_by_name["FairyEditor"].full_name  # "fairy.v1.FairyEditor"
_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": _SERVICE}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]},
}]})
# SubmitEdit's answer can take a while once the server has the call: it reads the whole source file once to
# checksum it (a large file on a network share takes minutes).
_SUBMIT_ANSWER_SECONDS = 600.0
# After a deadline passed: how long to look whether a server answers at all.
_READY_PROBE_SECONDS = 0.25
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_REATTACH_PAUSE_SECONDS = 0.1
_LAST_KNOWN_SECONDS = 1.0
# A download or upload cut by a transport failure after data flowed (gRPC retries only calls that have not
# started answering) is started over from scratch at most this often in all.
_WHOLE_TRANSFER_ATTEMPTS = 3
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
        """``connect_timeout``: how long a call waits for a server that is
        starting or reconnecting before ServerUnavailableError.
        ``tls`` None means TLS exactly when ``root_certificates`` are given;
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
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.service_config_disable_resolution", 1),  # this config, never one from DNS
        ]
        use_tls = tls if tls is not None else root_certificates is not None
        if use_tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = fairy_pb2_grpc.FairyEditorStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # Waiting for a server before a call without a deadline is a tiny call that has one: the standard
        # health check (open without a token), with wait_for_ready; b"" is an empty HealthCheckRequest.
        # Not grpc.channel_ready_future: its polling thread raises "Channel closed!" when the channel is
        # closed within 0.2 s of its use (grpc/grpc#18995).
        self._ping = self._channel.unary_unary(_HEALTH_CHECK)

    # -- errors and waiting -------------------------------------------------

    def _unavailable(self) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"Fairy server is not running at {self.address} (start it with `fairy-server`)")

    def _translate(self, exc: grpc.RpcError) -> PluginError:
        code = exc.code() if hasattr(exc, "code") else None
        details = _one_line(exc.details() or "") if hasattr(exc, "details") else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            if _from_server(exc) and details:
                # The server answered, but cannot take work (e.g. no worker alive).
                return ServerUnavailableError(f"Fairy server at {self.address}: {details}")
            return self._unavailable()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if not _from_server(exc) and not self._connected():
                return self._unavailable()  # the deadline passed while waiting for a server
            return ServerUnavailableError(f"Fairy server at {self.address} did not answer in time")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return AuthenticationError(
                f"Fairy server at {self.address} refused the token ({details or code.name.lower()}); "
                "check the token in the plugin's settings")
        name = code.name if code is not None else "UNKNOWN"
        return RequestRejectedError(details or f"Fairy server refused the request ({name})")

    def _call(self, method, request, *, timeout: float | None = None):
        """One unary call that waits for the server (starting, or reconnecting) and its answer together for
        up to ``timeout`` seconds (connect_timeout unless given)."""
        try:
            return method(request, metadata=self._metadata, wait_for_ready=True,
                          timeout=self.connect_timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise self._translate(exc) from None

    def _wait_connected(self, timeout: float, should_stop: Callable[[], bool] | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a server, before a call that cannot carry a deadline to wait
        with (a stream that lasts as long as its job or file, a submit whose answer takes a while). False
        when ``should_stop()`` turned true first; ServerUnavailableError when the time ran out."""
        deadline = time.monotonic() + max(timeout, _READY_PROBE_SECONDS)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable()
            wait = remaining if should_stop is None else min(remaining, _STOP_POLL_SECONDS)
            started = time.monotonic()
            if self._answers(wait, wait_for_ready=True):
                return True
            if should_stop is not None and should_stop():
                return False
            if time.monotonic() - started < wait:  # refused at once (not by gRPC's waiting): do not spin
                time.sleep(min(_STOP_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _connected(self) -> bool:
        """Whether a server answers at all now (asked after a call's deadline passed)."""
        return self._answers(_READY_PROBE_SECONDS, wait_for_ready=False)

    def _answers(self, timeout: float, *, wait_for_ready: bool) -> bool:
        """Whether a server answers the health check within ``timeout`` seconds. Any answer counts, an error
        too (UNIMPLEMENTED from a server without the health service): something is serving there."""
        try:
            self._ping(b"", timeout=timeout, wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            return exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE) \
                or _from_server(exc)
        return True

    # -- unary calls --------------------------------------------------------

    def server_info(self) -> fairy_pb2.ServerInfo:
        return self._call(self._stub.GetServerInfo, fairy_pb2.GetServerInfoRequest())

    def submit(self, request: fairy_pb2.SubmitEditRequest) -> fairy_pb2.Job:
        """Queue an edit. A request without job_id gets one first, so a retry
        after a lost answer finds the same job instead of queueing a second."""
        if not request.job_id:
            filled = fairy_pb2.SubmitEditRequest()
            filled.CopyFrom(request)
            filled.job_id = new_job_id()
            request = filled
        # Connected first (up to connect_timeout), then a deadline for the answer alone: the server reads
        # the source once to checksum it. gRPC may send the call again after a transport failure; the job
        # id makes that safe.
        self._wait_connected(self.connect_timeout)
        return self._call(self._stub.SubmitEdit, request, timeout=_SUBMIT_ANSWER_SECONDS)

    def get(self, job_id: str) -> fairy_pb2.Job:
        return self._call(self._stub.GetJob, fairy_pb2.GetJobRequest(job_id=job_id))

    def cancel(self, job_id: str) -> fairy_pb2.Job:
        return self._call(self._stub.CancelJob, fairy_pb2.CancelJobRequest(job_id=job_id))

    def list_jobs(self, states: list[int] | None = None, limit: int = 0) -> list[fairy_pb2.Job]:
        response = self._call(self._stub.ListJobs, fairy_pb2.ListJobsRequest(states=states or [], limit=limit))
        return list(response.jobs)

    # -- watching -----------------------------------------------------------

    def watch(self, job_id: str, on_update: Callable[[fairy_pb2.Job], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> fairy_pb2.Job:
        """Block until the job is DONE, FAILED or CANCELLED (or ``should_stop()``
        turns true, checked about ten times a second), calling ``on_update(job)``
        for every event. Once attached, re-attaches after a disconnect of up to
        ``reattach_timeout`` seconds; the server replays the current state on
        each attach."""
        request = fairy_pb2.WatchJobRequest(job_id=job_id)
        last: fairy_pb2.Job | None = None
        deadline = time.monotonic() + self.connect_timeout  # until the first event: a plain connect
        while True:
            if should_stop is not None and should_stop():
                return self._last_known(job_id, last)
            # The stream lasts as long as the job, so it carries no deadline: wait for the server here
            # (gRPC's retry policy still covers a transport failure before the first event).
            if not self._wait_connected(deadline - time.monotonic(), should_stop):
                return self._last_known(job_id, last)
            call = self._stub.WatchJob(request, metadata=self._metadata)
            stopper = _CallStopper(call, should_stop)
            try:
                for event in call:
                    last = event.job
                    deadline = time.monotonic() + self.reattach_timeout
                    if on_update is not None:
                        on_update(last)
                    if last.state in TERMINAL_STATES:
                        return last
                # The stream ended without a final state (the server is shutting
                # down gracefully): fall through and re-attach.
            except grpc.RpcError as exc:
                if stopper.stopped:
                    return self._last_known(job_id, last)
                # Re-attach after a transport failure (the server went away: restarted, or the network);
                # an error the server sent on purpose stands.
                if not _transport_failure(exc) or time.monotonic() >= deadline:
                    raise self._translate(exc) from None
            finally:
                stopper.close()
            time.sleep(_REATTACH_PAUSE_SECONDS)

    def _last_known(self, job_id: str, last: fairy_pb2.Job | None) -> fairy_pb2.Job:
        if last is not None:
            return last
        try:  # asked to stop: a moment for the server's answer, not a whole connect_timeout
            return self._call(self._stub.GetJob, fairy_pb2.GetJobRequest(job_id=job_id),
                              timeout=min(self.connect_timeout, _LAST_KNOWN_SECONDS))
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
        return self._whole_transfer(lambda: self._download_once(request, dest))

    def _whole_transfer(self, transfer: Callable[[], object]):
        """Run a download or upload (one streaming call) once the channel is connected; one cut by a
        transport failure is started over from scratch, at most _WHOLE_TRANSFER_ATTEMPTS times in all."""
        for attempt in range(1, _WHOLE_TRANSFER_ATTEMPTS + 1):
            self._wait_connected(self.connect_timeout)
            try:
                return transfer()
            except grpc.RpcError as exc:
                if attempt == _WHOLE_TRANSFER_ATTEMPTS or not _transport_failure(exc):
                    raise self._translate(exc) from None

    def _download_once(self, request, dest: pathlib.Path) -> pathlib.Path:
        # The result is written under a temporary name beside it (fairy_proto.files), with the mode any new
        # file of the user gets (a media folder editors share), and renamed only once its SHA-256 checks
        # out. The first chunk names the file, so the temporary is made there.
        staged: StagedPath | None = None
        try:
            digest, size, total, expected = hashlib.sha256(), 0, None, ""
            for chunk in self._stub.DownloadResult(request, metadata=self._metadata):
                if staged is None:
                    staged = StagedPath(_download_target(dest, chunk.filename, request.job_id), overwrite=True)
                    out = staged.open("wb")
                if chunk.offset != size:
                    raise DownloadError(
                        f"download of job {request.job_id} skipped from byte {size} to {chunk.offset}")
                out.write(chunk.data)
                digest.update(chunk.data)
                size += len(chunk.data)
                total = chunk.total_size or total
                expected = chunk.sha256 or expected
            if not expected:
                raise DownloadError(f"download of job {request.job_id} ended before the last chunk")
            if total is not None and size != total:
                raise DownloadError(f"download of job {request.job_id} got {size} of {total} bytes")
            if digest.hexdigest() != expected.lower():
                raise DownloadError(f"download of job {request.job_id} is corrupt (SHA-256 mismatch)")
            return staged.commit()
        except BaseException:
            if staged is not None:
                staged.discard()
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

        # The upload id is the content's SHA-256, so sending the whole file again is safe.
        response = self._whole_transfer(lambda: self._stub.UploadMedia(parts(), metadata=self._metadata))
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


def _from_server(exc: grpc.RpcError) -> bool:
    """Whether a Fairy server sent this error on purpose (it marks every one), rather than gRPC."""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return error_reason(trailers) is not None


def _transport_failure(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE that no Fairy server sent: nothing listening, or the connection went away mid-call."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and not _from_server(exc)


def _download_target(dest: pathlib.Path, filename: str, job_id: str) -> pathlib.Path:
    """``dest`` itself, or in a folder ``dest`` the file name the server sent."""
    if not dest.is_dir():
        return dest
    return dest / (os.path.basename(filename.replace("\\", "/")) or f"{job_id}.mp4")
