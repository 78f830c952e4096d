"""A scripted stand-in for the Fairy server, on a real gRPC loopback port.

It implements the fairy.v1 service with the server's observable behaviour
(idempotent submit, watch replays then streams, cooperative cancel, chunked
download with SHA-256, upload, bearer token) but renders nothing: a job walks
through its states on a timer and "renders" a small file. Knobs let tests
script what the real server does only rarely: hold a job until cancelled, fail
it, drop a watch stream, corrupt a download.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import pathlib
import socket
import threading
import time

import grpc
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc

_TERMINAL = {fairy_pb2.JOB_STATE_DONE, fairy_pb2.JOB_STATE_FAILED, fairy_pb2.JOB_STATE_CANCELLED}
_JPEG = b"\xff\xd8\xff\xe0fake-preview\xff\xd9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedFairy(fairy_pb2_grpc.FairyEditorServicer):
    def __init__(self, results_dir: pathlib.Path, *, token: str | None = None, step_seconds: float = 0.01,
                 media_frames: int | None = None):
        self.results_dir = pathlib.Path(results_dir)
        self.token = token
        self.step_seconds = step_seconds
        self.media_frames = media_frames        # clamps handles like a real media length
        self.hold = threading.Event()           # set(): jobs wait in FRAMES until cancelled or released
        self.release = threading.Event()
        self.fail_message: str | None = None    # jobs end FAILED with this message
        self.drop_watch_after_first_event = 0   # number of watch streams to abort with UNAVAILABLE
        self.corrupt_downloads = 0              # number of downloads sent with a wrong SHA-256
        self.unavailable_message: str | None = None  # SubmitEdit answers UNAVAILABLE with this
        self.submits: list[fairy_pb2.SubmitEditRequest] = []
        self.cancels: list[str] = []
        self.uploads: dict[str, bytes] = {}
        self.jobs: dict[str, fairy_pb2.Job] = {}
        self._cond = threading.Condition()

    # -- helpers --------------------------------------------------------------

    def _check_token(self, context) -> None:
        if self.token is None:
            return
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def _set(self, job_id: str, **fields) -> fairy_pb2.Job:
        with self._cond:
            job = self.jobs[job_id]
            if job.state in _TERMINAL:
                return job
            for name, value in fields.items():
                if name == "fraction":
                    job.progress.fraction = value
                elif name == "previews":
                    del job.anchor_previews[:]
                    job.anchor_previews.extend(value)
                elif isinstance(value, fairy_pb2.FrameRange):
                    getattr(job, name).CopyFrom(value)
                else:
                    setattr(job, name, value)
            self._cond.notify_all()
            return job

    def _run(self, job_id: str) -> None:
        request = self.jobs[job_id].request
        for state, fraction in ((fairy_pb2.JOB_STATE_LOADING_MODEL, 0.0), (fairy_pb2.JOB_STATE_ANCHORS, 0.1)):
            time.sleep(self.step_seconds)
            self._set(job_id, state=state, fraction=fraction)
        time.sleep(self.step_seconds)
        self._set(job_id, state=fairy_pb2.JOB_STATE_FRAMES, fraction=0.3,
                  previews=[fairy_pb2.Preview(frame_index=0, jpeg=_JPEG, width=8, height=8)])
        if self.hold.is_set():
            while not self.release.wait(0.01):
                if self.jobs[job_id].state == fairy_pb2.JOB_STATE_CANCELLED:
                    return
        if self.jobs[job_id].state == fairy_pb2.JOB_STATE_CANCELLED:
            return
        time.sleep(self.step_seconds)
        self._set(job_id, state=fairy_pb2.JOB_STATE_ENCODING, fraction=0.95)
        if self.fail_message:
            self._set(job_id, state=fairy_pb2.JOB_STATE_FAILED, error_message=self.fail_message,
                      error_code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
            return
        before = request.handles.before
        after = request.handles.after
        if self.media_frames is not None:
            after = max(0, min(after, self.media_frames - request.range.start_frame - request.range.frame_count))
        before = min(before, request.range.start_frame)
        rendered = fairy_pb2.FrameRange(start_frame=request.range.start_frame - before,
                                        frame_count=request.range.frame_count + before + after,
                                        rate=request.range.rate)
        path = self.results_dir / f"{job_id}.mp4"
        data = f"fake video {job_id} {rendered.frame_count} frames\n".encode() * 50
        path.write_bytes(data)
        self._set(job_id, state=fairy_pb2.JOB_STATE_DONE, fraction=1.0, result_path=str(path),
                  result_size_bytes=len(data), rendered_range=rendered, finished_unix=time.time())

    # -- the service ------------------------------------------------------------

    def SubmitEdit(self, request, context):
        self._check_token(context)
        if self.unavailable_message:
            context.abort(grpc.StatusCode.UNAVAILABLE, self.unavailable_message)
        if not request.instruction.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the instruction is empty")
        if request.source.path.startswith("/outside/"):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{request.source.path} is outside the server's media roots")
        with self._cond:
            self.submits.append(request)
            existing = self.jobs.get(request.job_id)
            if existing is not None:
                if existing.request != request:
                    context.abort(grpc.StatusCode.ALREADY_EXISTS, f"job {request.job_id} exists with another request")
                return existing
            job = fairy_pb2.Job(job_id=request.job_id, state=fairy_pb2.JOB_STATE_QUEUED, request=request,
                                model=request.parameters.model or "builtin:tiny", created_unix=time.time())
            self.jobs[request.job_id] = job
        threading.Thread(target=self._run, args=(request.job_id,), daemon=True).start()
        return job

    def WatchJob(self, request, context):
        self._check_token(context)
        with self._cond:
            if request.job_id not in self.jobs:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
            last = None
            while True:
                job = fairy_pb2.Job()
                job.CopyFrom(self.jobs[request.job_id])
                if job != last:
                    yield fairy_pb2.JobEvent(job=job)
                    last = job
                    if self.drop_watch_after_first_event > 0:
                        self.drop_watch_after_first_event -= 1
                        context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (scripted)")
                if job.state in _TERMINAL:
                    return
                self._cond.wait(0.5)

    def CancelJob(self, request, context):
        self._check_token(context)
        with self._cond:
            self.cancels.append(request.job_id)
            if request.job_id not in self.jobs:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
        return self._set(request.job_id, state=fairy_pb2.JOB_STATE_CANCELLED)

    def GetJob(self, request, context):
        self._check_token(context)
        with self._cond:
            if request.job_id not in self.jobs:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id}")
            return self.jobs[request.job_id]

    def ListJobs(self, request, context):
        self._check_token(context)
        with self._cond:
            return fairy_pb2.ListJobsResponse(jobs=list(self.jobs.values()))

    def DownloadResult(self, request, context):
        self._check_token(context)
        job = self.jobs.get(request.job_id)
        if job is None or job.state != fairy_pb2.JOB_STATE_DONE:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {request.job_id} has no result")
        data = pathlib.Path(job.result_path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if self.corrupt_downloads > 0:
            self.corrupt_downloads -= 1
            digest = "0" * 64
        size = 100
        for offset in range(0, len(data), size):
            last = offset + size >= len(data)
            yield fairy_pb2.DataChunk(data=data[offset:offset + size], offset=offset, total_size=len(data),
                                      filename=pathlib.Path(job.result_path).name if offset == 0 else "",
                                      sha256=digest if last else "")

    def UploadMedia(self, request_iterator, context):
        self._check_token(context)
        header = None
        data = bytearray()
        for part in request_iterator:
            if part.HasField("header"):
                header = part.header
            else:
                data.extend(part.data)
        digest = hashlib.sha256(data).hexdigest()
        if header is None or header.total_size != len(data) or header.sha256 != digest:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "upload size or checksum mismatch")
        upload_id = f"up-{digest[:12]}"
        self.uploads[upload_id] = bytes(data)
        return fairy_pb2.UploadMediaResponse(upload_id=upload_id, size=len(data), sha256=digest)

    def GetServerInfo(self, request, context):
        self._check_token(context)
        return fairy_pb2.ServerInfo(version="0.0-scripted", api_version="v1", default_model="builtin:tiny",
                                    devices=[fairy_pb2.Device(name="cpu", kind="cpu")],
                                    auth_required=self.token is not None)


class RunningServer:
    """A ScriptedFairy on 127.0.0.1:port; ``start()`` can come later than the client."""

    def __init__(self, servicer: ScriptedFairy, port: int | None = None, *,
                 tls: tuple[bytes, bytes] | None = None):
        """``tls``: (private key PEM, certificate chain PEM) to serve over TLS."""
        self.servicer = servicer
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._tls = tls
        self._server = None

    def start(self) -> "RunningServer":
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
        fairy_pb2_grpc.add_FairyEditorServicer_to_server(self.servicer, self._server)
        if self._tls is not None:
            self._server.add_secure_port(self.address, grpc.ssl_server_credentials([self._tls]))
        else:
            self._server.add_insecure_port(self.address)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
