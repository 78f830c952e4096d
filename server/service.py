"""The FairyEditor servicer: translates messages and errors, nothing more.

Each method turns the request into domain calls on the JobManager (or the
upload store) and the answer back into messages; a ServerError becomes its
status code with its one-line message.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import pathlib
import threading
import time

import grpc
from fairy_proto.v1 import fairy_pb2, fairy_pb2_grpc
from fairy_proto.v1.jobs import TERMINAL_STATES
from fairy_proto.v1.status import error_trailers

from . import __version__
from .config import ServerConfig
from .errors import FailedPreconditionError, InvalidRequestError, NotFoundError, ServerError
from .jobs import JobState
from .manager import JobManager
from .translate import fingerprint, job_to_proto, limits_to_proto, request_from_proto, state_from_proto
from .uploads import UploadStore

__all__ = ["FairyEditorServicer", "API_VERSION"]

API_VERSION = "fairy.v1"
_log = logging.getLogger("fairy_server.rpc")
_DEFAULT_PAGE = 100
_MAX_PAGE = 1000
_WATCH_MIN_INTERVAL = 0.1  # progress-only updates are coalesced to at most ten a second
_WATCH_POLL = 1.0  # how often a quiet Watch checks whether its client is gone
_FINAL = TERMINAL_STATES


def _abort(context: grpc.ServicerContext, exc: BaseException):
    """End the call with ``exc``'s status, marked as this server's own answer (fairy_proto.v1.status): a
    client tells it from a status gRPC made up (no server reached) by the mark, and does not retry it."""
    if isinstance(exc, ServerError):
        context.set_trailing_metadata(error_trailers(type(exc).__name__))
        context.abort(grpc.StatusCode[exc.code], str(exc))
    _log.exception("unexpected error")
    context.set_trailing_metadata(error_trailers("InternalError"))
    context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {exc.__class__.__name__}")


def _translating_errors(method):
    """Map ServerError (and anything unexpected) to a status; works for unary and streaming methods."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                if isinstance(exc, grpc.RpcError) or context.code() is not None:
                    raise
                _abort(context, exc)

        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            if context.code() is not None:
                raise
            _abort(context, exc)

    return unary


class FairyEditorServicer(fairy_pb2_grpc.FairyEditorServicer):
    def __init__(self, config: ServerConfig, manager: JobManager, uploads: UploadStore):
        self._config = config
        self._manager = manager
        self._uploads = uploads
        limit = config.limits.max_message_bytes
        self._chunk_size = max(16 * 1024, min(1 << 20, limit - 64 * 1024))

    @_translating_errors
    def SubmitEdit(self, request, context):
        if not request.job_id:
            request.job_id = self._manager.new_job_id()
        edit = request_from_proto(request)
        view, _created = self._manager.submit(edit, request.SerializeToString(deterministic=True), fingerprint(request))
        return job_to_proto(view)

    @_translating_errors
    def WatchJob(self, request, context):
        # Per-RPC event set when the client goes away (grpc examples/python/cancellation).
        gone = threading.Event()
        context.add_callback(gone.set)
        with self._manager.subscribe(request.job_id) as changes:
            last = job_to_proto(self._manager.view(request.job_id))
            yield fairy_pb2.JobEvent(job=last)
            last_sent = time.monotonic()
            pending = None  # a progress-only update waiting for its turn
            while not gone.is_set() and last.state not in _FINAL:
                wait = _WATCH_POLL if pending is None else max(0.0, last_sent + _WATCH_MIN_INTERVAL - time.monotonic())
                views = changes.get(wait)
                if views is None:  # the server is stopping
                    return
                for view in views:
                    message = job_to_proto(view)
                    if message.state != last.state:  # every state change is sent, in order
                        yield fairy_pb2.JobEvent(job=message)
                        last, last_sent, pending = message, time.monotonic(), None
                    elif message != last:
                        pending = message
                if pending is not None and time.monotonic() - last_sent >= _WATCH_MIN_INTERVAL:
                    yield fairy_pb2.JobEvent(job=pending)
                    last, last_sent, pending = pending, time.monotonic(), None

    @_translating_errors
    def CancelJob(self, request, context):
        return job_to_proto(self._manager.cancel(request.job_id))

    @_translating_errors
    def GetJob(self, request, context):
        return job_to_proto(self._manager.view(request.job_id))

    @_translating_errors
    def ListJobs(self, request, context):
        if request.limit < 0:
            raise InvalidRequestError(f"limit must be 0 or more, got {request.limit}")
        limit = min(request.limit or _DEFAULT_PAGE, _MAX_PAGE)
        states = [state_from_proto(s) for s in request.states]
        return fairy_pb2.ListJobsResponse(jobs=[job_to_proto(v) for v in self._manager.list(states, limit)])

    @_translating_errors
    def DownloadResult(self, request, context):
        record = self._manager.view(request.job_id, with_previews=False).record
        if record.state != JobState.DONE:
            raise FailedPreconditionError(f"job {record.job_id} is {record.state.value}; only a DONE job has a result")
        which = request.file
        if which not in (fairy_pb2.RESULT_FILE_UNSPECIFIED, fairy_pb2.RESULT_FILE_VIDEO, fairy_pb2.RESULT_FILE_OTIO):
            raise InvalidRequestError(f"unknown result file {which}")
        path = pathlib.Path(record.sidecar_path if which == fairy_pb2.RESULT_FILE_OTIO else record.result_path)
        try:
            handle = open(path, "rb")
        except OSError:
            raise NotFoundError(f"the result of job {record.job_id} was removed from the server") from None
        with handle:
            total = pathlib.Path(path).stat().st_size
            digest = hashlib.sha256()
            offset = 0
            first = True
            while True:
                data = handle.read(self._chunk_size)
                digest.update(data)
                last = offset + len(data) >= total or not data
                yield fairy_pb2.DataChunk(
                    data=data,
                    offset=offset,
                    total_size=total,
                    filename=path.name if first else "",
                    sha256=digest.hexdigest() if last else "",
                )
                offset += len(data)
                first = False
                if last:
                    return

    @_translating_errors
    def UploadMedia(self, request_iterator, context):
        header = next(request_iterator, None)
        if header is None or header.WhichOneof("part") != "header":
            raise InvalidRequestError("the first UploadMediaRequest must carry the header")
        h = header.header
        writer = self._uploads.begin(h.filename, h.total_size, h.sha256.lower())
        try:
            for part in request_iterator:
                if part.WhichOneof("part") != "data":
                    raise InvalidRequestError("only the first UploadMediaRequest may carry a header")
                writer.write(part.data)
            upload_id = writer.commit()
        finally:
            writer.abort()
        _log.info("upload %s stored (%d bytes)", upload_id, writer.received)
        return fairy_pb2.UploadMediaResponse(upload_id=upload_id, size=writer.received, sha256=upload_id)

    @_translating_errors
    def GetServerInfo(self, request, context):
        config = self._config
        devices = []
        loaded: list[str] = []
        for worker in self._manager.workers():
            info = worker.device
            if info is not None:
                devices.append(
                    fairy_pb2.Device(
                        name=f"{info.name} ({info.description})" if info.description else info.name,
                        kind=info.kind,
                        total_memory_bytes=info.total_memory_bytes,
                        free_memory_bytes=info.free_memory_bytes,
                        running_job_id=worker.running_job_id or "",
                    )
                )
            if worker.ready:
                loaded.extend(m for m in worker.loaded_models if m not in loaded)
        return fairy_pb2.ServerInfo(
            version=__version__,
            api_version=API_VERSION,
            devices=devices,
            default_model=config.model,
            loaded_models=loaded,
            limits=limits_to_proto(config),
            auth_required=bool(config.token),
            media_roots=[str(r) for r in config.media_roots],
        )
