"""JobRunner: background submit/watch/fetch against a real gRPC loopback server."""

from __future__ import annotations

import fractions
import time

import pytest
from fairy_proto.v1 import fairy_pb2

from fairy_plugin.client import FairyClient
from fairy_plugin.errors import JobFailedError
from fairy_plugin.ranges import MediaRange
from fairy_plugin.requests import EditParams, request_for_range
from fairy_plugin.runner import JobRunner
from scripted_server import RunningServer, ScriptedFairy, free_port


def _request(count=12, **kw):
    media = MediaRange(media_path="/media/a.mp4", start_frame=4, frame_count=count, rate=fractions.Fraction(24000, 1001),
                       handles_before=2, handles_after=3)
    return request_for_range(media, EditParams(instruction="make it snowy", seed=7, steps=2), **kw)


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_request_carries_exact_range_handles_and_parameters():
    request = _request(job_id="abc", labels={"clip": "A"})
    assert request.job_id == "abc"
    assert (request.range.start_frame, request.range.frame_count) == (4, 12)
    assert (request.range.rate.num, request.range.rate.den) == (24000, 1001)
    assert (request.handles.before, request.handles.after) == (2, 3)
    assert request.parameters.seed == 7 and request.parameters.steps == 2
    assert not request.parameters.HasField("anchors")  # unset -> server default
    assert request.source.path == "/media/a.mp4" and request.labels["clip"] == "A"
    assert len(_request().job_id) == 32 and _request().job_id != _request().job_id


def test_done_jobs_arrive_through_drain_with_local_result(client, scripted, tmp_path):
    runner = JobRunner(client, tmp_path / "dl")
    ids = [runner.submit(f"clip{i}", _request()) for i in range(3)]
    final = runner.wait_all(timeout=20)
    assert set(final) == set(ids)
    updates = runner.drain()
    assert runner.drain() == []  # drained means drained
    for job_id in ids:
        mine = [u for u in updates if u.job_id == job_id]
        assert mine[-1].state == "DONE" and mine[-1].fraction == 1.0
        assert "FRAMES" in [u.state for u in mine]
        assert any(u.previews for u in mine)
        # Same filesystem: the server's file is used where it is.
        assert mine[-1].result_path == final[job_id].result_path
        assert str(mine[-1].result_path) == scripted.servicer.jobs[job_id].result_path
    assert not (tmp_path / "dl").exists()
    runner.close()


def test_always_download_copies_into_download_dir(client, tmp_path):
    with JobRunner(client, tmp_path / "dl", always_download=True) as runner:
        job_id = runner.submit("Shot 010", _request())
        update = runner.wait_all(timeout=20)[job_id]
    assert update.state == "DONE"
    assert update.result_path.parent == tmp_path / "dl"
    assert update.result_path.name == f"Shot_010-{job_id[:8]}.mp4"
    assert update.result_path.read_bytes() == open(update.job.result_path, "rb").read()


def test_cancel_a_running_job(client, scripted, tmp_path):
    scripted.servicer.hold.set()
    with JobRunner(client, tmp_path) as runner:
        job_id = runner.submit("a", _request())
        _until(lambda: runner.latest()[job_id].state == "FRAMES")
        runner.cancel(job_id)
        update = runner.wait_all(timeout=10)[job_id]
    assert update.state == "CANCELLED" and update.result_path is None
    assert scripted.servicer.cancels == [job_id]


def test_cancel_while_the_submit_is_still_retrying(tmp_path):
    # The server is not up yet: the worker is retrying the submit when cancel
    # comes, so the cancel must follow the submit as soon as it lands.
    server = RunningServer(ScriptedFairy(tmp_path))
    server.servicer.hold.set()
    try:
        with FairyClient(server.address, connect_timeout=10) as c:
            with JobRunner(c, tmp_path) as runner:
                job_id = runner.submit("a", _request())
                runner.cancel(job_id)
                server.start()
                update = runner.wait_all(timeout=10)[job_id]
        assert update.state == "CANCELLED"
        assert server.servicer.cancels == [job_id]
    finally:
        server.stop()


def test_server_not_running_is_a_failed_update_not_an_exception(tmp_path):
    with FairyClient(f"127.0.0.1:{free_port()}", connect_timeout=0.3) as c:
        with JobRunner(c, tmp_path) as runner:
            job_id = runner.submit("a", _request())
            update = runner.wait_all(timeout=10)[job_id]
    assert update.state == "FAILED"
    assert update.message.startswith("Fairy server is not running at 127.0.0.1:")


def test_failed_job_carries_the_servers_message(client, scripted, tmp_path):
    scripted.servicer.fail_message = "out of GPU memory even at one frame per batch"
    with JobRunner(client, tmp_path) as runner:
        job_id = runner.submit("a", _request())
        update = runner.wait_all(timeout=10)[job_id]
    assert update.state == "FAILED"
    assert update.message == "out of GPU memory even at one frame per batch"
    with pytest.raises(JobFailedError, match="^out of GPU memory even at one frame per batch$"):
        update.raise_for_failure()


def test_cancel_all_with_wait_reaches_the_server(client, scripted, tmp_path):
    scripted.servicer.hold.set()
    with JobRunner(client, tmp_path) as runner:
        ids = [runner.submit(str(i), _request()) for i in range(2)]
        _until(lambda: all(runner.latest()[i].state == "FRAMES" for i in ids))
        runner.cancel_all(wait=True)
        assert sorted(scripted.servicer.cancels) == sorted(ids)
        final = runner.wait_all(timeout=10)
    assert {u.state for u in final.values()} == {"CANCELLED"}


def test_close_stops_watching_but_leaves_the_job_running(client, scripted, tmp_path):
    scripted.servicer.hold.set()
    runner = JobRunner(client, tmp_path)
    job_id = runner.submit("a", _request())
    _until(lambda: runner.latest()[job_id].state == "FRAMES")
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 3
    assert scripted.servicer.jobs[job_id].state == fairy_pb2.JOB_STATE_FRAMES
    assert scripted.servicer.cancels == []
