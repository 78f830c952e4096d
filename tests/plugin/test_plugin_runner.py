"""JobRunner: background submit/watch/fetch against the real ``fairy-server`` (the session's, tiny model).

A job that must still be running when the test acts asks the server to hold it in FRAMES
(``live.HOLD``); a job that must fail asks it to run out of memory (``live.OOM``); a server that is not
up yet is a TCP proxy refusing connections (real_server.Proxy).
"""

from __future__ import annotations

import fractions
import pathlib
import re
import time

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2

from fairy_plugin.client import FairyClient
from fairy_plugin.errors import JobFailedError
from fairy_plugin.ranges import MediaRange
from fairy_plugin.requests import EditParams, request_for_range
from fairy_plugin.runner import JobRunner
from real_server import Proxy, closed_port, unique_seed


def _request(count=12, media="/media/a.mp4", seed=7, instruction="make it snowy", **kw):
    media = MediaRange(media_path=str(media), start_frame=4, frame_count=count, rate=fractions.Fraction(24000, 1001),
                       handles_before=2, handles_after=3)
    return request_for_range(media, EditParams(instruction=instruction, seed=seed, steps=2), **kw)


def _live(live, *, hold=False, oom=False, **kw):
    """A request the session's server renders (its 23.976 clip, a seed no other test used)."""
    instruction = "make it snowy" + (f" {live.HOLD}" if hold else "") + (f" {live.OOM}" if oom else "")
    return _request(media=live.ntsc, seed=unique_seed(), instruction=instruction, **kw)


def _until(predicate, timeout=30.0):
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


def test_done_jobs_arrive_through_drain_with_local_result(client, live, tmp_path):
    runner = JobRunner(client, tmp_path / "dl")
    ids = [runner.submit(f"clip{i}", _live(live)) for i in range(3)]
    final = runner.wait_all(timeout=60)
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
        assert str(mine[-1].result_path) == client.get(job_id).result_path
        # Frames 4-15 plus the handles, 2 before and 3 after.
        assert (mine[-1].job.rendered_range.start_frame, mine[-1].job.rendered_range.frame_count) == (2, 17)
    assert not (tmp_path / "dl").exists()
    runner.close()


def test_always_download_copies_into_download_dir(client, live, tmp_path):
    with JobRunner(client, tmp_path / "dl", always_download=True) as runner:
        job_id = runner.submit("Shot 010", _live(live))
        update = runner.wait_all(timeout=60)[job_id]
    assert update.state == "DONE"
    assert update.result_path.parent == tmp_path / "dl"
    assert update.result_path.name == f"Shot_010-{job_id[:8]}.mp4"
    assert update.result_path.read_bytes() == pathlib.Path(update.job.result_path).read_bytes()


def test_cancel_a_running_job(client, live, tmp_path):
    with JobRunner(client, tmp_path) as runner:
        job_id = runner.submit("a", _live(live, hold=True))
        _until(lambda: runner.latest()[job_id].state == "FRAMES")
        runner.cancel(job_id)
        update = runner.wait_all(timeout=30)[job_id]
    assert update.state == "CANCELLED" and update.result_path is None
    assert client.get(job_id).cancel_requested


def test_cancel_while_the_submit_is_still_retrying(live, tmp_path):
    # The server is not up yet: the worker is retrying the submit when cancel
    # comes, so the cancel must follow the submit as soon as it lands.
    with Proxy() as proxy, FairyClient(proxy.address, connect_timeout=30) as c:
        with JobRunner(c, tmp_path) as runner:
            job_id = runner.submit("a", _live(live, hold=True))
            proxy.wait_refused(1)  # the submit is on its way and finds no server
            runner.cancel(job_id)
            proxy.up(live.port)
            update = runner.wait_all(timeout=30)[job_id]
    assert update.state == "CANCELLED"
    on_server = live.job(job_id)  # it was submitted, then cancelled
    assert on_server.state == fairy_pb2.JOB_STATE_CANCELLED and on_server.cancel_requested


def test_server_not_running_is_a_failed_update_not_an_exception(tmp_path):
    with closed_port() as address, FairyClient(address, connect_timeout=0.3) as c:
        with JobRunner(c, tmp_path) as runner:
            job_id = runner.submit("a", _request())
            update = runner.wait_all(timeout=10)[job_id]
    assert update.state == "FAILED"
    assert update.message == f"Fairy server is not running at {address} (start it with `fairy-server`)"


def test_failed_job_carries_the_servers_message(client, live, tmp_path):
    with JobRunner(client, tmp_path) as runner:
        job_id = runner.submit("a", _live(live, oom=True))  # out of memory at every batch size
        update = runner.wait_all(timeout=60)[job_id]
    on_server = client.get(job_id)
    assert update.state == "FAILED" and on_server.state == fairy_pb2.JOB_STATE_FAILED
    assert on_server.error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert update.message and update.message == on_server.error_message
    with pytest.raises(JobFailedError, match=f"^{re.escape(on_server.error_message)}$"):
        update.raise_for_failure()


def test_cancel_all_with_wait_reaches_the_server(client, live, tmp_path):
    with JobRunner(client, tmp_path) as runner:
        ids = [runner.submit(str(i), _live(live, hold=True)) for i in range(2)]
        # Both on the server (its one worker holds the first in FRAMES, the second waits in the queue).
        _until(lambda: all(runner.latest()[i].job.created_unix for i in ids)
               and "FRAMES" in {runner.latest()[i].state for i in ids})
        runner.cancel_all(wait=True)
        assert all(client.get(i).cancel_requested for i in ids)
        final = runner.wait_all(timeout=30)
    assert {u.state for u in final.values()} == {"CANCELLED"}


def test_close_stops_watching_but_leaves_the_job_running(client, live, tmp_path):
    runner = JobRunner(client, tmp_path)
    job_id = runner.submit("a", _live(live, hold=True))
    _until(lambda: runner.latest()[job_id].state == "FRAMES")
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 3
    on_server = client.get(job_id)
    assert on_server.state == fairy_pb2.JOB_STATE_FRAMES and not on_server.cancel_requested
