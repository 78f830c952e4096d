"""`fairy edit` and fairy.editing.edit_video on real files: results, bad input, cancel."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from fairy.cli import main
from fairy.editing import EditSettings, edit_video
from fairy.errors import EditCancelled
from fairy.video import make_test_clip, probe

FAST = ["--model", "builtin:tiny", "--steps", "2", "--long-side", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    return make_test_clip(folder / "source.mp4", frames=10, width=98, height=62, fps=Fraction(30000, 1001))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_edit_writes_the_range_at_the_source_rate_size_and_audio(clip, tmp_path, capsys):
    before = _digest(clip)
    out = tmp_path / "edited.mp4"
    code, err = _run(capsys, "edit", clip, "-i", "make it snow", "-o", out, "--start", 2, "--frames", 7, *FAST)
    assert code == 0, err
    info = probe(out)
    assert (info.frame_count, info.fps, info.width, info.height) == (7, Fraction(30000, 1001), 98, 62)
    assert info.has_audio
    assert "anchors" in err and "frames" in err  # both progress bars were drawn
    assert _digest(clip) == before


def test_console_script_is_installed(clip, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fairy.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("fairy ")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "input file not found"),
        ("not-video", "not a media file"),
        ("past-end", "past the end"),
        ("start-past-end", "past the end"),
        ("zero", "zero frames"),
        ("empty", "instruction is empty"),
        ("exists", "already exists"),
        ("same", "is the input itself"),
        ("same-overwrite", "is the input itself"),
        ("no-folder", "output folder does not exist"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(clip, tmp_path, capsys, case, message):
    source, out, extra, instruction = clip, tmp_path / "out.mp4", [], "make it snow"
    if case == "missing":
        source = tmp_path / "nope.mp4"
    elif case == "not-video":
        source = tmp_path / "notes.mp4"
        source.write_text("this is not a video")
    elif case == "past-end":
        extra = ["--start", "5", "--frames", "6"]
    elif case == "start-past-end":
        extra = ["--start", "10"]
    elif case == "zero":
        extra = ["--frames", "0"]
    elif case == "empty":
        instruction = "  "
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case in ("same", "same-overwrite"):
        out = clip
        extra = ["--overwrite"] if case == "same-overwrite" else []
    elif case == "no-folder":
        out = tmp_path / "missing" / "out.mp4"
    before = _digest(clip)
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(capsys, "edit", source, "-i", instruction, "-o", out, *extra, *FAST)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fairy: error: "), err


    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written, nothing left behind
    assert _digest(clip) == before
    if case == "exists":
        assert out.read_bytes() == b"keep me"


def test_overwrite_replaces_an_existing_output(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    code, err = _run(capsys, "edit", clip, "-i", "make it snow", "-o", out, "--frames", 3, "--overwrite", *FAST)
    assert code == 0, err
    assert probe(out).frame_count == 3


def test_cancel_leaves_no_file(tiny_pipe, clip, tmp_path):
    calls = []

    def cancel_on_fourth_check():
        calls.append(1)
        return len(calls) >= 4

    with pytest.raises(EditCancelled):
        edit_video(tiny_pipe, clip, tmp_path / "out.mp4", EditSettings("make it snow", steps=2, long_side=64),
                   should_cancel=cancel_on_fourth_check)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_progress_and_anchor_previews(tiny_pipe, clip, tmp_path):
    reports = []
    result = edit_video(tiny_pipe, clip, tmp_path / "out.mov", EditSettings("make it snow", steps=2, long_side=64,
                        anchors=2, batch_size=3, codec="prores"), on_progress=reports.append)  # fmt: skip
    previews = [r.anchor_previews for r in reports if r.anchor_previews]
    assert len(previews) == 1 and sorted(previews[0]) == [2, 7]  # anchors of 10 frames, K = 2
    assert all(p.shape == (48, 64, 3) and p.dtype == np.uint8 for p in previews[0].values())
    frames_done = [r.frames_done for r in reports if r.phase == "frames"]
    assert frames_done == sorted(frames_done) and frames_done[-1] == 10
    assert result.anchor_indices == (2, 7)
    info = probe(tmp_path / "out.mov")
    assert info.codec.startswith("prores") and info.frame_count == 10


@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_batch_size_changes_nothing_in_the_written_frames(tiny_pipe, clip, tmp_path, batch_size):
    """Streaming in batches (the last batch full or not) writes the same frames: 8 non-anchor frames of 10."""
    from fairy.video import iter_frames

    out = tmp_path / f"b{batch_size}.mov"
    edit_video(tiny_pipe, clip, out, EditSettings("make it snow", steps=2, long_side=64, anchors=2,
               batch_size=batch_size, codec="prores"))  # fmt: skip
    frames = np.stack(list(iter_frames(out, 0, 10))).astype(np.int16)
    reference = tmp_path / "reference.mov"
    if not reference.exists():
        edit_video(tiny_pipe, clip, reference, EditSettings("make it snow", steps=2, long_side=64, anchors=2,
                   batch_size=3, codec="prores"))  # fmt: skip
    expected = np.stack(list(iter_frames(reference, 0, 10))).astype(np.int16)
    # The edits agree to one 8-bit level before encoding (README: noise policy), but a lossy
    # codec can amplify that on the tiny model's noise-like pictures, so compare per-frame means;
    # a frame written out of order or from the wrong batch differs by tens of levels.
    per_frame = np.abs(frames - expected).mean(axis=(1, 2, 3))
    assert np.abs(frames[1:] - expected[:-1]).mean() > 10 * per_frame.max() + 1  # the check can tell frames apart
    assert per_frame.max() <= 2


def test_unset_guidance_and_size_are_the_models_own(clip, tmp_path, tiny_model_dir, capsys):
    """A model folder whose fairy_model.json recommends guidance and a working size is edited with them
    when the caller leaves them unset; a value given wins."""
    import json
    import shutil

    from fairy.loading import load_pipeline

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "fairy_model.json").write_text(json.dumps(
        {"long_side": 64, "recommended": {"guidance_scale": 1.0, "image_guidance_scale": 1.0}}))
    pipe = load_pipeline(str(model), device="cpu")
    assert pipe.model_defaults == {"guidance_scale": 1.0, "image_guidance_scale": 1.0, "long_side": 64}

    def edit(name, **settings):
        out = tmp_path / name
        edit_video(pipe, clip, out, EditSettings("make it snow", steps=2, **settings), frames=3)
        return _digest(out)

    unset = edit("unset.mp4")
    assert unset == edit("explicit.mp4", guidance_scale=1.0, image_guidance_scale=1.0, long_side=64)
    assert unset != edit("paper.mp4", guidance_scale=7.5, image_guidance_scale=1.5)
    # fairy edit: the same file as the library's, from the same model folder with no guidance flags.
    out = tmp_path / "cli.mp4"
    code, err = _run(capsys, "edit", clip, "-i", "make it snow", "-o", out, "--frames", 3, "--steps", 2,
                     "--model", model, "--device", "cpu")
    assert code == 0, err
    assert _digest(out) == unset
    # One UNet branch at guidance 1 (InstructPix2Pix's rule), three at the paper's.
    settings = EditSettings("x").for_model(pipe.model_defaults)
    assert settings.params().num_branches == 1
    assert EditSettings("x", guidance_scale=7.5).for_model(pipe.model_defaults).params().num_branches == 3
