"""The whole way a user goes: a real `fairy-server` (tiny model, CPU) started as
a process (the session's, tests/conftest.py), a timeline referencing a real clip
in its media root, `fairy timeline edit`, and the relinked timeline with the
rendered clip."""

from __future__ import annotations

import io
import pathlib
from fractions import Fraction

import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange

from fairy_plugin.ranges import clip_timeline_range
from fairy_plugin.relink import is_result_track
from fairy_plugin.timeline import main
from otio_helpers import same_span, serialized_tracks


@pytest.mark.slow
def test_edit_a_sample_timeline_through_the_real_server(live, tmp_path):
    from fairy.video import make_test_clip, probe

    address, media = live.address, live.media_root
    shot = make_test_clip(media / "e2e-shot.mp4", frames=12, width=96, height=64, fps=Fraction(24))
    timeline = otio.schema.Timeline(name="e2e", global_start_time=RationalTime(86400, 24))
    track = otio.schema.Track(name="V1")
    track.append(otio.schema.Gap(source_range=TimeRange(RationalTime(0, 24), RationalTime(5, 24))))
    track.append(otio.schema.Clip(
        name="shot", media_reference=otio.schema.ExternalReference(
            target_url=shot.resolve().as_uri(), available_range=TimeRange(RationalTime(0, 24), RationalTime(12, 24))),
        source_range=TimeRange(RationalTime(2, 24), RationalTime(8, 24))))
    # A 23.976 clip on the same 24 fps timeline: the server must accept the exact rate 24000/1001.
    ntsc_rate = 24000 / 1001
    ntsc = make_test_clip(media / "e2e-ntsc.mp4", frames=10, width=96, height=64, fps=Fraction(24000, 1001))
    track.append(otio.schema.Clip(
        name="ntsc", media_reference=otio.schema.ExternalReference(
            target_url=ntsc.resolve().as_uri(),
            available_range=TimeRange(RationalTime(0, ntsc_rate), RationalTime(10, ntsc_rate))),
        source_range=TimeRange(RationalTime(1, ntsc_rate), RationalTime(6, ntsc_rate))))
    timeline.tracks.append(track)
    inp, out = tmp_path / "cut.otio", tmp_path / "cut_edit.otio"
    otio.adapters.write_to_file(timeline, str(inp))

    err = io.StringIO()
    rc = main(["edit", str(inp), "-i", "make it snowy", "-o", str(out), "--server", address, "--steps", "2",
               "--anchors", "2", "--long-side", "64", "--handles", "2", "--seed", "1", "--connect-timeout", "120"], stderr=err)
    assert rc == 0, err.getvalue()

    original = otio.adapters.read_from_file(str(inp))
    result = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(result, keep=lambda t: not is_result_track(t)) == serialized_tracks(original)
    new, new_ntsc = result.tracks[1].find_clips()
    for source, placed in zip(original.find_clips(), (new, new_ntsc)):
        assert same_span(placed.range_in_parent(), clip_timeline_range(source))
    assert new.range_in_parent() == TimeRange(RationalTime(5, 24), RationalTime(8, 24))
    # The rendered clip: the 8 used frames plus 2 handle frames each side, at the source's rate.
    rendered = pathlib.Path(otio.url_utils.filepath_from_url(new.media_reference.target_url))
    assert rendered.parent == tmp_path / "cut_edit_fairy"
    info = probe(rendered)
    assert info.frame_count == 12 and info.fps == Fraction(24)
    assert new.source_range == TimeRange(RationalTime(2, 24), RationalTime(8, 24))
    assert new.media_reference.available_range.duration == RationalTime(12, 24)
    meta = new.metadata["fairy"]
    assert meta["instruction"] == "make it snowy" and meta["seed"] == 1 and meta["model"] == "builtin:tiny"
    assert meta["handles"] == {"before": 2, "after": 2}
    # The 23.976 clip: frames 1-6 plus 1 handle before (all there is) and 2 after, at 24000/1001.
    ntsc_info = probe(otio.url_utils.filepath_from_url(new_ntsc.media_reference.target_url))
    assert ntsc_info.fps == Fraction(24000, 1001) and ntsc_info.frame_count == 9
    ntsc_source = new_ntsc.metadata["fairy"]["source"]
    assert (ntsc_source["start_frame"], ntsc_source["frame_count"], ntsc_source["rate"]) == (1, 6, "24000/1001")
