"""What the server and its worker processes send each other (picklable dataclasses).

The parent sends a JobTask to a worker; the worker answers with events. Any
backend (local processes now, Ray later) speaks exactly these.
"""

from __future__ import annotations

import dataclasses

from .jobs import EditPlan, JobState, Preview

__all__ = [
    "JobTask",
    "DeviceInfo",
    "JobOutcome",
    "WorkerEvent",
    "WorkerHello",
    "WorkerReady",
    "WorkerLoadFailed",
    "JobEvent",
    "JobPhase",
    "JobProgress",
    "JobPreviews",
    "JobBatchSize",
    "JobFinished",
    "WorkerDied",
]


@dataclasses.dataclass(frozen=True)
class JobTask:
    seq: int
    job_id: str
    plan: EditPlan
    batch_size: int
    results_dir: str
    server: str = ""  # the address clients reach this server at (recorded in the result's sidecar)
    # "whole": the job on one worker; or one part of a job split across workers (server/splitting.py):
    # "anchors", "chunk" (offsets ``chunk`` of the rendered range) or "assemble", meeting in ``work_dir``.
    part: str = "whole"
    chunk: tuple[int, int] | None = None
    work_dir: str = ""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    name: str  # "cuda:0", "cpu"
    kind: str  # "cuda" | "cpu"
    description: str = ""  # e.g. the GPU's product name
    total_memory_bytes: int = 0
    free_memory_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    state: JobState  # DONE, FAILED or CANCELLED
    batch_size: int
    result_path: str = ""
    sidecar_path: str = ""
    result_size: int = 0
    error_message: str = ""
    error_code: str = ""  # grpc.StatusCode name
    render_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class WorkerEvent:
    worker_id: int


@dataclasses.dataclass(frozen=True)
class WorkerHello(WorkerEvent):
    """The worker imported torch and found its device; ``cuda_count`` for "auto"."""

    device: DeviceInfo
    cuda_count: int


@dataclasses.dataclass(frozen=True)
class WorkerReady(WorkerEvent):
    model: str
    device: DeviceInfo


@dataclasses.dataclass(frozen=True)
class WorkerLoadFailed(WorkerEvent):
    model: str
    message: str


@dataclasses.dataclass(frozen=True)
class JobEvent(WorkerEvent):
    seq: int
    job_id: str


@dataclasses.dataclass(frozen=True)
class JobPhase(JobEvent):
    state: JobState


@dataclasses.dataclass(frozen=True)
class JobProgress(JobEvent):
    step: int
    total_steps: int
    frames_done: int
    total_frames: int
    fraction: float


@dataclasses.dataclass(frozen=True)
class JobPreviews(JobEvent):
    previews: tuple[Preview, ...]


@dataclasses.dataclass(frozen=True)
class JobBatchSize(JobEvent):
    """Out of memory: retrying with this frame batch."""

    batch_size: int


@dataclasses.dataclass(frozen=True)
class JobFinished(JobEvent):
    outcome: JobOutcome
    device: DeviceInfo | None = None  # fresh memory figures


@dataclasses.dataclass(frozen=True)
class WorkerDied(WorkerEvent):
    """Made by the parent: the process exited; ``seq`` is the job it was running."""

    seq: int | None
    job_id: str | None
    exitcode: int | None
