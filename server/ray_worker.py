"""A worker as a Ray actor: the local worker process's job loop, run inside a Ray cluster.

The backend (``fairy_server.ray_backend``) wraps :class:`RayWorker` with ``ray.remote`` (one actor per GPU,
``num_gpus=1``, or per CPU worker) and calls ``boot`` once, then ``run`` for every task. The actor reports
through a Ray queue with the same messages a local worker sends (``fairy_server.messages``), its last one
for a task being ``JobFinished``. It is a threaded actor, so ``cancel`` reaches it while ``run`` renders.

Media, uploads, results and the parts of split jobs are read and written through the paths the server
sees: every node must mount them at the same paths. A task whose paths this node does not see fails at
once with a message naming the node. The anchor cache of a split job travels through Ray's object store:
``run`` returns it after the anchor pass, and the backend hands that object to every chunk of the job.
"""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import sys

from .jobs import JobState
from .messages import JobFinished, JobOutcome, JobTask, WorkerHello, WorkerLoadFailed, WorkerReady
from .worker import WorkerSettings, _device_info, _QueueReporter

__all__ = ["RayWorker", "NETWORK_BYTES_PER_SECOND"]

_log = logging.getLogger("fairy_server.ray_worker")
_NO_JOB = -1
# The bandwidth assumed between two nodes when choosing to ship an anchor cache or recompute it: 10 GbE.
NETWORK_BYTES_PER_SECOND = 1.25e9
_CACHE_GET_TIMEOUT = 600.0


class RayWorker:
    """One worker of a Ray backend (an actor)."""

    def __init__(self, settings: WorkerSettings, events, network_bytes_per_second: float = NETWORK_BYTES_PER_SECOND):
        self._settings = settings
        self._events = events
        self._network = network_bytes_per_second
        self._cancel_seq = _NO_JOB
        self._caches: dict = {}
        self._pipelines = None
        self._device = "cpu"

    def boot(self) -> tuple[int, str, str]:
        """Find the device, load the default model, report WorkerHello and then WorkerReady or
        WorkerLoadFailed. Returns this actor's (pid, node id, host name)."""
        import ray
        import torch

        logging.basicConfig(level=self._settings.log_level, stream=sys.stderr,
                            format=f"%(asctime)s %(levelname)s worker{self._settings.worker_id} %(message)s")
        from fairy.loading import load_pipeline

        from .work import PipelineCache

        worker_id = self._settings.worker_id
        # Ray gives a GPU actor its own device as the only visible one; a CPU actor the cores it asked for.
        self._device = "cuda:0" if self._settings.device.startswith("cuda") else "cpu"
        if self._device == "cpu":
            cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
            torch.set_num_threads(max(1, cpus))
        node = (os.getpid(), ray.get_runtime_context().get_node_id(), socket.gethostname())
        self._events.put(WorkerHello(worker_id, _device_info(self._device), 0))

        def free_memory() -> None:
            if self._device.startswith("cuda"):
                torch.cuda.empty_cache()

        self._pipelines = PipelineCache(lambda model: load_pipeline(model, device=self._device),
                                        self._settings.pipelines_per_worker, free_memory)
        try:
            self._pipelines.get(self._settings.model)
        except Exception as exc:  # noqa: BLE001 - reported; the backend treats the worker as not ready
            self._pipelines = None
            self._events.put(WorkerLoadFailed(worker_id, self._settings.model,
                                              f"on {node[2]}: {exc.__class__.__name__}: {exc}"))
            return node
        self._events.put(WorkerReady(worker_id, self._settings.model, _device_info(self._device)))
        return node

    def cancel(self, seq: int) -> None:
        self._cancel_seq = seq

    def run(self, task: JobTask, cache_box: list) -> tuple[str, object]:
        """Run one task and report JobFinished. Returns (its state, the anchor cache after an anchor pass (on
        the CPU, for the object store) or None); the backend calls it with two returns, so the server only
        ever fetches the first. ``cache_box``: [the anchor pass's cache object] or []; boxed, so Ray hands
        the reference over rather than fetching it before the task can choose."""
        from .work import run_task

        worker_id = self._settings.worker_id
        missing = self._missing_paths(task)
        if missing:
            outcome = JobOutcome(
                JobState.FAILED, task.batch_size, error_code="FAILED_PRECONDITION",
                error_message=f"{missing} is not visible on Ray node {socket.gethostname()}: every node must see "
                              "the server's media, data and results folders at the same paths",
            )  # fmt: skip
        else:
            outcome = run_task(
                task, self._pipelines, _QueueReporter(self._events, worker_id, task),
                should_cancel=lambda: self._cancel_seq == task.seq, caches=self._caches,
                get_cache=lambda t, edit, pipe, cancel: self._fetch_cache(t, edit, pipe, cancel, cache_box),
            )  # fmt: skip
        self._events.put(JobFinished(worker_id, task.seq, task.job_id, outcome, _device_info(self._device)))
        if task.part == "anchors" and outcome.state == JobState.DONE:
            cache = self._caches.get(task.job_id)
            return outcome.state.value, None if cache is None else _on_cpu(cache)
        return outcome.state.value, None

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _missing_paths(task: JobTask) -> str | None:
        if not pathlib.Path(task.plan.source).is_file():
            return f"the media {task.plan.source}"
        if not pathlib.Path(task.results_dir).is_dir():
            return f"the results folder {task.results_dir}"
        if task.part in ("chunk", "assemble") and not pathlib.Path(task.work_dir).is_dir():
            return f"the job's parts folder {task.work_dir}"
        return None

    def _fetch_cache(self, task: JobTask, edit, pipe, should_cancel, cache_box: list):
        """The anchor cache from the object store when shipping it beats recomputing it, else recomputed;
        the saved file in the parts folder when the object is gone (a server restart, a lost node)."""
        import ray
        from fairy import chunked

        from .splitting import SAME_MACHINE_BYTES_PER_SECOND
        from .work import load_or_recompute_cache

        if not cache_box:
            return load_or_recompute_cache(task, edit, pipe, should_cancel)
        ref = cache_box[0]
        try:
            nodes = ray.experimental.get_object_locations([ref]).get(ref, {}).get("node_ids", [])
        except Exception:  # noqa: BLE001 - an estimate only
            nodes = []
        local = ray.get_runtime_context().get_node_id() in nodes
        device = getattr(pipe, "device", "cpu")

        def from_object_store():
            try:
                cache = ray.get(ref, timeout=_CACHE_GET_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - the saved copy stands in
                _log.warning("job %s: the anchor cache is not in the object store (%s); loading the saved one",
                             task.job_id, exc.__class__.__name__)
                return chunked.load_cache(task.work_dir, device=device)
            return cache.to(device) if cache is not None else None

        return load_or_recompute_cache(
            task, edit, pipe, should_cancel, ship=from_object_store,
            bytes_per_second=SAME_MACHINE_BYTES_PER_SECOND if local else self._network,
            where="this node's object store" if local else "another node's object store",
        )  # fmt: skip


def _on_cpu(cache):
    """The cache with its tensors on the CPU (the object store keeps host memory); the worker's own copy
    stays on its GPU for its next chunks."""
    import copy

    if not _on_gpu(cache):
        return cache
    moved = copy.copy(cache)
    moved.entries = dict(cache.entries)  # AnchorCache.to replaces entries in place
    return moved.to("cpu")


def _on_gpu(cache) -> bool:
    for value in cache.entries.values():
        tensor = value[0] if isinstance(value, tuple) else value
        return tensor.device.type != "cpu"
    return False
