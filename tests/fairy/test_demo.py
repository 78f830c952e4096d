"""`fairy demo`, the README's main job: sample timeline -> real fairy-server -> plugin core -> relinked timeline."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import opentimelineio as otio

from fairy.cli import main
from fairy.video import probe


def test_demo_runs_the_whole_path_with_the_shipped_model_by_default(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out-dir", str(out), "--device", "cpu", "--steps", "2", "--sample-frames", "12",
                 "-i", "make it snowy"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "builtin:small, the small model built into Fairy" in err and "instructions it knows:" in err
    source = otio.adapters.read_from_file(str(out / "sample.otio"))
    edited = otio.adapters.read_from_file(str(out / "sample_edit.otio"))
    assert len(edited.video_tracks()) == 2
    originals = source.video_tracks()[0].find_clips()
    results = edited.video_tracks()[1].find_clips()
    assert len(results) == len(originals) == 2
    for original, result in zip(originals, results):
        assert result.range_in_parent() == original.range_in_parent()
        rendered = pathlib.Path(otio.url_utils.filepath_from_url(result.media_reference.target_url))
        assert rendered.parent == out / "sample_edit_fairy"
        assert probe(rendered).frame_count == original.source_range.duration.to_frames()
        assert result.metadata["fairy"]["instruction"] == "make it snowy"
        assert result.metadata["fairy"]["settings"]["long_side"] == 128  # recorded as the server resolved it
        # The guidance the model recommends (fairy_model.json), not the paper's 7.5, which it blurs into blobs.
        assert result.metadata["fairy"]["settings"]["guidance_scale"] == 1.0
        assert result.metadata["fairy"]["settings"]["image_guidance_scale"] == 1.0
    # The server edited at the shipped model's working size (the requests left it unset).
    sidecars = sorted((out / "server").rglob("*_fairy.otio"))
    assert len(sidecars) == 2
    for sidecar in sidecars:
        clip = otio.adapters.read_from_file(str(sidecar)).find_clips()[0]
        assert clip.metadata["fairy"]["settings"]["long_side"] == 128
    # The README's picture is made from this output: per shot, its frames over the edited ones.
    figure = tmp_path / "demo.jpg"
    script = pathlib.Path(__file__).parents[2] / "bench" / "make_demo_figure.py"
    made = subprocess.run([sys.executable, str(script), "--demo-dir", str(out), "--out", str(figure)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    from PIL import Image

    with Image.open(figure) as picture:
        width, height = picture.size
    shot = probe(rendered)
    assert width == 3 * shot.width + 2 * 4 and height == 4 * shot.height + 3 * 4
