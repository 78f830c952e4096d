"""The SQLite job store on its own: idempotent insert, restart recovery, order, cache lookup."""

from __future__ import annotations

import sqlite3

from fairy_server.jobs import JobState, Preview
from fairy_server.store import JobStore, NewJob

from server_testing import make_plan as _plan


def _job(job_id: str, **over) -> NewJob:
    return NewJob(job_id, b"request-" + job_id.encode(), "fp-" + job_id, _plan(**over), "builtin:tiny")


def test_insert_is_idempotent_and_ordered(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    a, created_a = store.insert(_job("a"))
    again, created_again = store.insert(_job("a", seed=5))
    assert created_a and not created_again and again.seq == a.seq and again.plan.seed == 0
    store.insert(_job("b"))
    store.insert(_job("c"))
    assert store.next_queued().job_id == "a"
    assert [store.queue_position(store.get(j).seq) for j in "abc"] == [0, 1, 2]
    assert [r.job_id for r in store.list()] == ["c", "b", "a"]  # newest first
    assert [r.job_id for r in store.list([JobState.DONE])] == []
    assert store.get("a").plan == _plan()
    assert sqlite3.connect(tmp_path / "jobs.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_restart_requeues_running_and_never_reruns_finished(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for job_id in ("done", "running", "cancelling", "queued"):
        store.insert(_job(job_id))
    store.mark_started("done", 4)
    store.update("done", state=JobState.DONE, finished=1.0)
    store.mark_started("running", 4)
    store.update("running", state=JobState.FRAMES)
    store.add_previews("running", [Preview(1, b"\xff\xd8jpeg", 8, 8)])
    store.mark_started("cancelling", 4)
    store.update("cancelling", state=JobState.ANCHORS, cancel_requested=1)
    store.close()  # the process dies here

    store = JobStore(path)
    interrupted = store.requeue_interrupted()
    assert sorted(r.job_id for r in interrupted) == ["cancelling", "running"]
    assert store.get("done").state == JobState.DONE and store.get("done").attempts == 1
    assert store.get("running").state == JobState.QUEUED and store.get("running").attempts == 1
    assert store.previews("running") == []  # the rerun makes new ones
    assert store.get("cancelling").state == JobState.CANCELLED
    # Submission order survives: the interrupted job runs before the one queued after it.
    assert store.next_queued().job_id == "running"
    assert store.mark_started("done", 4) is None  # a finished job cannot be started again


def test_cache_lookup_needs_the_files(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    record, _ = store.insert(_job("a"))
    assert store.find_cached(record.cache_key) is None  # not done yet
    video, sidecar = tmp_path / "v.mp4", tmp_path / "v.otio"
    video.write_bytes(b"v")
    sidecar.write_text("{}")
    store.update("a", state=JobState.DONE, result_path=str(video), sidecar_path=str(sidecar))
    assert store.find_cached(record.cache_key).job_id == "a"
    assert store.find_cached(_plan(seed=1).cache_key()) is None
    video.unlink()
    assert store.find_cached(record.cache_key) is None


def test_cache_key_covers_every_rendering_input():
    base = _plan()
    for change in (
        dict(source_sha256="cd" * 32), dict(start_frame=3), dict(render_count=5), dict(rate_num=25),
        dict(instruction="make it blue"), dict(model="other"), dict(seed=1), dict(steps=3), dict(anchors=2),
        dict(guidance_scale=7.0), dict(image_guidance_scale=1.0), dict(long_side=32), dict(codec="prores"),
        dict(noise="per_frame"),
    ):
        assert _plan(**change).cache_key() != base.cache_key(), change
    assert _plan(source="/elsewhere/same-content.mp4").cache_key() == base.cache_key()


def test_a_plan_stored_before_the_server_resolved_noise_reads_back_with_the_default():
    import json

    from fairy_proto.v1.settings import setting

    stored = json.loads(_plan().to_json()) | {"noise": None}  # what an older server wrote for "library default"
    assert type(_plan()).from_json(json.dumps(stored)).noise == setting("noise").default
