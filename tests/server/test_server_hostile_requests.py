"""Hostile paths, limits and random malformed requests against the running server.

None of these may start a job, crash the server or hang a call; each gets a
status code and a one-line message.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_testing import edit_request, wait_serving

pytestmark = pytest.mark.timeout(300)

REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND}


def _job_count(server) -> int:
    return len(server.stub.ListJobs(pb.ListJobsRequest(limit=1000)).jobs)


@pytest.fixture(scope="module")
def hostile_corpus(media_root, tmp_path_factory) -> list[str]:
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(media_root / "clip.mp4", outside / "secret.mp4")
    links = media_root / "links"
    links.mkdir(exist_ok=True)
    for name, target in [
        ("to-passwd.mp4", "/etc/passwd"),
        ("to-outside.mp4", outside / "secret.mp4"),
        ("to-outside-dir", outside),
        ("loop-a.mp4", links / "loop-b.mp4"),
        ("loop-b.mp4", links / "loop-a.mp4"),
        ("to-notes.mp4", media_root / "notes.txt"),
    ]:
        if not (links / name).is_symlink():
            os.symlink(target, links / name)
    (media_root / "folder.mp4").mkdir(exist_ok=True)
    fifo = media_root / "pipe.mp4"
    if not fifo.exists():
        os.mkfifo(fifo)
    root = str(media_root)
    return [
        "",
        "clip.mp4",
        "./clip.mp4",
        "../clip.mp4",
        f"{root}/../{media_root.name}/clip.mp4",
        f"{root}/links/../clip.mp4",
        "/etc/passwd",
        "/etc/shadow",
        "/dev/zero",
        "/proc/self/environ",
        str(outside / "secret.mp4"),
        f"{root}/links/to-passwd.mp4",
        f"{root}/links/to-outside.mp4",
        f"{root}/links/to-outside-dir/secret.mp4",
        f"{root}/links/loop-a.mp4",
        f"{root}/links/to-notes.mp4",
        f"{root}/notes.txt",
        f"{root}/folder.mp4",
        f"{root}/pipe.mp4",
        f"{root}/missing.mp4",
        f"{root}/clip.mp4\x00.txt",
        f"{root}/clip.mp4\n",
        "~/clip.mp4",
        f"file://{root}/clip.mp4",
        "\\\\server\\share\\clip.mp4",
        "C:\\Windows\\win.ini",
        "/" + "a" * 5000 + ".mp4",
        f"{root}/" + "b" * 300 + ".mp4",
        root,
    ]


def test_hostile_paths_are_refused(server, hostile_corpus):
    before = _job_count(server)
    for path in hostile_corpus:
        request = edit_request("x", job_id="", count=2)
        request.source.path = path
        with pytest.raises(grpc.RpcError) as err:
            server.stub.SubmitEdit(request, timeout=30)
        assert err.value.code() in REFUSALS, (path, err.value.code(), err.value.details())
        assert err.value.details() and "\n" not in err.value.details(), path
    assert _job_count(server) == before


def test_outside_roots_is_permission_denied_without_revealing_existence(server, media_root):
    for path in ("/etc/passwd.mp4", "/definitely/not/here.mp4", "/etc/hosts"):
        request = edit_request(path, count=2)
        with pytest.raises(grpc.RpcError) as err:
            server.stub.SubmitEdit(request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, path


@pytest.fixture(scope="module")
def big_clip(media_root):
    from fairy.video import make_test_clip

    path = media_root / "big.mp4"
    if not path.exists():
        make_test_clip(path, frames=2, width=256, height=256, fps=Fraction(24), audio=False)
    return path


def test_limits(server, media_root, big_clip):
    clip = media_root / "clip.mp4"
    cases = [
        (edit_request(clip, instruction="x" * 201), grpc.StatusCode.INVALID_ARGUMENT, "instruction"),
        (edit_request(clip, instruction="   "), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (edit_request(clip, count=49), grpc.StatusCode.RESOURCE_EXHAUSTED, "frames"),
        (edit_request(big_clip, count=1), grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
        (edit_request(clip, count=0), grpc.StatusCode.INVALID_ARGUMENT, "frame_count"),
        (edit_request(clip, start=-1), grpc.StatusCode.INVALID_ARGUMENT, "start_frame"),
        (edit_request(clip, start=10, count=4), grpc.StatusCode.INVALID_ARGUMENT, "past the end"),
        (edit_request(clip, rate=(25, 1)), grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
        (edit_request(clip, rate=(0, 0)), grpc.StatusCode.INVALID_ARGUMENT, "rate"),
        (edit_request(clip, steps=100_000), grpc.StatusCode.INVALID_ARGUMENT, "steps"),
        (edit_request(clip, long_side=0), grpc.StatusCode.INVALID_ARGUMENT, "long_side"),
        (edit_request(clip, guidance_scale=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (edit_request(clip, model="/etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT, "model"),
        (edit_request(clip, job_id="../../etc"), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
        (edit_request(clip, job_id="a" * 200), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
        (pb.SubmitEditRequest(instruction="x"), grpc.StatusCode.INVALID_ARGUMENT, "source"),
    ]
    before = _job_count(server)
    for request, code, word in cases:
        with pytest.raises(grpc.RpcError) as err:
            server.stub.SubmitEdit(request, timeout=30)
        assert err.value.code() == code, (word, err.value.details())
        assert word in err.value.details() and "\n" not in err.value.details()
    # Over the message size limit: refused by gRPC before the servicer sees it.
    with pytest.raises(grpc.RpcError) as err:
        server.stub.SubmitEdit(edit_request(clip, instruction="x" * (5 * 1024 * 1024)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _job_count(server) == before


_METHODS = {
    "/fairy.v1.FairyEditor/SubmitEdit": "unary",
    "/fairy.v1.FairyEditor/GetJob": "unary",
    "/fairy.v1.FairyEditor/CancelJob": "unary",
    "/fairy.v1.FairyEditor/ListJobs": "unary",
    "/fairy.v1.FairyEditor/GetServerInfo": "unary",
    "/fairy.v1.FairyEditor/WatchJob": "stream",
    "/fairy.v1.FairyEditor/DownloadResult": "stream",
    "/fairy.v1.FairyEditor/UploadMedia": "client-stream",
}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(sorted(_METHODS)), payload=st.binary(max_size=300))
def test_random_bytes_never_crash_the_server(server, method, payload):
    kind = _METHODS[method]
    channel = server.channel
    try:
        if kind == "unary":
            channel.unary_unary(method)(payload, timeout=10)
        elif kind == "stream":
            call = channel.unary_stream(method)(payload, timeout=10)
            for _ in call:
                call.cancel()
                break
        else:
            channel.stream_unary(method)(iter([payload, payload]), timeout=10)
    except grpc.RpcError as err:
        assert err.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the server hung"
        assert err.code() != grpc.StatusCode.UNAVAILABLE, "the server went away"


_text = st.text(max_size=40)
_ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 30))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    job_id=_text,
    path=st.one_of(_text, st.sampled_from(["/etc/passwd", "clip.mp4", "/"])),
    upload_id=st.one_of(st.none(), _text),
    start=_ints, count=_ints, num=_ints, den=_ints, before=_ints, after=_ints,
    instruction=_text,
    steps=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    scale=st.one_of(st.none(), st.floats(width=32)),
    codec=st.integers(0, 2**31 - 1),
    labels=st.dictionaries(_text, _text, max_size=3),
)
def test_random_submit_requests_get_a_status(server, media_root, job_id, path, upload_id, start, count, num, den,
                                             before, after, instruction, steps, scale, codec, labels):
    request = pb.SubmitEditRequest(
        job_id=job_id,
        range=pb.FrameRange(start_frame=start, frame_count=count, rate=pb.Rational(num=num, den=den)),
        handles=pb.Handles(before=before, after=after),
        instruction=instruction,
        labels=labels,
    )
    if upload_id is None:
        request.source.path = path if path != "clip.mp4" else str(media_root / path)
    else:
        request.source.upload_id = upload_id
    if steps is not None:
        request.parameters.steps = steps
    if scale is not None:
        request.parameters.guidance_scale = scale
    request.parameters.codec = codec
    try:
        job = server.stub.SubmitEdit(request, timeout=30)
    except grpc.RpcError as err:
        assert err.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), err.details()
        assert "\n" not in err.details()
    else:  # a random request that happens to be valid: don't let it occupy the worker
        server.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))


def test_server_still_serving_after_abuse(server):
    wait_serving(server.channel, timeout=10)
    assert server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).default_model == "builtin:tiny"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(job_id=st.text(max_size=200), which=st.integers(-5, 10), states=st.lists(st.integers(-3, 12), max_size=4),
       limit=st.integers(-(2**31), 2**31 - 1))
def test_random_job_calls_get_a_clean_status(server, job_id, which, states, limit):
    stub = server.stub
    calls = [
        lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10),
        lambda: next(iter(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10))),
        lambda: list(stub.DownloadResult(pb.DownloadResultRequest(job_id=job_id, file=which), timeout=10)),
        lambda: stub.ListJobs(pb.ListJobsRequest(states=states, limit=limit), timeout=10),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), err.details()
            assert "\n" not in err.details()
