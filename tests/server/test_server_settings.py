"""The server's side of the settings table: its defaults fill what a request leaves unset (and can be set
when it starts), it checks ranges with the table's messages plus its own maxima, and every job reports the
settings it renders with."""

from __future__ import annotations

from fractions import Fraction

import grpc
import pytest
from fairy_proto.v1 import fairy_pb2 as pb
from fairy_proto.v1.settings import SERVER_DEFAULT_SETTINGS, setting
from server_testing import edit_request, watch_until_final


def _plan(tmp_path, argv: list[str], **asked):
    from fairy.video import make_test_clip
    from fairy_server.admission import plan_edit
    from fairy_server.cli import build_parser, config_from_args
    from fairy_server.jobs import EditRequest
    from fairy_server.store import JobStore
    from fairy_server.uploads import UploadStore

    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    clip = make_test_clip(media / "clip.mp4", frames=4, width=64, height=48, fps=Fraction(24), audio=False)
    config = config_from_args(build_parser().parse_args(
        ["--data-dir", str(tmp_path / "data"), "--media-root", str(media), "--model", "builtin:tiny", *argv]))
    (tmp_path / "data").mkdir(exist_ok=True)
    request = EditRequest(job_id="job-1", source_path=str(clip), upload_id=None, start_frame=0, frame_count=4,
                          rate_num=24, rate_den=1, handles_before=0, handles_after=0, instruction="make it night",
                          model="", seed=0, **asked)
    return plan_edit(request, config, JobStore(tmp_path / "data" / "jobs.sqlite3"), UploadStore(tmp_path / "up", 1 << 20))


def test_unset_settings_take_the_servers_defaults_set_ones_are_kept(tmp_path):
    plan = _plan(tmp_path, [])
    for s in SERVER_DEFAULT_SETTINGS:
        if s.in_request and s.default is not None:
            assert getattr(plan, s.name) == s.default, s.name
    configured = _plan(tmp_path, ["--steps", "7", "--anchors", "0", "--noise", "per_frame", "--codec", "prores",
                                  "--guidance-scale", "5"])
    assert (configured.steps, configured.anchors, configured.noise, configured.codec) == (7, 0, "per_frame", "prores")
    assert configured.guidance_scale == 5.0
    asked = _plan(tmp_path, ["--steps", "7"], steps=3, noise="shared", anchors=2)
    assert (asked.steps, asked.noise, asked.anchors) == (3, "shared", 2)


@pytest.mark.parametrize("asked, message", [
    ({"steps": 0}, "parameters.steps must be 1 to 1000, got 0"),
    ({"anchors": -1}, "parameters.anchors must be 0 to 64, got -1"),
    ({"anchors": 17}, "parameters.anchors 17 is more than this server allows (16)"),
    ({"steps": 201}, "parameters.steps 201 is more than this server allows (200)"),
    ({"guidance_scale": float("inf")}, "parameters.guidance_scale must be a finite number"),
])
def test_out_of_range_settings_are_refused_with_the_tables_words(tmp_path, asked, message):
    from fairy_server.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _plan(tmp_path, [], **asked)


def test_a_server_flag_out_of_range_is_refused_at_start(capsys):
    from fairy_server.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--anchors", "99"])
    assert "anchors must be 0 to 64, got 99" in capsys.readouterr().err


def test_per_frame_editing_with_zero_anchors_and_the_resolved_settings(server, media_root):
    """anchors 0 is per-frame editing everywhere, the server included; the job names every setting it used."""
    request = edit_request(media_root / "clip.mp4", job_id="settings-0-anchors", start=0, count=2, steps=1, anchors=0)
    submitted = server.stub.SubmitEdit(request)
    resolved = submitted.resolved_parameters
    assert resolved.anchors == 0 and resolved.steps == 1
    assert resolved.guidance_scale == setting("guidance_scale").fallback  # builtin:tiny recommends none
    assert resolved.model == "builtin:tiny" and resolved.long_side > 0
    assert pb.NoisePolicy.Name(resolved.noise) == setting("noise").to_proto_name(setting("noise").default)
    assert pb.OutputCodec.Name(resolved.codec) == setting("codec").to_proto_name(setting("codec").default)
    final = watch_until_final(server.stub, "settings-0-anchors")[-1]
    assert final.state == pb.JOB_STATE_DONE, final.error_message
    assert not request.parameters.HasField("guidance_scale")  # it was the server that filled it in

    with pytest.raises(grpc.RpcError) as refused:
        server.stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="settings-bad", count=2, anchors=65))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "anchors must be 0 to 64, got 65" in refused.value.details()


def test_a_server_whose_last_worker_is_gone_refuses_new_jobs_as_unavailable(server, media_root):
    from fairy_server.errors import UnavailableError

    server.manager.fatal_error = "no worker process is left (exit code 1)"
    try:
        with pytest.raises(grpc.RpcError) as refused:
            server.stub.SubmitEdit(edit_request(media_root / "clip.mp4", job_id="settings-no-worker", count=2))
    finally:
        server.manager.fatal_error = None
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == UnavailableError.NO_WORKER.format(reason="no worker process is left (exit code 1)")
    assert ("fairy-error", "UnavailableError") in tuple(refused.value.trailing_metadata())
