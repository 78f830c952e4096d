"""One job across two CPU workers of one server: the anchor pass once, chunks on both, the assembly, and the
output the library writes in one call; cancel stops both workers; a worker killed mid-job has its chunk
redone; a server restart keeps the chunks that were finished."""

from __future__ import annotations

import os
import signal
from fractions import Fraction

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg
from server_testing import assert_clip_is_the_one_call_edit, clip_frames, edit_request, wait_serving, wait_until, watch_until_final

pytestmark = pytest.mark.slow

SETTINGS = dict(steps=2, anchors=2, long_side=64)


@pytest.fixture
def two_workers(tmp_path):
    """A server with two CPU workers (each a spawned process with one thread)."""
    from fairy.video import make_test_clip
    from fairy_server.app import FairyServer
    from fairy_server.config import ServerConfig

    media = tmp_path / "media"
    media.mkdir()
    clip = make_test_clip(media / "clip.mp4", frames=20, width=96, height=64, fps=Fraction(24))
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers: one core each
    try:
        server = FairyServer(ServerConfig(data_dir=tmp_path / "data", address="127.0.0.1:0", model="builtin:tiny",
                                          devices="cpu,cpu", media_roots=(media.resolve(),))).start()
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    wait_serving(channel)
    wait_until(lambda: all(w.ready for w in server.manager.workers()))  # both models loaded
    server.stub, server.clip, server.tmp = pbg.FairyEditorStub(channel), clip, tmp_path
    yield server
    channel.close()
    if not getattr(server, "stopped", False):
        server.stop()


def test_a_job_split_over_two_workers_equals_one_edit(two_workers, tmp_path):
    server = two_workers
    request = edit_request(server.clip, job_id="split-1", start=0, count=20, seed=3, **SETTINGS)
    server.stub.SubmitEdit(request)
    busy = set()

    def both_busy():
        busy.update(w.worker_id for w in server.manager.workers() if w.running_job_id == "split-1")
        return len(busy) == 2 or server.stub.GetJob(pb.GetJobRequest(job_id="split-1")).state == pb.JOB_STATE_DONE

    wait_until(both_busy)
    events = watch_until_final(server.stub, "split-1")
    final = events[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert busy == {0, 1}, "both workers rendered parts of the job"
    fractions = [e.progress.fraction for e in events]
    assert fractions == sorted(fractions) and final.progress.fraction == 1.0
    assert len(final.anchor_previews) == 2
    assert_clip_is_the_one_call_edit(final.result_path, server.clip, tmp_path, 20, seed=3, **SETTINGS)
    assert not list((server.tmp / "data").rglob(".parts-*")), "the parts are gone once the job is done"


def test_cancel_stops_every_worker_of_the_job(two_workers):
    server = two_workers
    server.stub.SubmitEdit(edit_request(server.clip, job_id="split-cancel", count=20, steps=20, anchors=2, long_side=64))
    wait_until(lambda: sum(w.running_job_id == "split-cancel" for w in server.manager.workers()) == 2)
    server.stub.CancelJob(pb.CancelJobRequest(job_id="split-cancel"))
    final = watch_until_final(server.stub, "split-cancel")[-1]
    assert final.state == pb.JOB_STATE_CANCELLED
    wait_until(lambda: all(w.running_job_id is None for w in server.manager.workers()), timeout=30)


def test_a_worker_killed_mid_job_has_its_part_redone(two_workers):
    server = two_workers
    server.stub.SubmitEdit(edit_request(server.clip, job_id="split-kill", count=20, steps=6, **{"anchors": 2, "long_side": 64}))
    wait_until(lambda: sum(w.running_job_id == "split-kill" for w in server.manager.workers()) == 2
          and server.stub.GetJob(pb.GetJobRequest(job_id="split-kill")).state == pb.JOB_STATE_FRAMES)
    victim = next(w for w in server.manager.workers() if w.running_job_id == "split-kill")
    os.kill(victim.pid, signal.SIGKILL)
    final = watch_until_final(server.stub, "split-kill", timeout=300)[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert clip_frames(final.result_path, 20).shape[0] == 20


def test_a_restart_keeps_the_finished_chunks(two_workers):
    from fairy import chunked
    from fairy_server.app import FairyServer
    from fairy_server.splitting import parts_folder

    server = two_workers
    server.stub.SubmitEdit(edit_request(server.clip, job_id="split-restart", count=20, steps=4, anchors=2, long_side=64))
    work = parts_folder(server.config.results_path, "split-restart")
    wait_until(lambda: len(list(work.glob("chunk-*.npy"))) >= 2, timeout=180)
    server.stop()  # the workers stop between steps; the job goes back to the queue
    server.stopped = True
    finished = {p.name for p in work.glob("chunk-*.npy")}
    assert finished and (work / chunked.EDIT_FILE).is_file()

    again = FairyServer(server.config).start()
    try:
        wait_until(lambda: "split-restart" in again.manager._splits or not work.exists(), timeout=180)
        split = again.manager._splits.get("split-restart")
        if split is not None:  # resumed: only the chunks not finished are handed out
            todo = {chunked.chunk_path(work, p.chunk).name for p in [*split.pending, *split.inflight.values()] if p.chunk}
            assert not todo & finished and split.resumed
        channel = grpc.insecure_channel(f"127.0.0.1:{again.port}")
        final = watch_until_final(pbg.FairyEditorStub(channel), "split-restart", timeout=300)[-1]
        channel.close()
    finally:
        again.stop()
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert final.attempts == 2
    assert clip_frames(final.result_path, 20).shape[0] == 20


def test_a_short_job_submitted_after_a_long_one_is_not_starved(two_workers):
    server = two_workers
    server.stub.SubmitEdit(edit_request(server.clip, job_id="split-long", count=20, steps=8, anchors=2, long_side=64))
    wait_until(lambda: sum(w.running_job_id == "split-long" for w in server.manager.workers()) == 2)
    server.stub.SubmitEdit(edit_request(server.clip, job_id="split-short", start=4, count=3, steps=2, anchors=1,
                                        long_side=64))
    short = watch_until_final(server.stub, "split-short")[-1]
    long_now = server.stub.GetJob(pb.GetJobRequest(job_id="split-long"))
    assert short.state == pb.JOB_STATE_DONE, short.error_message
    # The short clip got a worker as soon as one of the long clip's chunks ended, not after the whole clip.
    assert long_now.state != pb.JOB_STATE_DONE
    assert watch_until_final(server.stub, "split-long")[-1].state == pb.JOB_STATE_DONE
