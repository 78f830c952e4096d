"""How the server reaches its workers: one narrow interface, and the local implementation.

The job manager only calls ``launch``, ``start(task)``, ``cancel(job_id)``,
``next_event(timeout)``, ``workers`` and ``close``. Local worker processes live
here; Ray actors in ``fairy_server.ray_backend``. Both run
``fairy_server.work.run_task`` and send the same messages (``fairy_server.messages``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .messages import DeviceInfo, JobFinished, JobTask, WorkerDied, WorkerEvent, WorkerHello, WorkerLoadFailed, WorkerReady
from .worker import WorkerSettings, worker_main

__all__ = ["WorkerBackend", "LocalProcessBackend", "WorkerStatus", "poll_events"]

_log = logging.getLogger("fairy_server.backend")
_NO_JOB = -1
_MAX_RESPAWNS = 5


def poll_events(get: Callable[[float], WorkerEvent], empty: type[BaseException], closed: tuple[type[BaseException], ...],
                check: Callable[[], WorkerEvent | None], account: Callable[[WorkerEvent], None],
                timeout: float) -> WorkerEvent | None:
    """A backend's ``next_event``: the next event ``get(wait)`` gives (``empty`` raised when none came in time),
    else what ``check()`` finds (a worker that died) while the queue is empty, so a dead worker's last events
    are read first; ``account`` sees each event before the manager; None after ``timeout`` or once the
    queue is closed (``closed`` raised)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            event = get(max(0.01, min(0.2, deadline - time.monotonic())))
        except empty:
            event = check()
        except closed:
            return None
        if event is not None:
            account(event)
            return event
        if time.monotonic() >= deadline:
            return None


@dataclasses.dataclass(frozen=True)
class WorkerStatus:
    worker_id: int
    device: DeviceInfo | None
    ready: bool
    running_job_id: str | None
    loaded_models: tuple[str, ...]
    alive: bool = True
    pid: int | None = None


class WorkerBackend(Protocol):
    def launch(self) -> None:
        """Start the workers (returns at once; each reports WorkerReady when its model is loaded)."""

    def start(self, task: JobTask) -> bool:
        """Give ``task`` to a free, ready worker; False when there is none."""

    def cancel(self, job_id: str) -> None:
        """Ask the worker running ``job_id`` to stop between denoising steps."""

    def next_event(self, timeout: float) -> WorkerEvent | None:
        """The next event from any worker (including WorkerDied), or None after ``timeout``."""

    def workers(self) -> list[WorkerStatus]: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class _Worker:
    worker_id: int
    device: str
    process: multiprocessing.process.BaseProcess
    tasks: object
    cancel_seq: object
    info: DeviceInfo | None = None
    ready: bool = False
    running: JobTask | None = None
    models: tuple[str, ...] = ()
    dead: bool = False


class LocalProcessBackend:
    """Worker processes on this machine (multiprocessing, "spawn" start method)."""

    def __init__(self, model: str, devices: str = "auto", *, pipelines_per_worker: int = 2, log_level: int = logging.INFO):
        self._ctx = multiprocessing.get_context("spawn")
        self._model = model
        self._devices = devices
        self._pipelines_per_worker = pipelines_per_worker
        self._log_level = log_level
        self._events = self._ctx.Queue()
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._respawns = 0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    def launch(self) -> None:
        if self._devices in ("auto", "cpu"):
            self._spawn(0, self._devices)  # "auto" reports the CUDA device count; the rest follow
        else:
            for i, device in enumerate(d.strip() for d in self._devices.split(",")):
                self._spawn(i, device)

    def _spawn(self, worker_id: int, device: str) -> None:
        settings = WorkerSettings(worker_id, device, self._model, self._pipelines_per_worker, self._log_level)
        tasks = self._ctx.Queue()
        cancel_seq = self._ctx.Value("q", _NO_JOB)
        process = self._ctx.Process(
            target=worker_main, args=(settings, tasks, self._events, cancel_seq), name=f"fairy-worker-{worker_id}", daemon=True
        )
        process.start()
        _log.info("worker %d started (pid %d, device %s)", worker_id, process.pid, device)
        self._workers[worker_id] = _Worker(worker_id, device, process, tasks, cancel_seq)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        for w in workers:
            try:
                if w.running is not None:  # stop at the next denoising step; nothing is published
                    w.cancel_seq.value = w.running.seq
                w.tasks.put(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 3
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(2)

    # -- jobs --------------------------------------------------------------------

    def start(self, task: JobTask) -> bool:
        with self._lock:
            for w in sorted(self._workers.values(), key=lambda w: (task.plan.model not in w.models, w.worker_id)):
                if w.ready and not w.dead and w.running is None:
                    w.running = task
                    w.tasks.put(task)
                    return True
        return False

    def cancel(self, job_id: str) -> None:
        with self._lock:
            for w in self._workers.values():
                if w.running is not None and w.running.job_id == job_id:
                    w.cancel_seq.value = w.running.seq

    def workers(self) -> list[WorkerStatus]:
        with self._lock:
            return [
                WorkerStatus(
                    w.worker_id, w.info, w.ready and not w.dead, w.running.job_id if w.running else None, w.models,
                    alive=not w.dead, pid=w.process.pid,
                )
                for w in sorted(self._workers.values(), key=lambda w: w.worker_id)
            ]

    # -- events ------------------------------------------------------------------

    def next_event(self, timeout: float) -> WorkerEvent | None:
        return poll_events(lambda wait: self._events.get(timeout=wait), queue.Empty, (OSError, ValueError, EOFError),
                           self._check_dead, self._account, timeout)

    def _account(self, event: WorkerEvent) -> None:
        with self._lock:
            w = self._workers.get(event.worker_id)
            if w is None:
                return
            if isinstance(event, WorkerHello):
                w.info = event.device
                if w.device == "auto" and event.cuda_count > 1 and not self._closed:
                    for i in range(1, event.cuda_count):
                        if i not in self._workers:
                            self._spawn(i, f"cuda:{i}")
            elif isinstance(event, WorkerReady):
                w.ready, w.info = True, event.device
                w.models = (event.model,)
            elif isinstance(event, WorkerLoadFailed):
                w.ready = False
            elif isinstance(event, JobFinished):
                if w.running is not None and w.running.seq == event.seq:
                    model = w.running.plan.model
                    w.models = tuple(dict.fromkeys((model, *w.models)))[: self._pipelines_per_worker]
                    w.running = None
                    w.cancel_seq.value = _NO_JOB
                if event.device is not None:
                    w.info = event.device

    def _check_dead(self) -> WorkerEvent | None:
        with self._lock:
            for w in self._workers.values():
                if w.dead or w.process.is_alive():
                    continue
                w.dead = True
                task, w.running = w.running, None
                _log.error("worker %d exited (code %s)", w.worker_id, w.process.exitcode)
                if not self._closed and w.ready and self._respawns < _MAX_RESPAWNS:
                    # A worker that loaded its model once and then crashed gets a fresh process.
                    self._respawns += 1
                    del self._workers[w.worker_id]
                    self._spawn(w.worker_id, w.device)
                return WorkerDied(w.worker_id, task.seq if task else None, task.job_id if task else None, w.process.exitcode)
        return None
