"""Background jobs for editors: submit, watch and fetch results off the UI thread.

One worker thread per job submits it, watches it and, once DONE, makes the
rendered clip available locally. The editor's main thread polls ``drain()``
from a timer (Blender) or a loop (the CLI, Resolve) and applies what arrived;
nothing here touches editor data, and no method blocks for long.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import threading
import time

from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.jobs import TERMINAL_STATE_NAMES, new_job_id

from .client import TERMINAL_STATES, FairyClient, state_name
from .errors import JobFailedError, PluginError

__all__ = ["JobUpdate", "JobRunner", "FINAL_STATES"]

FINAL_STATES = TERMINAL_STATE_NAMES  # the contract's, by name


@dataclasses.dataclass
class JobUpdate:
    """The state of one job as last seen; ``state`` in FINAL_STATES means no more updates."""

    job_id: str
    key: str                   # the caller's key for the source (strip name, clip name, item id)
    state: str                 # "QUEUED", "LOADING_MODEL", "ANCHORS", "FRAMES", "ENCODING", "DONE", "FAILED", "CANCELLED"
    fraction: float            # 0..1
    message: str               # error message (FAILED) or ""
    previews: list[bytes]      # anchor preview JPEGs once they arrived (else [])
    result_path: pathlib.Path | None   # the local rendered clip, once DONE
    job: fairy_pb2.Job

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def raise_for_failure(self) -> None:
        """JobFailedError with the server's message when the job FAILED."""
        if self.state == "FAILED":
            raise JobFailedError(self.message or f"job {self.job_id} failed")


def _safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:40] or "clip"


class JobRunner:
    """Runs jobs on ``client`` in worker threads.

    The rendered clip of a DONE job is used where the server wrote it when this
    machine can read it (same filesystem), else downloaded into
    ``download_dir``; ``always_download=True`` always copies it there, so a
    timeline can point at files that live beside it rather than in the server's
    cache.
    """

    def __init__(self, client: FairyClient, download_dir: pathlib.Path, *, always_download: bool = False):
        self._client = client
        self._download_dir = pathlib.Path(download_dir)
        self._always_download = always_download
        self._lock = threading.Lock()
        self._pending: list[JobUpdate] = []
        self._latest: dict[str, JobUpdate] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._cancel_requested: set[str] = set()
        self._submitted: set[str] = set()
        self._closing = threading.Event()

    # -- the caller's side --------------------------------------------------

    def submit(self, key: str, request: fairy_pb2.SubmitEditRequest) -> str:
        """Start a job in the background; returns its id at once (the request's
        job_id, or a new one). Submission errors arrive as a FAILED update."""
        if self._closing.is_set():
            raise PluginError("the job runner is closed")
        if not request.job_id:
            filled = fairy_pb2.SubmitEditRequest()
            filled.CopyFrom(request)
            filled.job_id = new_job_id()
            request = filled
        job_id = request.job_id
        with self._lock:
            if job_id in self._threads:
                raise PluginError(f"job {job_id} was already submitted")
            thread = threading.Thread(target=self._work, args=(key, request), name=f"fairy-job-{job_id[:8]}",
                                      daemon=True)
            self._threads[job_id] = thread
            self._record(key, request.job_id, fairy_pb2.Job(job_id=job_id, state=fairy_pb2.JOB_STATE_QUEUED,
                                                             request=request))
        thread.start()
        return job_id

    def cancel(self, job_id: str, *, wait: bool = False) -> None:
        """Ask the server to cancel; the CANCELLED update follows. Returns at
        once unless ``wait`` (then the request has reached the server)."""
        with self._lock:
            if job_id not in self._threads:
                raise PluginError(f"job {job_id} is not one of this runner's jobs")
            self._cancel_requested.add(job_id)
            submitted = job_id in self._submitted
        if not submitted:
            return  # the worker cancels right after it submits (or never submits)
        if wait:
            self._send_cancel(job_id)
        else:
            threading.Thread(target=self._send_cancel, args=(job_id,), daemon=True).start()

    def cancel_all(self, *, wait: bool = False) -> None:
        with self._lock:
            unfinished = [job_id for job_id, update in self._latest.items() if not update.final]
        for job_id in unfinished:
            self.cancel(job_id, wait=wait)

    def drain(self) -> list[JobUpdate]:
        """Every update since the last call, oldest first (non-blocking, thread-safe)."""
        with self._lock:
            updates, self._pending = self._pending, []
        return updates

    def latest(self) -> dict[str, JobUpdate]:
        """The last update of every job (a snapshot)."""
        with self._lock:
            return dict(self._latest)

    def wait_all(self, timeout: float | None = None) -> dict[str, JobUpdate]:
        """Wait for every job to end (or ``timeout`` seconds in all); job id -> last update."""
        with self._lock:
            threads = list(self._threads.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.latest()

    def close(self) -> None:
        """Stop watching (jobs keep running on the server) and join the workers."""
        self._closing.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> "JobRunner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the worker's side --------------------------------------------------

    def _record(self, key: str, job_id: str, job: fairy_pb2.Job, *, message: str = "",
                result_path: pathlib.Path | None = None, state: str | None = None) -> None:
        """Append an update; the caller holds no lock or holds self._lock (re-entrant use avoided)."""
        state = state or state_name(job.state)
        fraction = 1.0 if state == "DONE" else max(0.0, min(1.0, job.progress.fraction))
        update = JobUpdate(job_id=job_id, key=key, state=state, fraction=fraction,
                           message=message or job.error_message, previews=[p.jpeg for p in job.anchor_previews],
                           result_path=result_path, job=job)
        self._pending.append(update)
        self._latest[job_id] = update

    def _emit(self, key: str, job_id: str, job: fairy_pb2.Job, **kwargs) -> None:
        with self._lock:
            self._record(key, job_id, job, **kwargs)

    def _send_cancel(self, job_id: str) -> None:
        try:
            self._client.cancel(job_id)
        except PluginError:
            pass  # already finished, or the server is gone: the watch reports what happened

    def _work(self, key: str, request: fairy_pb2.SubmitEditRequest) -> None:
        job_id = request.job_id
        last = fairy_pb2.Job(job_id=job_id, request=request)
        try:
            with self._lock:
                cancelled_early = job_id in self._cancel_requested
            if cancelled_early:
                self._emit(key, job_id, last, state="CANCELLED", message="cancelled before it was sent")
                return
            last = self._client.submit(request)
            with self._lock:
                self._submitted.add(job_id)
                cancel_now = job_id in self._cancel_requested
            if cancel_now:
                self._send_cancel(job_id)

            def on_update(job: fairy_pb2.Job) -> None:
                nonlocal last
                last = job
                if job.state != fairy_pb2.JOB_STATE_DONE:  # DONE is reported once the file is here
                    self._emit(key, job_id, job)

            last = self._client.watch(job_id, on_update=on_update, should_stop=self._closing.is_set)
            if last.state not in TERMINAL_STATES:
                return  # close() stopped the watch; the job goes on on the server
            if last.state == fairy_pb2.JOB_STATE_DONE:
                self._emit(key, job_id, last, result_path=self._result_file(key, last))
            elif job_id not in self._latest or not self._latest[job_id].final:
                self._emit(key, job_id, last)
        except PluginError as exc:
            self._emit(key, job_id, last, state="FAILED", message=str(exc))
        except Exception as exc:  # a bug must still end the job for the UI, not hang it
            self._emit(key, job_id, last, state="FAILED", message=f"unexpected error: {exc!r}")

    def _result_file(self, key: str, job: fairy_pb2.Job) -> pathlib.Path:
        server_path = job.result_path
        if (not self._always_download and server_path and os.path.isfile(server_path)
                and os.access(server_path, os.R_OK)
                and (not job.result_size_bytes or os.path.getsize(server_path) == job.result_size_bytes)):
            return pathlib.Path(server_path)
        self._download_dir.mkdir(parents=True, exist_ok=True)
        suffix = pathlib.PurePath(server_path).suffix if server_path else ""
        if not suffix:
            suffix = ".mov" if job.request.parameters.codec == fairy_pb2.OUTPUT_CODEC_PRORES_422 else ".mp4"
        dest = self._download_dir / f"{_safe_stem(key)}-{job.job_id[:8]}{suffix}"
        return self._client.download(job.job_id, dest, which="video")
