"""Workers as Ray actors: the same backend interface as local processes, across the machines of a cluster.

``fairy-server --backend ray --ray-address ADDRESS`` connects to a running cluster (``auto``: the one
``ray start --head`` started on this machine; ``local``: a private one started for this server) and creates
one actor per worker: ``--devices auto`` makes one per GPU of the cluster (``num_gpus=1``), or one CPU actor
when it has none; ``--devices cpu,cpu`` makes CPU actors of ``--ray-worker-cpus`` cores each; every
``cuda`` entry is one GPU actor (Ray picks the GPU). The job manager cannot tell the difference: it gets the
same events (``fairy_server.messages``) from a Ray queue that a local worker sends through a pipe, so the
durable queue, progress, previews, cancel, the result cache and the splitting of a job across workers all
hold as they are.

What travels how: tasks and events through Ray; the anchor cache of a split job through Ray's object store
(the anchor pass returns it, every chunk of the job is handed the object; a chunk worker on another node
recomputes it instead when that is quicker, see ``splitting.choose_cache_route``); media, uploads, results
and the parts of split jobs through the paths the server and the nodes share. The server's process never
fetches a cache, so it still never imports torch.

Ray is optional (``pip install "fairy-editor[ray]"``); it is imported only here.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time

from .backend import WorkerStatus, poll_events
from .messages import (DeviceInfo, JobFinished, JobOutcome, JobTask, WorkerDied, WorkerEvent, WorkerHello,
                       WorkerLoadFailed, WorkerReady)
from .jobs import JobState
from .ray_worker import NETWORK_BYTES_PER_SECOND, RayWorker
from .worker import WorkerSettings

__all__ = ["RayBackend", "RAY_MISSING"]

RAY_MISSING = '--backend ray needs Ray, which is not installed: pip install "fairy-editor[ray]"'

_log = logging.getLogger("fairy_server.ray_backend")
_MAX_RESPAWNS = 5
_CACHED_JOBS = 4  # anchor caches the backend keeps alive in the object store (one per split job running)
_PLACEMENT_WARNING_SECONDS = 60.0


def _check_reachable(ray, address: str, timeout: float = 5.0) -> None:
    """Refuse at once a head that does not answer: ``ray.init`` would wait for it for ever."""
    if address == "local" or address.startswith("ray://"):
        return  # a cluster of our own; Ray Client has a timeout of its own
    head = address
    if address == "auto":
        try:  # the cluster `ray start` recorded on this machine (Ray's own lookup; None when there is none)
            head = ray._private.services.canonicalize_bootstrap_address("auto")
        except Exception:  # noqa: BLE001 - a private helper that may move: let ray.init look
            return
        if not head:
            raise RuntimeError("cannot reach the Ray cluster at auto: no Ray cluster runs on this machine "
                               "(start one with `ray start --head`, or pass --ray-address HOST:PORT)")
    host, _, port = head.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: nothing answers at {head} ({exc})") from None


@dataclasses.dataclass
class _Actor:
    worker_id: int
    device: str  # "cpu" or "cuda"
    handle: object
    boot: object  # ObjectRef of boot(): (pid, node id, host)
    spawned: float
    booted: bool = False
    pid: int | None = None
    host: str = ""
    info: DeviceInfo | None = None
    ready: bool = False
    running: JobTask | None = None
    status: object | None = None  # ObjectRef of the running task's first return
    models: tuple[str, ...] = ()
    dead: bool = False
    warned: bool = False


class RayBackend:
    """One Ray actor per worker; see the module's docstring."""

    def __init__(self, model: str, address: str = "auto", devices: str = "auto", *, pipelines_per_worker: int = 2,
                 log_level: int = logging.INFO, worker_cpus: int = 1,
                 network_bytes_per_second: float = NETWORK_BYTES_PER_SECOND):
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise RuntimeError(RAY_MISSING) from None
        if worker_cpus < 1:
            raise ValueError("--ray-worker-cpus must be at least 1")
        self._ray = ray
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            _check_reachable(ray, address)
            try:
                if address == "local":
                    ray.init(include_dashboard=False, log_to_driver=True)
                else:
                    ray.init(address=address, log_to_driver=True)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError, Ray's own
                first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
                raise RuntimeError(f"cannot reach the Ray cluster at {address}: {first_line}") from None
        self._devices = self._device_list(devices)
        self._model = model
        self._pipelines_per_worker = pipelines_per_worker
        self._log_level = log_level
        self._worker_cpus = worker_cpus
        self._network = network_bytes_per_second
        self._events = Queue(actor_options={"num_cpus": 0})
        self._actor_class = ray.remote(RayWorker)
        self._lock = threading.Lock()
        self._workers: dict[int, _Actor] = {}
        self._caches: dict[str, object] = {}  # job id -> ObjectRef of its anchor cache
        self._anchor_refs: dict[int, tuple[str, object]] = {}  # seq of a running anchor pass -> (job, ref)
        self._respawns = 0
        self._closed = False

    def _device_list(self, devices: str) -> list[str]:
        if devices == "auto":
            gpus = int(self._ray.cluster_resources().get("GPU", 0))
            return ["cuda"] * gpus or ["cpu"]
        entries = [d.strip() for d in devices.split(",") if d.strip()]
        bad = [d for d in entries if d != "cpu" and not d.startswith("cuda")]
        if not entries or bad:
            raise ValueError(f"--devices for the Ray backend is \"auto\" or a list of cpu and cuda entries, got {devices!r}")
        return ["cpu" if d == "cpu" else "cuda" for d in entries]

    # -- lifecycle ---------------------------------------------------------------

    def launch(self) -> None:
        resources = self._ray.cluster_resources()
        _log.info("Ray cluster: %d CPUs, %d GPUs; %d workers (%s)", resources.get("CPU", 0), resources.get("GPU", 0),
                  len(self._devices), ", ".join(self._devices))
        with self._lock:
            for worker_id, device in enumerate(self._devices):
                self._spawn(worker_id, device)

    def _spawn(self, worker_id: int, device: str) -> None:
        settings = WorkerSettings(worker_id, device, self._model, self._pipelines_per_worker, self._log_level)
        resources = dict(num_gpus=1, num_cpus=1) if device == "cuda" else dict(num_cpus=self._worker_cpus)
        # Threaded (max_concurrency), so cancel() runs while run() renders.
        handle = self._actor_class.options(max_concurrency=4, **resources).remote(settings, self._events, self._network)
        self._workers[worker_id] = _Actor(worker_id, device, handle, handle.boot.remote(), time.monotonic())

    def close(self) -> None:
        ray = self._ray
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            for w in workers:
                if w.running is not None and not w.dead:  # stop at the next denoising step; nothing is published
                    w.handle.cancel.remote(w.running.seq)
        running = [w.status for w in workers if w.status is not None and w.running is not None]
        if running:
            ray.wait(running, num_returns=len(running), timeout=3.0)
        for w in workers:
            try:
                ray.kill(w.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._caches.clear()
        try:
            self._events.shutdown()
        except Exception:  # noqa: BLE001
            pass
        if self._owns_connection:
            ray.shutdown()

    # -- jobs --------------------------------------------------------------------

    def start(self, task: JobTask) -> bool:
        with self._lock:
            for w in sorted(self._workers.values(), key=lambda w: (task.plan.model not in w.models, w.worker_id)):
                if w.ready and not w.dead and w.running is None:
                    box = [self._caches[task.job_id]] if task.part == "chunk" and task.job_id in self._caches else []
                    status, cache = w.handle.run.options(num_returns=2).remote(task, box)
                    w.running, w.status = task, status
                    if task.part == "anchors":
                        self._anchor_refs[task.seq] = (task.job_id, cache)
                    return True
        return False

    def cancel(self, job_id: str) -> None:
        with self._lock:
            for w in self._workers.values():
                if w.running is not None and w.running.job_id == job_id and not w.dead:
                    w.handle.cancel.remote(w.running.seq)
            self._caches.pop(job_id, None)

    def workers(self) -> list[WorkerStatus]:
        with self._lock:
            return [
                WorkerStatus(w.worker_id, w.info, w.ready and not w.dead, w.running.job_id if w.running else None,
                             w.models, alive=not w.dead, pid=w.pid)
                for w in sorted(self._workers.values(), key=lambda w: w.worker_id)
            ]

    # -- events ------------------------------------------------------------------

    def next_event(self, timeout: float) -> WorkerEvent | None:
        from ray.util.queue import Empty

        # Any other error of the queue's: it is gone (closing).
        return poll_events(lambda wait: self._events.get(block=True, timeout=wait), Empty, (Exception,),
                           self._check_actors, self._account, timeout)

    def _account(self, event: WorkerEvent) -> None:
        with self._lock:
            w = self._workers.get(event.worker_id)
            if w is None:
                return
            if isinstance(event, WorkerReady):
                w.ready, w.info, w.models = True, event.device, (event.model,)
            elif isinstance(event, WorkerLoadFailed):
                w.ready = False
            elif isinstance(event, JobFinished):
                if w.running is not None and w.running.seq == event.seq:
                    w.models = tuple(dict.fromkeys((w.running.plan.model, *w.models)))[: self._pipelines_per_worker]
                    part = w.running.part
                    w.running, w.status = None, None
                    self._after_part(event, part)
                if event.device is not None:
                    w.info = event.device
            elif isinstance(event, WorkerHello):
                w.info = event.device

    def _after_part(self, event: JobFinished, part: str) -> None:
        job_ref = self._anchor_refs.pop(event.seq, None)
        if part == "anchors" and job_ref is not None and event.outcome.state == JobState.DONE:
            self._caches[event.job_id] = job_ref[1]
            while len(self._caches) > _CACHED_JOBS:
                self._caches.pop(next(iter(self._caches)))
        elif part == "assemble":
            self._caches.pop(event.job_id, None)

    def _check_actors(self) -> WorkerEvent | None:
        """A finished boot, or a task or boot that ended in an error: the actor died (WorkerDied, and a fresh
        actor takes its place) or the task raised before reporting (a failed JobFinished)."""
        ray = self._ray
        with self._lock:
            for w in list(self._workers.values()):
                if w.dead:
                    continue
                if not w.booted:
                    ready, _ = ray.wait([w.boot], timeout=0, fetch_local=False)
                    if not ready:
                        self._warn_if_unplaced(w)
                        continue
                    try:
                        w.pid, _node, w.host = ray.get(w.boot)
                        w.booted = True
                        _log.info("worker %d is Ray actor pid %d on %s", w.worker_id, w.pid, w.host)
                    except ray.exceptions.RayActorError as exc:
                        return self._died(w, exc)
                    except Exception as exc:  # noqa: BLE001 - boot raised: the worker cannot load anything
                        return WorkerLoadFailed(w.worker_id, self._model, f"{exc.__class__.__name__}: {exc}"[:500])
                if w.running is None or w.status is None:
                    continue
                ready, _ = ray.wait([w.status], timeout=0, fetch_local=False)
                if not ready:
                    continue
                try:
                    ray.get(w.status)
                except ray.exceptions.ActorUnavailableError:
                    continue  # unreachable for now; Ray reports death separately
                except ray.exceptions.RayActorError as exc:
                    return self._died(w, exc)
                except Exception as exc:  # noqa: BLE001 - run() raised before it could report
                    task = w.running
                    message = f"internal error in the Ray worker: {exc.__class__.__name__}: {exc}"[:500]
                    return JobFinished(w.worker_id, task.seq, task.job_id,
                                       JobOutcome(JobState.FAILED, task.batch_size, error_message=message,
                                                  error_code="INTERNAL"))
        return None

    def _died(self, w: _Actor, exc: BaseException) -> WorkerDied:
        w.dead = True
        task, w.running, w.status = w.running, None, None
        if task is not None:
            self._anchor_refs.pop(task.seq, None)
        _log.error("worker %d (Ray actor on %s) died: %s", w.worker_id, w.host or "a node",
                   (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300])
        if not self._closed and w.ready and self._respawns < _MAX_RESPAWNS:
            self._respawns += 1  # one that loaded its model once gets a fresh actor
            del self._workers[w.worker_id]
            self._spawn(w.worker_id, w.device)
        return WorkerDied(w.worker_id, task.seq if task else None, task.job_id if task else None, None)

    def _warn_if_unplaced(self, w: _Actor) -> None:
        if w.warned or time.monotonic() - w.spawned < _PLACEMENT_WARNING_SECONDS:
            return
        w.warned = True
        need = "1 GPU" if w.device == "cuda" else f"{self._worker_cpus} CPU"
        _log.warning("worker %d is still waiting for Ray to place it (it needs %s; the cluster has %s free)",
                     w.worker_id, need, self._ray.available_resources())
