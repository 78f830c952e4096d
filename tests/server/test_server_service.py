"""The FairyEditor service end to end, against one in-process server on a loopback port."""

from __future__ import annotations

import hashlib
import pathlib
import threading

import grpc
import opentimelineio as otio
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1 import fairy_pb2_grpc as pbg

from server_testing import edit_request, wait_state, watch_until_final

pytestmark = pytest.mark.timeout(300)

ORDER = [pb.JOB_STATE_QUEUED, pb.JOB_STATE_LOADING_MODEL, pb.JOB_STATE_ANCHORS, pb.JOB_STATE_FRAMES,
         pb.JOB_STATE_ENCODING, pb.JOB_STATE_DONE]


def _download(stub, job_id, which=pb.RESULT_FILE_VIDEO) -> tuple[bytes, list[pb.DataChunk]]:
    chunks = list(stub.DownloadResult(pb.DownloadResultRequest(job_id=job_id, file=which)))
    data = b"".join(c.data for c in chunks)
    offset = 0
    for chunk in chunks:
        assert chunk.offset == offset and chunk.total_size == len(data)
        offset += len(chunk.data)
    assert chunks[0].filename and chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    return data, chunks


@pytest.fixture(scope="module")
def basic_job(server, media_root):
    """One real render: frames 2..5 of clip.mp4 with one handle each side (frames 1..6 rendered)."""
    request = edit_request(media_root / "clip.mp4", job_id="basic-1", start=2, count=4, handles=(1, 1), seed=7)
    request.labels["editor"] = "blender"
    job = server.stub.SubmitEdit(request)
    assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_LOADING_MODEL)
    # A client that disconnects from Watch does not cancel the job.
    stream = server.stub.WatchJob(pb.WatchJobRequest(job_id="basic-1"))
    first = next(stream)
    stream.cancel()
    assert first.job.job_id == "basic-1"
    events = watch_until_final(server.stub, "basic-1")
    return request, events


def test_submit_watch_download(server, basic_job, media_root, tmp_path):
    from fairy.video import probe

    request, events = basic_job
    final = events[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    states = [e.state for e in events]
    distinct = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert distinct == ORDER[ORDER.index(distinct[0]) :], "a state change was skipped or went backwards"
    assert final.progress.fraction == 1.0 and final.attempts == 1
    assert 0 < final.render_seconds <= final.finished_unix - final.started_unix
    fractions = [e.progress.fraction for e in events]
    assert fractions == sorted(fractions)
    # Previews arrive with the anchor pass, before the job is done.
    with_previews = [e for e in events if e.anchor_previews]
    assert with_previews and with_previews[0].state != pb.JOB_STATE_DONE
    previews = final.anchor_previews
    assert len(previews) == 3
    for p in previews:
        assert p.jpeg[:2] == b"\xff\xd8" and p.width > 0 and p.height > 0
        assert 1 <= p.frame_index <= 6  # media frame numbers inside the rendered range
    assert final.rendered_range.start_frame == 1 and final.rendered_range.frame_count == 6
    assert final.request.labels["editor"] == "blender" and final.request.job_id == "basic-1"

    data, chunks = _download(server.stub, "basic-1")
    video = tmp_path / chunks[0].filename
    video.write_bytes(data)
    info = probe(video)
    assert (info.frame_count, info.width, info.height) == (6, 96, 64)
    assert info.fps == 24
    assert final.result_size_bytes == len(data)

    # Written under the server's results folder, never beside the source.
    results = server.config.results_path / "basic-1"
    assert pathlib.Path(final.result_path).parent == results
    assert not [p for p in media_root.rglob("*") if "fairy" in p.name or p.name.startswith(".")]
    assert not list(server.config.results_path.glob(".staging-*"))


def test_sidecar_describes_the_render(server, basic_job):
    otio_bytes, _ = _download(server.stub, "basic-1", pb.RESULT_FILE_OTIO)
    timeline = otio.adapters.read_from_string(otio_bytes.decode(), "otio_json")
    (clip,) = timeline.find_clips()
    rate = 24.0
    assert clip.source_range == otio.opentime.TimeRange(otio.opentime.RationalTime(1, rate), otio.opentime.RationalTime(4, rate))
    ref = clip.media_reference
    assert ref.available_range.duration == otio.opentime.RationalTime(6, rate)
    assert ref.target_url.startswith("file://") and ref.target_url.endswith(pathlib.Path(basic_job[1][-1].result_path).name)
    meta = clip.metadata["fairy"]
    assert meta["instruction"] == "make it red" and meta["seed"] == 7 and meta["job_id"] == "basic-1"
    assert meta["model"] == "builtin:tiny" and meta["settings"]["steps"] == 2
    source = meta["source"]
    assert (source["start_frame"], source["frame_count"], source["rate"]) == (2, 4, "24/1")
    assert meta["handles"]["before"] == 1  # rendered from frame 1
    assert source["media"].endswith("clip.mp4")
    assert meta["server"] == f"127.0.0.1:{server.port}"


def test_idempotent_resubmit_and_conflict(server, basic_job):
    request, events = basic_job
    again = server.stub.SubmitEdit(request)
    assert again.job_id == "basic-1" and again.created_unix == events[-1].created_unix
    assert again.state == pb.JOB_STATE_DONE and again.attempts == 1
    changed = pb.SubmitEditRequest()
    changed.CopyFrom(request)
    changed.instruction = "make it blue"
    with pytest.raises(grpc.RpcError) as err:
        server.stub.SubmitEdit(changed)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "basic-1" in err.value.details() and "\n" not in err.value.details()


def test_identical_request_is_served_from_cache(server, basic_job):
    request, events = basic_job
    copy = pb.SubmitEditRequest()
    copy.CopyFrom(request)
    copy.job_id = "basic-cached"
    job = server.stub.SubmitEdit(copy)
    assert job.state == pb.JOB_STATE_DONE and job.cache_hit
    assert job.result_path == events[-1].result_path and len(job.anchor_previews) == 3
    data, _ = _download(server.stub, "basic-cached")
    assert len(data) == events[-1].result_size_bytes
    # Another seed is another result.
    copy.job_id, copy.parameters.seed = "basic-seed-8", 8
    other = server.stub.SubmitEdit(copy)
    assert not other.cache_hit
    server.stub.CancelJob(pb.CancelJobRequest(job_id="basic-seed-8"))
    assert watch_until_final(server.stub, "basic-seed-8")[-1].state == pb.JOB_STATE_CANCELLED


def test_upload_then_submit_by_upload_id(server, basic_job, media_root):
    content = (media_root / "clip.mp4").read_bytes()
    digest = hashlib.sha256(content).hexdigest()

    def parts(header, data, size=1000):
        yield pb.UploadMediaRequest(header=header)
        for i in range(0, len(data), size):
            yield pb.UploadMediaRequest(data=data[i : i + size])

    reply = server.stub.UploadMedia(parts(pb.UploadHeader(filename="clip.mp4", total_size=len(content), sha256=digest), content))
    assert reply.upload_id == digest and reply.size == len(content)
    request, events = basic_job
    by_upload = pb.SubmitEditRequest()
    by_upload.CopyFrom(request)
    by_upload.job_id = "basic-uploaded"
    by_upload.source.upload_id = reply.upload_id
    job = server.stub.SubmitEdit(by_upload)
    assert job.cache_hit and job.state == pb.JOB_STATE_DONE  # same content, same range, same parameters

    uploads = server.config.uploads_path
    before = sorted(p.name for p in uploads.iterdir())
    bad = pb.UploadHeader(filename="clip2.mp4", total_size=len(content), sha256="0" * 64)
    with pytest.raises(grpc.RpcError) as err:
        server.stub.UploadMedia(parts(bad, content))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "SHA-256" in err.value.details()
    short = pb.UploadHeader(filename="clip2.mp4", total_size=len(content) + 5, sha256=digest)
    with pytest.raises(grpc.RpcError) as err:
        server.stub.UploadMedia(parts(short, content))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = pb.UploadHeader(filename="big.mp4", total_size=10**12, sha256=digest)
    with pytest.raises(grpc.RpcError) as err:
        server.stub.UploadMedia(parts(huge, b"x"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for name in ("../evil.mp4", "notes.txt", ".hidden.mp4", ""):
        with pytest.raises(grpc.RpcError) as err:
            server.stub.UploadMedia(parts(pb.UploadHeader(filename=name, total_size=len(content), sha256=digest), content))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    with pytest.raises(grpc.RpcError) as err:
        server.stub.UploadMedia(iter([pb.UploadMediaRequest(data=b"no header")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(p.name for p in uploads.iterdir()) == before  # nothing half-written stays


def test_cancel_running_and_queued_then_next_runs(server, media_root):
    stub = server.stub
    long = edit_request(media_root / "clip.mp4", job_id="long-1", count=12, steps=12, seed=11)
    queued = edit_request(media_root / "clip.mp4", job_id="queued-1", count=3, seed=12)
    stub.SubmitEdit(long)
    stub.SubmitEdit(queued)
    running = wait_state(stub, "long-1", {pb.JOB_STATE_ANCHORS, pb.JOB_STATE_FRAMES})
    assert running.state in (pb.JOB_STATE_ANCHORS, pb.JOB_STATE_FRAMES)
    assert stub.GetJob(pb.GetJobRequest(job_id="queued-1")).queue_position == 0

    cancelled_queued = stub.CancelJob(pb.CancelJobRequest(job_id="queued-1"))
    assert cancelled_queued.state == pb.JOB_STATE_CANCELLED
    reply = stub.CancelJob(pb.CancelJobRequest(job_id="long-1"))
    assert reply.cancel_requested or reply.state == pb.JOB_STATE_CANCELLED
    events = watch_until_final(stub, "long-1")
    assert events[-1].state == pb.JOB_STATE_CANCELLED
    assert pb.JOB_STATE_ENCODING not in [e.state for e in events]
    assert not (server.config.results_path / "long-1").exists()
    assert not list(server.config.results_path.glob(".staging-*"))
    never = stub.GetJob(pb.GetJobRequest(job_id="queued-1"))
    assert never.state == pb.JOB_STATE_CANCELLED and never.started_unix == 0 and never.attempts == 0
    # Cancelling again is harmless; download of a cancelled job is refused.
    assert stub.CancelJob(pb.CancelJobRequest(job_id="long-1")).state == pb.JOB_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadResult(pb.DownloadResultRequest(job_id="long-1")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    cancelled = {j.job_id for j in stub.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_CANCELLED])).jobs}
    assert {"long-1", "queued-1"} <= cancelled

    # The next job runs normally; this one also renders ProRes 422 into a .mov.
    after = edit_request(media_root / "clip.mp4", job_id="after-cancel", count=3, seed=13, codec=pb.OUTPUT_CODEC_PRORES_422)
    stub.SubmitEdit(after)
    done = watch_until_final(stub, "after-cancel")[-1]
    assert done.state == pb.JOB_STATE_DONE, done.error_message
    from fairy.video import probe

    assert done.result_path.endswith(".mov") and probe(done.result_path).codec.startswith("prores")


def test_concurrent_clients_each_job_once_in_order(server, media_root):
    clients, per_client = 3, 2
    submitted: list[tuple[float, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pbg.FairyEditorStub(channel)
                for k in range(per_client):
                    path = media_root / ("ntsc.mp4" if k else "clip.mp4")
                    rate = (24000, 1001) if k else (24, 1)
                    job = stub.SubmitEdit(
                        edit_request(path, job_id=f"c{n}-{k}", count=2, rate=rate, seed=100 + n * 10 + k, steps=1)
                    )
                    with lock:
                        submitted.append((job.created_unix, job.job_id))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    jobs = [watch_until_final(server.stub, job_id)[-1] for _, job_id in sorted(submitted)]
    assert all(j.state == pb.JOB_STATE_DONE for j in jobs), [j.error_message for j in jobs]
    assert all(j.attempts == 1 for j in jobs)
    # One CPU worker: each job starts after the previous one (submission order) finished.
    for before, after in zip(jobs, jobs[1:]):
        assert before.created_unix <= after.created_unix
        assert before.finished_unix <= after.started_unix
    listed = server.stub.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_DONE], limit=1000)).jobs
    ids = [j.job_id for j in listed]
    assert all(ids.count(j.job_id) == 1 for j in jobs)
    assert all(j.state == pb.JOB_STATE_DONE for j in listed)
    ntsc = next(j for j in jobs if j.job_id.endswith("-1"))
    assert (ntsc.rendered_range.rate.num, ntsc.rendered_range.rate.den) == (24000, 1001)


def test_unknown_jobs_and_bad_calls(server):
    stub = server.stub
    for call in (
        lambda: stub.GetJob(pb.GetJobRequest(job_id="nope")),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id="nope")),
        lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id="nope"))),
        lambda: list(stub.DownloadResult(pb.DownloadResultRequest(job_id="nope"))),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ListJobs(pb.ListJobsRequest(limit=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ListJobs(pb.ListJobsRequest(states=[99]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_info(server):
    info = server.stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.api_version == "fairy.v1" and info.version
    assert info.default_model == "builtin:tiny" and list(info.loaded_models) == ["builtin:tiny"]
    assert [d.kind for d in info.devices] == ["cpu"] and info.devices[0].total_memory_bytes > 0
    assert info.limits.max_frames == 48 and info.limits.max_pixels == 40_000
    assert not info.auth_required
    assert list(info.media_roots) == [str(server.config.media_roots[0])]


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in reply.list_services_response.service}
    assert {"fairy.v1.FairyEditor", "grpc.health.v1.Health"} <= names


def test_worker_crash_requeues_the_job_and_a_new_worker_finishes_it(server, media_root):
    import os
    import signal

    from server_testing import wait_serving

    stub = server.stub
    stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="crash-1", count=8, steps=6, seed=21))
    wait_state(stub, "crash-1", {pb.JOB_STATE_ANCHORS, pb.JOB_STATE_FRAMES})
    (worker,) = server.manager.workers()
    os.kill(worker.pid, signal.SIGKILL)
    events = watch_until_final(stub, "crash-1")
    states = [e.state for e in events]
    assert pb.JOB_STATE_QUEUED in states  # back in the queue while the new worker loads the model
    assert events[-1].state == pb.JOB_STATE_DONE and events[-1].attempts == 2
    (new_worker,) = server.manager.workers()
    assert new_worker.pid != worker.pid and new_worker.alive
    wait_serving(server.channel, timeout=30)
