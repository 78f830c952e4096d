"""Plain modules without a server: path policy, uploads, security policy, the worker's job function."""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat

import numpy as np
import opentimelineio as otio
import pytest

from fairy_server.app import SecurityError, check_security, is_loopback
from fairy_server.config import ServerConfig
from fairy_server.errors import InvalidRequestError, NotFoundError, PermissionDeniedError, ResourceExhaustedError
from fairy_server.jobs import JobState
from fairy_server.messages import JobTask
from fairy_server.paths import resolve_media_path
from fairy_server.uploads import UploadStore
from fairy_server.work import PipelineCache, encode_preview, phase_fraction, run_job

from server_testing import make_plan as _plan


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1:50151", True), ("localhost:1", True), ("[::1]:5", True), ("127.8.9.1:5", True),
     ("0.0.0.0:50151", False), ("[::]:1", False), ("192.168.1.4:1", False), ("example.com:1", False)],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_non_loopback_needs_token_and_tls_or_insecure(tmp_path):
    base = dict(data_dir=tmp_path, address="0.0.0.0:50151")
    with pytest.raises(SecurityError, match="token.*TLS"):
        check_security(ServerConfig(**base))
    with pytest.raises(SecurityError, match="TLS"):
        check_security(ServerConfig(**base, token="t"))
    with pytest.raises(SecurityError, match="both"):
        check_security(ServerConfig(**base, token="t", tls_cert=tmp_path / "c.pem"))
    check_security(ServerConfig(**base, token="t", tls_cert=tmp_path / "c", tls_key=tmp_path / "k"))
    check_security(ServerConfig(**base, insecure=True))
    check_security(ServerConfig(data_dir=tmp_path, address="127.0.0.1:0"))


def test_media_path_policy(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"x")
    (root / "a.txt").write_bytes(b"x")
    outside = tmp_path / "out.mp4"
    outside.write_bytes(b"x")
    (root / "escape.mp4").symlink_to(outside)
    (root / "inside-link.mp4").symlink_to(root / "a.mp4")
    roots = (root.resolve(),)
    assert resolve_media_path(str(root / "a.mp4"), roots) == (root / "a.mp4").resolve()
    assert resolve_media_path(str(root / "inside-link.mp4"), roots) == (root / "a.mp4").resolve()
    with pytest.raises(PermissionDeniedError):
        resolve_media_path(str(root / "escape.mp4"), roots)
    with pytest.raises(PermissionDeniedError):
        resolve_media_path(str(outside), roots)
    with pytest.raises(PermissionDeniedError, match="no local media"):
        resolve_media_path(str(root / "a.mp4"), ())
    with pytest.raises(InvalidRequestError, match="video"):
        resolve_media_path(str(root / "a.txt"), roots)
    with pytest.raises(InvalidRequestError, match=r"\.\."):
        resolve_media_path(str(root / ".." / "root" / "a.mp4"), roots)
    with pytest.raises(InvalidRequestError, match="NUL"):
        resolve_media_path(str(root / "a.mp4") + "\x00", roots)
    with pytest.raises(NotFoundError):
        resolve_media_path(str(root / "b.mp4"), roots)


def test_uploads_are_checked_and_atomic(tmp_path):
    store = UploadStore(tmp_path / "up", max_bytes=1000)
    data = b"0123456789" * 10
    sha = hashlib.sha256(data).hexdigest()
    writer = store.begin("clip.mov", len(data), sha)
    writer.write(data[:50])
    assert not list((tmp_path / "up").glob("*/clip.mov"))  # nothing visible mid-upload
    writer.write(data[50:])
    assert writer.commit() == sha
    assert store.path_of(sha).read_bytes() == data
    with pytest.raises(ResourceExhaustedError):
        store.begin("clip.mov", 1001, sha)
    writer = store.begin("clip.mov", len(data), sha)
    with pytest.raises(InvalidRequestError, match="larger"):
        writer.write(data + b"x")
    writer.abort()
    with pytest.raises(NotFoundError):
        store.path_of("f" * 64)
    with pytest.raises(InvalidRequestError):
        store.path_of("../../etc")
    assert [p.name for p in (tmp_path / "up").iterdir()] == [sha]


class _Reporter:
    def __init__(self):
        self.events = []

    def phase(self, state):
        self.events.append(("phase", state))

    def progress(self, *args):
        self.events.append(("progress", args))

    def previews(self, previews):
        self.events.append(("previews", previews))

    def batch_size(self, n):
        self.events.append(("batch", n))


def _fake_edit(fail_times: int = 0, error: BaseException | None = None, record: list | None = None):
    """Stands in for fairy.editing.edit_video: writes a file, reports progress, or raises."""
    import torch
    from fairy.editing import EditProgress

    state = {"calls": 0}

    def edit(pipe, source, output, settings, *, start, frames, overwrite, on_progress, should_cancel):
        state["calls"] += 1
        if record is not None:
            record.append(settings.batch_size)
        if state["calls"] <= fail_times:
            raise torch.cuda.OutOfMemoryError("injected")
        if error is not None:
            raise error
        on_progress(EditProgress("anchors", 1, 1, 0, frames, {0: np.zeros((8, 12, 3), np.uint8)}))
        on_progress(EditProgress("frames", 1, 1, frames, frames))
        pathlib.Path(output).write_bytes(b"video")

    return edit


def _task(tmp_path, batch=4) -> JobTask:
    return JobTask(1, "job-1", _plan(source=str(tmp_path / "clip.mp4")), batch, str(tmp_path / "results"))


def test_run_job_publishes_video_and_sidecar_together(tmp_path):
    reporter = _Reporter()
    loads = []
    cache = PipelineCache(lambda m: loads.append(m) or object())
    outcome = run_job(_task(tmp_path), cache, reporter, edit_fn=_fake_edit())
    run_job(_task(tmp_path), cache, reporter, edit_fn=_fake_edit())
    assert loads == ["builtin:tiny"]  # loaded once, reused
    assert outcome.state == JobState.DONE and outcome.batch_size == 4
    video, sidecar = pathlib.Path(outcome.result_path), pathlib.Path(outcome.sidecar_path)
    assert video.parent == tmp_path / "results" / "job-1" and video.read_bytes() == b"video"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["job-1"]
    timeline = otio.adapters.read_from_file(str(sidecar))
    assert timeline.find_clips()[0].metadata["fairy"]["job_id"] == "job-1"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o666 & ~umask  # shared media, not mkstemp's 0600
    phases = [e[1] for e in reporter.events if e[0] == "phase"]
    assert phases[:3] == [JobState.LOADING_MODEL, JobState.ANCHORS, JobState.FRAMES]
    (previews,) = [e[1] for e in reporter.events if e[0] == "previews"][:1]
    assert previews[0].frame_index == 1 and previews[0].jpeg[:2] == b"\xff\xd8"


def test_out_of_memory_halves_the_batch_then_succeeds(tmp_path):
    batches: list[int] = []
    reporter = _Reporter()
    outcome = run_job(_task(tmp_path), PipelineCache(lambda m: object()), reporter, edit_fn=_fake_edit(2, record=batches))
    assert batches == [4, 2, 1] and outcome.state == JobState.DONE and outcome.batch_size == 1
    assert [e[1] for e in reporter.events if e[0] == "batch"] == [2, 1]


def test_out_of_memory_at_one_frame_is_resource_exhausted(tmp_path):
    batches: list[int] = []
    outcome = run_job(_task(tmp_path, batch=3), PipelineCache(lambda m: object()), _Reporter(), edit_fn=_fake_edit(99, record=batches))
    assert batches == [3, 1]
    assert outcome.state == JobState.FAILED and outcome.error_code == "RESOURCE_EXHAUSTED"
    assert not (tmp_path / "results" / "job-1").exists() and not list((tmp_path / "results").iterdir())


def test_cancel_and_failures_leave_nothing(tmp_path):
    from fairy.errors import EditCancelled, MediaError

    cache = PipelineCache(lambda m: object())
    for error, state, code in [
        (EditCancelled("stop"), JobState.CANCELLED, ""),
        (MediaError("cannot decode clip.mp4"), JobState.FAILED, "INVALID_ARGUMENT"),
        (ZeroDivisionError("bug"), JobState.FAILED, "INTERNAL"),
    ]:
        outcome = run_job(_task(tmp_path), cache, _Reporter(), edit_fn=_fake_edit(error=error))
        assert (outcome.state, outcome.error_code) == (state, code)
        assert not list((tmp_path / "results").iterdir())
    cancelled = run_job(_task(tmp_path), cache, _Reporter(), should_cancel=lambda: True, edit_fn=_fake_edit())
    assert cancelled.state == JobState.CANCELLED


def test_phase_fraction_and_preview():
    assert phase_fraction("decoding", 0, 2, 0, 10) == 0.0
    assert phase_fraction("anchors", 2, 2, 0, 10) == 0.25
    assert phase_fraction("frames", 0, 2, 10, 10) == 0.95
    assert phase_fraction("encoding", 1, 1, 10, 10) == 1.0
    # The frame pass moves every step, a batch of 4 at a time, as the pipeline reports it (frames_done
    # counts a batch once its last step is done): steadily, never backwards, never past the next batch.
    seen = []
    for first in range(0, 10, 4):
        batch = min(4, 10 - first)
        for step in range(1, 6):
            seen.append(phase_fraction("frames", step, 5, first + (batch if step == 5 else 0), 10, batch_frames=4))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == phase_fraction("frames", 0, 5, 10, 10)
    assert seen[4] == phase_fraction("frames", 0, 5, 4, 10)  # after the first batch: 4 of 10 frames
    preview = encode_preview(5, np.full((600, 300, 3), 200, np.uint8))
    assert (preview.width, preview.height) == (128, 256) and preview.frame_index == 5


@pytest.mark.parametrize(
    "name, model, asked, default, planned",
    [
        ("long_side", "builtin:small", None, None, 128),  # the shipped model's working size, from its fairy_model.json
        ("long_side", "builtin:tiny", None, None, 512),  # a model that says none: the paper's
        ("long_side", "builtin:small", 96, None, 96),  # the request wins
        ("long_side", "builtin:small", None, 256, 256),  # then the server's configured default
        ("guidance_scale", "builtin:small", None, None, 1.0),  # the guidance the shipped model recommends
        ("guidance_scale", "builtin:tiny", None, None, 7.5),  # InstructPix2Pix's, for a model that says none
        ("image_guidance_scale", "builtin:small", None, None, 1.0),
        ("image_guidance_scale", "builtin:tiny", None, None, 1.5),
        ("guidance_scale", "builtin:small", 0.0, 3.0, 0.0),  # the request wins, zero included
        ("image_guidance_scale", "builtin:small", None, 2.0, 2.0),
    ],
)
def test_an_unset_setting_the_model_chooses_is_the_models(tmp_path, name, model, asked, default, planned):
    from fractions import Fraction

    from fairy.video import make_test_clip
    from fairy_server.admission import plan_edit
    from fairy_server.config import Defaults
    from fairy_server.jobs import EditRequest
    from fairy_server.store import JobStore

    media = tmp_path / "media"
    media.mkdir()
    clip = make_test_clip(media / "clip.mp4", frames=4, width=64, height=48, fps=Fraction(24), audio=False)
    config = ServerConfig(data_dir=tmp_path / "data", model=model, media_roots=(media,), defaults=Defaults(**{name: default}))
    request = EditRequest(job_id="job-1", source_path=str(clip), upload_id=None, start_frame=0, frame_count=4, rate_num=24,
                          rate_den=1, handles_before=0, handles_after=0, instruction="make it night", model="", seed=0,
                          **{name: asked})  # fmt: skip
    (tmp_path / "data").mkdir()
    plan = plan_edit(request, config, JobStore(tmp_path / "data" / "jobs.sqlite3"), UploadStore(tmp_path / "up", 1 << 20))
    assert getattr(plan, name) == planned


def test_every_server_flag_says_what_it_does():
    from fairy_server.cli import build_parser

    parser = build_parser()
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert silent == []
    text = parser.format_help()
    assert "most frames one job may render" in text and "8 GiB" in text


def test_one_set_of_terminal_states_and_one_job_id_minter():
    from fairy_plugin import runner
    from fairy_plugin.client import TERMINAL_STATES as client_terminal
    from fairy_proto.v1 import fairy_pb2
    from fairy_proto.v1.jobs import TERMINAL_STATES, new_job_id
    from fairy_server import admission
    from fairy_server.jobs import FINAL_STATES, JobState
    from fairy_server.translate import STATE_TO_PROTO

    assert {STATE_TO_PROTO[s] for s in FINAL_STATES} == set(TERMINAL_STATES) == set(client_terminal)
    assert {s.value for s in FINAL_STATES} == set(runner.FINAL_STATES) == {"DONE", "FAILED", "CANCELLED"}
    # Every other state is not terminal: a job there still changes.
    assert {STATE_TO_PROTO[s] for s in JobState if s not in FINAL_STATES}.isdisjoint(TERMINAL_STATES)
    assert fairy_pb2.JOB_STATE_FRAMES not in TERMINAL_STATES
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    for job_id in ids:
        admission.check_job_id(job_id)  # the server accepts what the clients mint


def test_the_anchor_cache_is_shipped_unless_recomputing_it_is_quicker():
    from fairy_server.ray_worker import NETWORK_BYTES_PER_SECOND
    from fairy_server.splitting import SAME_MACHINE_BYTES_PER_SECOND, choose_cache_route

    small_model = choose_cache_route(169 * 2**20, 13.6, SAME_MACHINE_BYTES_PER_SECOND)  # measured here
    assert small_model.ship and small_model.ship_seconds < 0.1
    # An SD1.5-sized cache (1.45 GiB) over 10 GbE against a sub-second anchor pass: recompute.
    remote = choose_cache_route(int(1.45 * 2**30), 0.5, NETWORK_BYTES_PER_SECOND, where="another node")
    assert not remote.ship and remote.ship_seconds > remote.recompute_seconds
    assert "recomputing" in remote.describe().split("beats")[0]
    # The same cache on the same machine ships; an edit without a recorded anchor time always ships.
    assert choose_cache_route(int(1.45 * 2**30), 1.0, SAME_MACHINE_BYTES_PER_SECOND).ship
    assert choose_cache_route(int(1.45 * 2**30), 0.0, NETWORK_BYTES_PER_SECOND).ship
