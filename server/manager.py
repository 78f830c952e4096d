"""The job manager: queue, dispatch, cancel and bookkeeping, with no gRPC in it.

The store is the source of truth; this class moves jobs through their states
(committing each change before telling anyone), hands queued jobs to the
worker backend in submission order, and wakes Watch streams when a job
changes. Live progress (step, frames, ETA) is kept in memory only: after a
restart a job starts over anyway.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable

from fairy_proto.v1.jobs import new_job_id

from . import admission
from .backend import WorkerBackend, WorkerStatus
from .config import ServerConfig
from .errors import AlreadyExistsError, NotFoundError, ResourceExhaustedError, UnavailableError
from .jobs import RUNNING_STATES, EditRequest, JobRecord, JobState, LiveProgress, Preview
from .messages import (
    JobBatchSize,
    JobFinished,
    JobOutcome,
    JobPhase,
    JobPreviews,
    JobProgress,
    JobTask,
    WorkerDied,
    WorkerEvent,
    WorkerHello,
    WorkerLoadFailed,
    WorkerReady,
)
from .splitting import SplitJob, parts_folder
from .store import JobStore, NewJob
from .uploads import UploadStore

__all__ = ["JobManager", "JobView", "JobSubscription"]

_log = logging.getLogger("fairy_server.jobs")
# How far a job has got, so the phases its parts report only move it forward.
_PHASE_ORDER = {JobState.QUEUED: 0, JobState.LOADING_MODEL: 1, JobState.ANCHORS: 2, JobState.FRAMES: 3, JobState.ENCODING: 4}
_MAX_ATTEMPTS = 3  # a job whose worker dies this many times fails instead of killing workers forever


@dataclasses.dataclass(frozen=True)
class JobView:
    """A job as clients see it: the stored record plus live progress."""

    record: JobRecord
    progress: LiveProgress
    previews: tuple[Preview, ...]
    queue_position: int


class JobSubscription:
    """Every state change of one job, in order, plus its latest progress (for WatchJob).

    Consecutive views in the same state are merged as they arrive, so a client
    that reads slowly holds at most one view per state, not one per step.
    """

    def __init__(self, manager: "JobManager", job_id: str):
        self.job_id = job_id
        self._manager = manager
        self._ready = threading.Condition()
        self._views: collections.deque[JobView] = collections.deque()
        self._closed = False

    def put(self, view: JobView | None) -> None:
        with self._ready:
            if view is None:
                self._closed = True
            elif self._views and self._views[-1].record.state == view.record.state:
                self._views[-1] = view
            else:
                self._views.append(view)
            self._ready.notify_all()

    def get(self, timeout: float) -> list[JobView] | None:
        """Views since the last call (waiting up to ``timeout`` for one); None once the server stops."""
        with self._ready:
            self._ready.wait_for(lambda: self._views or self._closed, timeout=timeout)
            if self._closed:
                return None
            views = list(self._views)
            self._views.clear()
            return views

    def close(self) -> None:
        self._manager._unsubscribe(self)

    def __enter__(self) -> "JobSubscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JobManager:
    def __init__(self, config: ServerConfig, store: JobStore, backend: WorkerBackend, uploads: UploadStore):
        self.config = config
        self.address = config.address  # the bound address once the server listens (port 0 resolved)
        self.store = store
        self.backend = backend
        self.uploads = uploads
        self._dispatch_lock = threading.RLock()
        self._subscribers_lock = threading.Lock()
        self._subscribers: dict[str, list[JobSubscription]] = {}
        self._live: dict[str, LiveProgress] = {}
        self._serving = False
        self._serving_listeners: list[Callable[[bool], None]] = []
        self._load_failures: dict[int, str] = {}
        self.fatal_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Jobs split across workers (more than one worker): their parts, and which task is which part's.
        self._splits: dict[str, SplitJob] = {}
        self._part_of: dict[int, str] = {}  # task seq -> job id
        self._task_seq = itertools.count(1 << 40)  # parts' task numbers, apart from the jobs' own
        self._requeue_interrupted("server restarted")

    def _requeue_interrupted(self, why: str) -> None:
        for record in self.store.requeue_interrupted():
            final = self.store.get(record.job_id)
            # A worker may have published just before it was stopped, without the
            # store hearing of it: only a DONE job owns a results folder.
            shutil.rmtree(self.config.results_path / record.job_id, ignore_errors=True)
            _log.info("job %s %s -> %s (%s)", record.job_id, record.state.value, final.state.value, why)
        self._clear_staging()
        # A queued job keeps the parts it finished (its anchors, its chunks); any other job's are of no use.
        for folder in self.config.results_path.glob(".parts-*"):
            record = self.store.get(folder.name.removeprefix(".parts-"))
            if record is None or record.state != JobState.QUEUED:
                shutil.rmtree(folder, ignore_errors=True)

    def _clear_staging(self, job_id: str = "*") -> None:
        """Remove what an interrupted render left (never visible as a result)."""
        for folder in self.config.results_path.glob(f".staging-{job_id}"):
            shutil.rmtree(folder, ignore_errors=True)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self.backend.launch()
        self._thread = threading.Thread(target=self._event_loop, name="fairy-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self.backend.close()
        # Jobs the workers were rendering start over at the next start; say so now.
        self._requeue_interrupted("server stopping")
        with self._subscribers_lock:
            subscriptions = [s for subs in self._subscribers.values() for s in subs]
        for subscription in subscriptions:
            subscription.put(None)

    def on_serving_change(self, listener: Callable[[bool], None]) -> None:
        self._serving_listeners.append(listener)
        listener(self._serving)

    @property
    def serving(self) -> bool:
        return self._serving

    def workers(self) -> list[WorkerStatus]:
        return self.backend.workers()

    # -- client calls ----------------------------------------------------------------

    @staticmethod
    def new_job_id() -> str:
        return new_job_id()

    def submit(self, request: EditRequest, request_bytes: bytes, fingerprint: str) -> tuple[JobView, bool]:
        """Queue ``request`` (or serve it from the cache); (job, created)."""
        admission.check_job_id(request.job_id)
        if self.fatal_error:
            raise UnavailableError(UnavailableError.NO_WORKER.format(reason=self.fatal_error))
        existing = self.store.get(request.job_id)
        if existing is not None:
            return self._same_job(existing, fingerprint), False
        if self.store.count_queued() >= self.config.limits.max_queued_jobs:
            raise ResourceExhaustedError(
                f"the queue is full ({self.config.limits.max_queued_jobs} jobs); wait for some to finish"
            )
        plan = admission.plan_edit(request, self.config, self.store, self.uploads)
        new = NewJob(request.job_id, request_bytes, fingerprint, plan, plan.model)
        cached = self.store.find_cached(plan.cache_key())
        if cached is not None:
            now = time.time()
            record, created = self.store.insert(
                new,
                state=JobState.DONE,
                cache_hit=1,
                started=now,
                finished=now,
                result_path=cached.result_path,
                sidecar_path=cached.sidecar_path,
                result_size=cached.result_size,
                batch_size=cached.batch_size,
                render_seconds=0.0,
            )
            if created:
                self.store.add_previews(record.job_id, self.store.previews(cached.job_id))
                _log.info("job %s submitted -> DONE (cache hit: result of job %s)", record.job_id, cached.job_id)
        else:
            record, created = self.store.insert(new)
            if created:
                _log.info("job %s submitted -> QUEUED (%d frames of %s)", record.job_id, plan.render_count, plan.source)
        if not created:
            return self._same_job(record, fingerprint), False
        self._notify(record.job_id)
        self._dispatch()
        return self.view(record.job_id), True

    def _same_job(self, existing: JobRecord, fingerprint: str) -> JobView:
        if existing.fingerprint != fingerprint:
            raise AlreadyExistsError(
                f"job {existing.job_id} already exists with a different request; choose another job_id"
            )
        return self.view(existing.job_id)

    def cancel(self, job_id: str) -> JobView:
        with self._dispatch_lock:  # no job is half-dispatched while we look
            record = self._require(job_id)
            if record.state == JobState.QUEUED:
                done = self.store.update(
                    job_id, expect=[JobState.QUEUED], state=JobState.CANCELLED, cancel_requested=1, finished=time.time()
                )
                if done is not None:
                    _log.info("job %s QUEUED -> CANCELLED", job_id)
            elif record.state.is_running and not record.cancel_requested:
                if self.store.update(job_id, expect=RUNNING_STATES, cancel_requested=1) is not None:
                    _log.info("job %s cancel requested while %s", job_id, record.state.value)
                    self.backend.cancel(job_id)  # every worker running one of its parts
                    split = self._splits.get(job_id)
                    if split is not None:
                        split.cancel()
                        if not split.inflight:
                            self._finish(job_id, JobOutcome(JobState.CANCELLED, record.batch_size))
        self._notify(job_id)
        return self.view(job_id)

    def _require(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise NotFoundError(f"no job {job_id!r} on this server")
        return record

    def view(self, job_id: str, *, with_previews: bool = True) -> JobView:
        record = self._require(job_id)
        return self._view(record, with_previews=with_previews)

    def _view(self, record: JobRecord, *, with_previews: bool) -> JobView:
        if record.state == JobState.DONE:
            progress = LiveProgress(fraction=1.0, eta_seconds=0.0)
        else:
            progress = self._live.get(record.job_id, LiveProgress())
        position = self.store.queue_position(record.seq) if record.state == JobState.QUEUED else 0
        previews = tuple(self.store.previews(record.job_id)) if with_previews else ()
        return JobView(record, progress, previews, position)

    def list(self, states: Iterable[JobState], limit: int) -> list[JobView]:
        return [self._view(r, with_previews=False) for r in self.store.list(states, limit)]

    # -- change notification (for Watch) -------------------------------------------

    def subscribe(self, job_id: str) -> JobSubscription:
        """Subscribe before reading the job's current state, so no change falls in between."""
        subscription = JobSubscription(self, job_id)
        with self._subscribers_lock:
            self._subscribers.setdefault(job_id, []).append(subscription)
        if self._stopping.is_set():
            subscription.put(None)
        return subscription

    def _unsubscribe(self, subscription: JobSubscription) -> None:
        with self._subscribers_lock:
            subs = self._subscribers.get(subscription.job_id, [])
            if subscription in subs:
                subs.remove(subscription)
            if not subs:
                self._subscribers.pop(subscription.job_id, None)

    def _notify(self, job_id: str) -> None:
        with self._subscribers_lock:
            subscriptions = list(self._subscribers.get(job_id, ()))
        if not subscriptions:
            return
        view = self.view(job_id)
        for subscription in subscriptions:
            subscription.put(view)

    # -- dispatch --------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Give free workers work. With one worker a job is one task; with more, a job is split into parts
        (the anchor pass, chunks of frames, the assembly). Fair share: a free worker takes a part of the
        running job that has the fewest workers on it (the oldest first), unless every running job with a
        part to give already has a worker and a job is waiting: then that job starts. So a short clip
        submitted after a long one starts as soon as a worker frees up, instead of after the whole clip."""
        with self._dispatch_lock:
            while not self._stopping.is_set() and self._has_free_worker():
                candidates = [s for s in self._splits.values() if s.pending]
                split = min(candidates, key=lambda s: (len(s.inflight), s.seq), default=None)
                queued = self.store.next_queued()
                if split is not None and (queued is None or not split.inflight):
                    if not self._start_part(split):
                        return
                elif queued is not None:
                    if not self._start_job(queued):
                        return
                else:
                    return

    def _split_jobs(self) -> bool:
        return sum(1 for w in self.backend.workers() if w.alive) > 1

    def _start_job(self, record: JobRecord) -> bool:
        started = self.store.mark_started(record.job_id, self.config.defaults.batch_size)
        if started is None:
            return True  # taken meanwhile: look again
        work_dir = parts_folder(self.config.results_path, record.job_id)
        split = SplitJob(record.job_id, started.seq, started.plan, work_dir) if self._split_jobs() else None
        if split is None:
            shutil.rmtree(work_dir, ignore_errors=True)  # split before a restart, whole now
            task = JobTask(started.seq, started.job_id, started.plan, started.batch_size,
                           str(self.config.results_path), server=self.address)
            if not self.backend.start(task):
                self.store.update(record.job_id, state=JobState.QUEUED, started=None, attempts=started.attempts - 1)
                return False
        else:
            self._splits[record.job_id] = split
            if not self._start_part(split):
                del self._splits[record.job_id]
                self.store.update(record.job_id, state=JobState.QUEUED, started=None, attempts=started.attempts - 1)
                return False
        self._live[record.job_id] = LiveProgress(eta_seconds=-1.0)
        if split is None or not split.resumed:
            self.store.clear_previews(record.job_id)
        _log.info("job %s QUEUED -> LOADING_MODEL (attempt %d%s)", record.job_id, started.attempts,
                  f", split: {len(split.pending) + len(split.inflight)} parts to go" if split else "")
        self._notify(record.job_id)
        return True

    def _start_part(self, split: SplitJob) -> bool:
        part = split.next_part()
        record = self.store.get(split.job_id)
        seq = next(self._task_seq)
        task = JobTask(seq, split.job_id, split.plan, record.batch_size or self.config.defaults.batch_size,
                       str(self.config.results_path), server=self.address, part=part.kind, chunk=part.chunk,
                       work_dir=str(split.work_dir))
        if not self.backend.start(task):
            split.not_started(part)
            return False
        split.started(seq, part)
        self._part_of[seq] = split.job_id
        return True

    def _has_free_worker(self) -> bool:
        return any(w.ready and w.running_job_id is None for w in self.backend.workers())

    def _event_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                event = self.backend.next_event(0.5)
                if event is not None:
                    self._handle(event)
            except Exception:  # keep dispatching whatever one event did
                _log.exception("error while handling a worker event")

    def _handle(self, event: WorkerEvent) -> None:
        if isinstance(event, JobProgress):
            self._on_progress(event)
        elif isinstance(event, JobPhase):
            record = self.store.get(event.job_id)
            if event.job_id in self._splits and record is not None and _PHASE_ORDER.get(event.state, 0) <= _PHASE_ORDER.get(record.state, 0):
                pass  # parts report their own phases; the job's only moves forward
            elif record is not None and record.state != event.state:
                if self.store.update(event.job_id, expect=RUNNING_STATES, state=event.state) is not None:
                    _log.info("job %s %s -> %s", event.job_id, record.state.value, event.state.value)
            self._notify(event.job_id)
        elif isinstance(event, JobPreviews):
            self.store.add_previews(event.job_id, event.previews)
            self._notify(event.job_id)
        elif isinstance(event, JobBatchSize):
            self.store.update(event.job_id, expect=RUNNING_STATES, batch_size=event.batch_size)
            if event.job_id not in self._splits:
                self._live[event.job_id] = LiveProgress()  # the render starts over (a part only goes on smaller)
            _log.info("job %s out of memory: frame batch now %d", event.job_id, event.batch_size)
            self._notify(event.job_id)
        elif isinstance(event, JobFinished):
            if event.seq in self._part_of:
                self._on_part_finished(event)
            elif event.job_id in self._splits:
                pass  # a part's report that came after its worker was counted dead: the part was handed on
            else:
                self._on_finished(event)
            self._dispatch()
        elif isinstance(event, WorkerHello):
            _log.info("worker %d on %s (%s)", event.worker_id, event.device.name, event.device.description)
        elif isinstance(event, WorkerReady):
            _log.info("worker %d ready: model %s loaded on %s", event.worker_id, event.model, event.device.name)
            self._load_failures.pop(event.worker_id, None)
            self._update_serving()
            self._dispatch()
        elif isinstance(event, WorkerLoadFailed):
            _log.error("worker %d cannot load model %s: %s", event.worker_id, event.model, event.message)
            self._load_failures[event.worker_id] = event.message
            self._update_serving()
            if not self._serving:
                self.fatal_error = f"model {event.model} could not be loaded: {event.message}"
        elif isinstance(event, WorkerDied):
            self._on_worker_died(event)
            self._update_serving()
            if not any(w.alive for w in self.backend.workers()):
                reason = next(iter(self._load_failures.values()), f"exit code {event.exitcode}")
                self.fatal_error = f"no worker process is left ({reason})"
            self._dispatch()

    def _on_progress(self, event: JobProgress) -> None:
        record = self.store.get(event.job_id)
        if record is None or not record.state.is_running:
            return
        split = self._splits.get(event.job_id)
        if split is not None:  # the sum over every worker on the job
            split.progress(event.seq, event.step, event.total_steps, event.frames_done)
            event = dataclasses.replace(event, frames_done=split.frames(), total_frames=split.plan.render_count,
                                        fraction=split.fraction())
        # Never backwards within an attempt, whatever the phase weights say.
        fraction = max(event.fraction, self._live.get(event.job_id, LiveProgress()).fraction)
        eta = -1.0
        if record.started and fraction >= 0.02:
            elapsed = max(0.0, time.time() - record.started)
            eta = elapsed * (1.0 - fraction) / fraction
        self._live[event.job_id] = LiveProgress(
            event.step, event.total_steps, event.frames_done, event.total_frames, fraction, round(eta, 2)
        )
        self._notify(event.job_id)

    def _on_part_finished(self, event: JobFinished) -> None:
        job_id = self._part_of.pop(event.seq)
        split = self._splits.get(job_id)
        record = self.store.get(job_id)
        if split is None or record is None or not record.state.is_running:
            return  # the job ended meanwhile (another part failed, or it was cancelled)
        outcome = event.outcome
        if outcome.state == JobState.DONE:
            if split.part_done(event.seq):
                self._finish(job_id, outcome)
        elif outcome.state == JobState.CANCELLED and not record.cancel_requested:
            split.part_lost(event.seq)  # stopped for another reason (the server is stopping): redo it
        elif outcome.state == JobState.CANCELLED:
            split.inflight.pop(event.seq, None)
            if not split.inflight:
                self._finish(job_id, outcome)
        else:  # FAILED: the job fails with the part's reason; its other parts stop
            self.backend.cancel(job_id)
            self._finish(job_id, outcome)

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        """A split job's end: the same bookkeeping as a whole job's, then its parts go."""
        self._on_finished(JobFinished(-1, -1, job_id, outcome))
        self._splits.pop(job_id, None)
        shutil.rmtree(parts_folder(self.config.results_path, job_id), ignore_errors=True)

    def _on_finished(self, event: JobFinished) -> None:
        outcome = event.outcome
        record = self.store.get(event.job_id)
        if record is None or not record.state.is_running:
            return
        state = outcome.state
        fields = dict(finished=time.time(), batch_size=outcome.batch_size)
        if state == JobState.DONE and record.cancel_requested:
            # Finished before the worker saw the cancel: honour the cancel, publish nothing.
            shutil.rmtree(self.config.results_path / record.job_id, ignore_errors=True)
            state = JobState.CANCELLED
        if state == JobState.DONE:
            fields.update(
                result_path=outcome.result_path, sidecar_path=outcome.sidecar_path, result_size=outcome.result_size,
                render_seconds=outcome.render_seconds,
            )
        elif state == JobState.FAILED:
            fields.update(error_message=outcome.error_message, error_code=outcome.error_code)
        if self.store.update(event.job_id, expect=RUNNING_STATES, state=state, **fields) is not None:
            detail = f": {outcome.error_code} {outcome.error_message}" if state == JobState.FAILED else ""
            _log.info("job %s %s -> %s%s", event.job_id, record.state.value, state.value, detail)
        self._live.pop(event.job_id, None)
        self._notify(event.job_id)

    def _on_worker_died(self, event: WorkerDied) -> None:
        _log.error("worker %d died (exit code %s)", event.worker_id, event.exitcode)
        if event.job_id is None:
            return
        if event.seq in self._part_of:
            self._on_part_lost(event)
            return
        record = self.store.get(event.job_id)
        if record is None or not record.state.is_running:
            return
        now = time.time()
        if record.cancel_requested:
            new = self.store.update(record.job_id, expect=RUNNING_STATES, state=JobState.CANCELLED, finished=now)
        elif record.attempts >= _MAX_ATTEMPTS:
            new = self.store.update(
                record.job_id, expect=RUNNING_STATES, state=JobState.FAILED, finished=now, error_code="INTERNAL",
                error_message=f"the worker process died {record.attempts} times running this job",
            )
        else:
            new = self.store.update(record.job_id, expect=RUNNING_STATES, state=JobState.QUEUED, started=None)
        if new is not None:
            _log.info("job %s %s -> %s (worker died)", record.job_id, record.state.value, new.state.value)
            shutil.rmtree(self.config.results_path / record.job_id, ignore_errors=True)
        self._clear_staging(record.job_id)
        self._live.pop(record.job_id, None)
        self._notify(record.job_id)

    def _on_part_lost(self, event: WorkerDied) -> None:
        """The worker running a part died: another worker redoes that part (finished parts stay done)."""
        job_id = self._part_of.pop(event.seq)
        split = self._splits.get(job_id)
        record = self.store.get(job_id)
        if split is None or record is None or not record.state.is_running:
            return
        part = split.part_lost(event.seq)
        _log.info("job %s: the worker running its %s part died; the part waits for another", job_id, part.kind)
        if record.cancel_requested:
            split.cancel()
            if not split.inflight:
                self._finish(job_id, JobOutcome(JobState.CANCELLED, record.batch_size))
        elif part.deaths >= _MAX_ATTEMPTS:
            self.backend.cancel(job_id)
            self._finish(job_id, JobOutcome(JobState.FAILED, record.batch_size, error_code="INTERNAL",
                                            error_message=f"a worker process died {part.deaths} times running part of this job"))

    def _update_serving(self) -> None:
        serving = any(w.ready for w in self.backend.workers())
        if serving != self._serving:
            self._serving = serving
            _log.info("health: %s", "SERVING" if serving else "NOT_SERVING")
            for listener in self._serving_listeners:
                listener(serving)
