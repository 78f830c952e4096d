"""The job manager against a scripted worker backend (the narrow WorkerBackend interface).

The real backend is exercised by the other server tests; this one drives the
rarer paths deterministically: health before and after the model loads, a
worker that keeps dying on a job, and a cancel that loses the race with the end
of the render.
"""

from __future__ import annotations

import queue
import time

import pytest

from fairy_server.backend import WorkerStatus
from fairy_server.config import ServerConfig
from fairy_server.jobs import EditRequest, JobState
from fairy_server.manager import JobManager
from fairy_server.messages import DeviceInfo, JobFinished, JobOutcome, JobPhase, WorkerDied, WorkerReady
from fairy_server.store import JobStore
from fairy_server.uploads import UploadStore

CPU = DeviceInfo("cpu", "cpu")


class ScriptedBackend:
    """Takes jobs like a single worker; the test decides what the worker reports."""

    def __init__(self):
        self.script: queue.Queue = queue.Queue()
        self.ready = False
        self.alive = True
        self.running = None
        self.started = []
        self.cancelled = []

    def launch(self):
        pass

    def start(self, task):
        if not self.ready or self.running is not None:
            return False
        self.running = task
        self.started.append(task.job_id)
        return True

    def cancel(self, job_id):
        self.cancelled.append(job_id)

    def next_event(self, timeout):
        try:
            event = self.script.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(event, WorkerReady):
            self.ready = True
        elif isinstance(event, (JobFinished, WorkerDied)):
            self.running = None
        return event

    def workers(self):
        return [WorkerStatus(0, CPU, self.ready, self.running.job_id if self.running else None, (), alive=self.alive)]

    def close(self):
        pass


def _eventually(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition never became true")


@pytest.fixture
def managed(tmp_path, media_root):
    config = ServerConfig(data_dir=tmp_path, media_roots=(media_root,))
    backend = ScriptedBackend()
    store = JobStore(tmp_path / "jobs.sqlite3")
    manager = JobManager(config, store, backend, UploadStore(tmp_path / "uploads", 10**6))
    health = []
    manager.on_serving_change(health.append)
    manager.start()
    yield manager, backend, health
    manager.stop()
    store.close()


def _request(media_root, job_id: str, seed: int = 0) -> EditRequest:
    return EditRequest(
        job_id=job_id, source_path=str(media_root / "clip.mp4"), upload_id=None, start_frame=0, frame_count=2,
        rate_num=24, rate_den=1, handles_before=0, handles_after=0, instruction="make it red", model="", seed=seed,
    )


def test_serving_only_after_a_worker_loaded_the_model(managed, media_root):
    manager, backend, health = managed
    view, created = manager.submit(_request(media_root, "a"), b"a", "fp-a")
    assert created and view.record.state == JobState.QUEUED and health == [False]
    # Let the manager's event loop handle one event of its own (a no-op phase report, which wakes the
    # job's watchers once handled) rather than sleep: nothing was dispatched then either.
    with manager.subscribe("a") as changes:
        backend.script.put(JobPhase(0, view.record.seq, "a", JobState.QUEUED))
        assert changes.get(10), "the manager never handled the event"
    assert backend.started == []  # no worker ready: nothing dispatched
    backend.script.put(WorkerReady(0, "builtin:tiny", CPU))
    _eventually(lambda: health == [False, True])
    _eventually(lambda: backend.started == ["a"])
    assert manager.view("a").record.state == JobState.LOADING_MODEL


def test_a_job_that_keeps_killing_its_worker_fails_after_three_tries(managed, media_root):
    manager, backend, _ = managed
    backend.script.put(WorkerReady(0, "builtin:tiny", CPU))
    manager.submit(_request(media_root, "poison"), b"p", "fp-p")
    for attempt in (1, 2, 3):
        _eventually(lambda: len(backend.started) == attempt)
        backend.script.put(WorkerDied(0, backend.running.seq, "poison", -9))
    _eventually(lambda: manager.view("poison").record.state.is_final)
    record = manager.view("poison").record
    assert record.state == JobState.FAILED and record.error_code == "INTERNAL" and record.attempts == 3
    assert "died 3 times" in record.error_message


def test_cancel_wins_over_a_render_that_finished_meanwhile(managed, media_root, tmp_path):
    manager, backend, _ = managed
    backend.script.put(WorkerReady(0, "builtin:tiny", CPU))
    manager.submit(_request(media_root, "racy"), b"r", "fp-r")
    _eventually(lambda: backend.running is not None)
    task = backend.running
    backend.script.put(JobPhase(0, task.seq, "racy", JobState.FRAMES))
    _eventually(lambda: manager.view("racy").record.state == JobState.FRAMES)
    manager.cancel("racy")
    assert backend.cancelled == ["racy"] and manager.view("racy").record.cancel_requested
    result = tmp_path / "results" / "racy"
    result.mkdir(parents=True)
    (result / "clip_fairy.mp4").write_bytes(b"v")
    outcome = JobOutcome(JobState.DONE, 4, str(result / "clip_fairy.mp4"), str(result / "clip_fairy.otio"), 1)
    backend.script.put(JobFinished(0, task.seq, "racy", outcome))
    _eventually(lambda: manager.view("racy").record.state.is_final)
    assert manager.view("racy").record.state == JobState.CANCELLED
    assert not result.exists()


def test_queued_jobs_run_in_submission_order(managed, media_root):
    manager, backend, _ = managed
    for n in range(4):
        manager.submit(_request(media_root, f"j{n}", seed=n), b"x", f"fp{n}")
    manager.cancel("j2")
    backend.script.put(WorkerReady(0, "builtin:tiny", CPU))
    for expected in ("j0", "j1", "j3"):
        _eventually(lambda: backend.running is not None and backend.running.job_id == expected)
        outcome = JobOutcome(JobState.FAILED, 4, error_message="x", error_code="INVALID_ARGUMENT")
        backend.script.put(JobFinished(0, backend.running.seq, expected, outcome))
        _eventually(lambda: manager.view(expected).record.state.is_final)
    assert backend.started == ["j0", "j1", "j3"]


def test_subscription_keeps_every_state_and_only_the_latest_progress(managed, media_root):
    import dataclasses

    from fairy_server.jobs import LiveProgress

    manager, _, _ = managed
    view, _ = manager.submit(_request(media_root, "sub"), b"s", "fp-s")
    with manager.subscribe("sub") as subscription:
        assert subscription.get(0.01) == []

        def at(state, fraction):
            return dataclasses.replace(
                view, record=dataclasses.replace(view.record, state=state), progress=LiveProgress(fraction=fraction)
            )

        for state, fraction in [(JobState.ANCHORS, 0.1), (JobState.ANCHORS, 0.2), (JobState.FRAMES, 0.5),
                                (JobState.FRAMES, 0.6), (JobState.FRAMES, 0.7), (JobState.DONE, 1.0)]:
            subscription.put(at(state, fraction))
        got = subscription.get(1.0)
        assert [(v.record.state, v.progress.fraction) for v in got] == [
            (JobState.ANCHORS, 0.2), (JobState.FRAMES, 0.7), (JobState.DONE, 1.0)
        ]
        subscription.put(None)
        assert subscription.get(1.0) is None
    assert "sub" not in manager._subscribers


def test_restart_removes_what_interrupted_jobs_left(tmp_path, media_root):
    config = ServerConfig(data_dir=tmp_path, media_roots=(media_root,))
    store = JobStore(tmp_path / "jobs.sqlite3")
    uploads = UploadStore(tmp_path / "uploads", 10**6)
    first = JobManager(config, store, ScriptedBackend(), uploads)
    first.submit(_request(media_root, "cut"), b"c", "fp-c")
    store.mark_started("cut", 4)
    store.update("cut", state=JobState.FRAMES)
    # The worker published just before the server died, without the store hearing of it.
    (tmp_path / "results" / "cut").mkdir(parents=True)
    (tmp_path / "results" / "cut" / "clip_fairy.mp4").write_bytes(b"v")
    (tmp_path / "results" / ".staging-other").mkdir()
    JobManager(config, store, ScriptedBackend(), uploads)  # the restart
    assert store.get("cut").state == JobState.QUEUED
    assert list((tmp_path / "results").iterdir()) == []
    store.close()
