"""The Ray backend on a local Ray cluster started by the tests (``ray.init`` with two CPUs): a job split over
two actors gives the local backend's output; progress, previews and cancel work; an actor killed mid-job is
replaced and the job completes; media a node cannot see fail the job with a message that says so; a server
process connects to the cluster by its address; and without Ray installed ``--backend ray`` says in one line
how to install it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg
from server_testing import ServerProcess, assert_clip_is_the_one_call_edit, clip_frames, edit_request, wait_serving, wait_until, watch_until_final

import ray  # the [ray] extra is part of [test]
pytestmark = pytest.mark.slow

SETTINGS = dict(steps=2, anchors=2, long_side=64)


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray cluster for this module: two CPUs (one per worker actor), a small object store."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def ray_server(tmp_path, ray_cluster):
    """A server (in this process) whose two workers are actors of the cluster."""
    from fairy.video import make_test_clip
    from fairy_server.app import FairyServer
    from fairy_server.config import ServerConfig

    media = tmp_path / "media"
    media.mkdir()
    clip = make_test_clip(media / "clip.mp4", frames=20, width=96, height=64, fps=Fraction(24))
    server = FairyServer(ServerConfig(data_dir=tmp_path / "data", address="127.0.0.1:0", model="builtin:tiny",
                                      devices="cpu,cpu", backend="ray", media_roots=(media.resolve(),))).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    wait_serving(channel)
    wait_until(lambda: all(w.ready and w.pid for w in server.manager.workers()), timeout=180)
    server.stub, server.clip = pbg.FairyEditorStub(channel), clip
    yield server
    channel.close()
    server.stop()


def _busy(server, job_id):
    return sum(w.running_job_id == job_id for w in server.manager.workers())


def test_a_job_on_two_ray_actors_equals_the_local_backends(ray_server, tmp_path):
    server = ray_server
    server.stub.SubmitEdit(edit_request(server.clip, job_id="ray-1", count=20, seed=3, **SETTINGS))
    busy = set()

    def both_busy():
        busy.update(w.worker_id for w in server.manager.workers() if w.running_job_id == "ray-1")
        return len(busy) == 2 or server.stub.GetJob(pb.GetJobRequest(job_id="ray-1")).state == pb.JOB_STATE_DONE

    wait_until(both_busy)
    events = watch_until_final(server.stub, "ray-1")
    final = events[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert busy == {0, 1}, "both actors rendered parts of the job"
    fractions = [e.progress.fraction for e in events]
    assert fractions == sorted(fractions) and final.progress.fraction == 1.0
    assert len(final.anchor_previews) == 2
    assert_clip_is_the_one_call_edit(final.result_path, server.clip, tmp_path, 20, seed=3, **SETTINGS)
    assert not server.backend._caches, "the job's anchor cache left the object store when it was assembled"
    # The result cache holds for Ray as for local workers: the same request is answered with the same file.
    again = server.stub.SubmitEdit(edit_request(server.clip, job_id="ray-1-again", count=20, seed=3, **SETTINGS))
    assert again.state == pb.JOB_STATE_DONE and again.cache_hit and again.result_path == final.result_path


def test_cancel_stops_both_actors(ray_server):
    server = ray_server
    server.stub.SubmitEdit(edit_request(server.clip, job_id="ray-cancel", count=20, steps=20, anchors=2, long_side=64))
    wait_until(lambda: _busy(server, "ray-cancel") == 2)
    server.stub.CancelJob(pb.CancelJobRequest(job_id="ray-cancel"))
    assert watch_until_final(server.stub, "ray-cancel")[-1].state == pb.JOB_STATE_CANCELLED
    wait_until(lambda: all(w.running_job_id is None for w in server.manager.workers()), timeout=30)


def test_an_actor_killed_mid_job_is_replaced_and_the_job_completes(ray_server):
    server = ray_server
    server.stub.SubmitEdit(edit_request(server.clip, job_id="ray-kill", count=20, steps=6, anchors=2, long_side=64))
    wait_until(lambda: _busy(server, "ray-kill") == 2
          and server.stub.GetJob(pb.GetJobRequest(job_id="ray-kill")).state == pb.JOB_STATE_FRAMES)
    victim = next(w for w in server.manager.workers() if w.running_job_id == "ray-kill")
    os.kill(victim.pid, signal.SIGKILL)
    final = watch_until_final(server.stub, "ray-kill", timeout=300)[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert clip_frames(final.result_path, 20).shape[0] == 20
    # A fresh actor took the dead one's place.
    wait_until(lambda: all(w.ready for w in server.manager.workers()) and victim.pid not in
          {w.pid for w in server.manager.workers()}, timeout=180)


def test_media_a_node_cannot_see_fail_the_job_with_a_clear_message(ray_server, tmp_path):
    from fairy.video import make_test_clip

    server = ray_server
    gone = make_test_clip(server.clip.parent / "gone.mp4", frames=6, width=96, height=64, fps=Fraction(24))
    # Both actors busy, so the next job waits; its media then vanish, as on a node without the mount.
    server.stub.SubmitEdit(edit_request(server.clip, job_id="ray-busy", count=20, steps=8, anchors=2, long_side=64))
    wait_until(lambda: _busy(server, "ray-busy") == 2)
    server.stub.SubmitEdit(edit_request(gone, job_id="ray-gone", count=6, **SETTINGS))
    gone.unlink()
    final = watch_until_final(server.stub, "ray-gone", timeout=180)[-1]
    assert final.state == pb.JOB_STATE_FAILED
    assert final.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert str(gone) in final.error_message and "Ray node" in final.error_message
    assert not (server.config.results_path / "ray-gone").exists()
    assert watch_until_final(server.stub, "ray-busy")[-1].state == pb.JOB_STATE_DONE


def test_a_server_process_joins_the_cluster_by_its_address(ray_cluster, tmp_path):
    from fairy.video import make_test_clip

    media = tmp_path / "media"
    media.mkdir()
    clip = make_test_clip(media / "clip.mp4", frames=6, width=96, height=64, fps=Fraction(24))
    server = ServerProcess(tmp_path / "data", "--backend", "ray", "--ray-address", ray_cluster,
                           "--media-root", str(media))
    try:
        channel = grpc.insecure_channel(server.address)
        wait_serving(channel, timeout=180)
        stub = pbg.FairyEditorStub(channel)
        stub.SubmitEdit(edit_request(clip, job_id="ray-cli", count=6, **SETTINGS))
        final = watch_until_final(stub, "ray-cli", timeout=240)[-1]
        channel.close()
    finally:
        server.stop()
    assert final.state == pb.JOB_STATE_DONE, f"{final.error_message}\n{server.log()}"


def test_without_ray_the_ray_backend_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from fairy_server.cli import main
    from fairy_server.ray_backend import RAY_MISSING

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as where it is missing
    monkeypatch.delitem(sys.modules, "fairy_server.ray_backend", raising=False)
    code = main(["--backend", "ray", "--data-dir", str(tmp_path / "data"), "--model", "builtin:tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"fairy-server: {RAY_MISSING}"]
    assert not (tmp_path / "data" / "jobs.sqlite3").exists()


def test_a_cluster_that_is_not_there_is_one_line(tmp_path):
    # Port 9 (discard) on loopback: no Ray head listens there. A process of its own: this one is connected.
    done = subprocess.run(
        [sys.executable, "-m", "fairy_server", "--backend", "ray", "--ray-address", "127.0.0.1:9",
         "--data-dir", str(tmp_path / "data"), "--model", "builtin:tiny", "--log-level", "ERROR"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    err = [line for line in done.stderr.strip().splitlines() if line.startswith("fairy-server:")]
    assert done.returncode == 2, done.stderr
    assert len(err) == 1 and err[0].startswith("fairy-server: cannot reach the Ray cluster at 127.0.0.1:9")
    assert not (tmp_path / "data" / "jobs.sqlite3").exists()
