"""The worker process: one per CUDA device (or one on the CPU).

It imports torch (the server's parent process never does), loads the default
model once, then renders the JobTasks it receives, one at a time, reporting
through a multiprocessing queue. It exits when the parent dies, so an orphan
never keeps rendering after the server was killed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time

from .jobs import JobState, Preview
from .messages import (
    DeviceInfo,
    JobBatchSize,
    JobFinished,
    JobPhase,
    JobPreviews,
    JobProgress,
    JobTask,
    WorkerHello,
    WorkerLoadFailed,
    WorkerReady,
)
from .work import PipelineCache, run_task

__all__ = ["WorkerSettings", "worker_main"]

_log = logging.getLogger("fairy_server.worker")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    worker_id: int
    device: str  # "auto", "cpu", "cuda:N"
    model: str
    pipelines_per_worker: int = 2
    log_level: int = logging.INFO


class _QueueReporter:
    def __init__(self, events, worker_id: int, task: JobTask):
        self._events = events
        self._ids = dict(worker_id=worker_id, seq=task.seq, job_id=task.job_id)

    def phase(self, state: JobState) -> None:
        self._events.put(JobPhase(**self._ids, state=state))

    def progress(self, step, total_steps, frames_done, total_frames, fraction) -> None:
        self._events.put(JobProgress(**self._ids, step=step, total_steps=total_steps, frames_done=frames_done,
                                     total_frames=total_frames, fraction=fraction))

    def previews(self, previews: tuple[Preview, ...]) -> None:
        self._events.put(JobPreviews(**self._ids, previews=previews))

    def batch_size(self, batch_size: int) -> None:
        self._events.put(JobBatchSize(**self._ids, batch_size=batch_size))


def _die_with_parent() -> None:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:  # portable fallback
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _device_info(device: str) -> DeviceInfo:
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        return DeviceInfo(device, "cuda", torch.cuda.get_device_name(index), total, free)
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pages = free = 0
    return DeviceInfo("cpu", "cpu", "CPU", pages, free)


def worker_main(settings: WorkerSettings, tasks, events, cancel_seq) -> None:
    """Process entry point (multiprocessing "spawn")."""
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the parent decides
    # how to stop, then ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s worker{settings.worker_id} %(message)s",
    )
    import torch

    from fairy.editing import edit_video
    from fairy.errors import ModelLoadError
    from fairy.loading import load_pipeline

    cuda_count = torch.cuda.device_count()
    device = settings.device
    if device == "auto":
        device = "cuda:0" if cuda_count else "cpu"
    events.put(WorkerHello(settings.worker_id, _device_info(device), cuda_count if settings.device == "auto" else 0))

    def free_memory() -> None:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

    pipelines = PipelineCache(lambda model: load_pipeline(model, device=device), settings.pipelines_per_worker, free_memory)
    try:
        pipelines.get(settings.model)
    except ModelLoadError as exc:
        events.put(WorkerLoadFailed(settings.worker_id, settings.model, str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - reported, then the worker exits
        events.put(WorkerLoadFailed(settings.worker_id, settings.model, f"{exc.__class__.__name__}: {exc}"))
        return
    events.put(WorkerReady(settings.worker_id, settings.model, _device_info(device)))

    edit_fn = edit_video
    caches: dict = {}  # the anchor cache of the split job this worker last ran a chunk of
    while True:
        task = tasks.get()
        if task is None:
            return
        outcome = run_task(
            task, pipelines, _QueueReporter(events, settings.worker_id, task),
            should_cancel=lambda: cancel_seq.value == task.seq, caches=caches, edit_fn=edit_fn,
        )
        events.put(JobFinished(settings.worker_id, task.seq, task.job_id, outcome, _device_info(device)))
