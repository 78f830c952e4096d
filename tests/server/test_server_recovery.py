"""Failures the server must survive: SIGKILL mid-job, and out-of-memory in the worker."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import time

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg

from server_testing import ServerProcess, edit_request, wait_serving, wait_state, watch_until_final

pytestmark = pytest.mark.timeout(400)


def _children(pid: int) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _connect(server: ServerProcess):
    channel = grpc.insecure_channel(server.address)
    wait_serving(channel)
    return channel, pbg.FairyEditorStub(channel)


def test_sigkill_mid_job_then_restart_completes_each_job_exactly_once(tmp_path, media_root):
    data = tmp_path / "data"
    first = ServerProcess(data, "--media-root", str(media_root))
    channel, stub = _connect(first)
    try:
        stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="early", count=2, seed=1))
        stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="killed", count=12, steps=6, seed=2))
        stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="waiting", count=2, seed=3))
        early = watch_until_final(stub, "early")[-1]
        assert early.state == pb.JOB_STATE_DONE
        early_mtime = os.stat(early.result_path).st_mtime_ns
        running = wait_state(stub, "killed", {pb.JOB_STATE_FRAMES})
        assert running.state == pb.JOB_STATE_FRAMES
        workers = _children(first.process.pid)
        assert workers, "the server has no worker process"
    finally:
        channel.close()
    first.kill()
    # The orphaned worker must not go on rendering into the results folder.
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)

    second = ServerProcess(data, "--media-root", str(media_root))
    channel, stub = _connect(second)
    try:
        killed = watch_until_final(stub, "killed")[-1]
        waiting = watch_until_final(stub, "waiting")[-1]
        assert killed.state == pb.JOB_STATE_DONE and killed.attempts == 2
        assert waiting.state == pb.JOB_STATE_DONE and waiting.attempts == 1
        assert waiting.started_unix >= killed.finished_unix  # still in submission order
        early_again = stub.GetJob(pb.GetJobRequest(job_id="early"))
        assert early_again.attempts == 1 and early_again.finished_unix == early.finished_unix
        assert os.stat(early_again.result_path).st_mtime_ns == early_mtime  # never rendered again
        jobs = stub.ListJobs(pb.ListJobsRequest()).jobs
        assert sorted(j.job_id for j in jobs) == ["early", "killed", "waiting"]
        from fairy.video import probe

        assert probe(killed.result_path).frame_count == 12
        # A clean stop (SIGTERM) mid-job: the job goes back to the queue, nothing is published.
        stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="stopped", count=12, steps=6, seed=4))
        wait_state(stub, "stopped", {pb.JOB_STATE_ANCHORS, pb.JOB_STATE_FRAMES})
    finally:
        channel.close()
        second.stop()
    assert second.process.returncode == 0
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        states = dict(db.execute("SELECT job_id, state FROM jobs"))
    assert states == {"early": "DONE", "killed": "DONE", "waiting": "DONE", "stopped": "QUEUED"}
    results = data / "results"
    assert sorted(p.name for p in results.iterdir()) == ["early", "killed", "waiting"]  # no staging left
    # (The killed job's second attempt, the others' single one and the stopped job back in the queue are
    # asserted above from the jobs' own records, not from the server's log lines.)


def test_out_of_memory_backs_off_then_fails_or_succeeds_and_next_job_runs(tmp_path, media_root):
    # The worker raises torch.cuda.OutOfMemoryError on its first 5 render attempts:
    # job 1 tries batches 4, 2, 1 and fails; job 2 tries 4, 2 and succeeds at 1; job 3 is normal.
    server = ServerProcess(
        tmp_path / "data", "--media-root", str(media_root), "--batch-size", "4",
        faults=("--inject-oom", "5"),
    )
    channel, stub = _connect(server)
    try:
        for n in (1, 2, 3):
            stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id=f"oom-{n}", count=2, seed=n, steps=1))
        events = {n: watch_until_final(stub, f"oom-{n}") for n in (1, 2, 3)}
        first, second, third = (events[n][-1] for n in (1, 2, 3))
    finally:
        channel.close()
        server.stop()
    assert first.state == pb.JOB_STATE_FAILED
    assert first.error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "memory" in first.error_message and first.frame_batch_size == 1
    assert not (tmp_path / "data" / "results" / "oom-1").exists()
    assert second.state == pb.JOB_STATE_DONE and second.frame_batch_size == 1
    assert third.state == pb.JOB_STATE_DONE and third.frame_batch_size == 4
    assert pb.JOB_STATE_ENCODING not in [e.state for e in events[1]]  # it never got to encode
