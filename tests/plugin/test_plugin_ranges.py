"""Range math: media ranges at the media's own rate, mixed rates in one
timeline, drop-frame timecode, handles, --range parsing."""

from __future__ import annotations

import fractions

import hypothesis.strategies as st
import opentimelineio as otio
import pytest
from hypothesis import given, settings
from opentimelineio.opentime import RationalTime, TimeRange

from fairy_plugin.errors import ClipError, SelectionError
from fairy_plugin.ranges import (clip_media_range, clip_timeline_range, exact_rate, media_path, parse_range,
                                 parse_time, timeline_rate)
from fairy_plugin.relink import is_result_track, place_on_track_above
from otio_helpers import SAMPLES_DIR, done_job, same_span, seen_range_by_otio, serialized_tracks

F = fractions.Fraction
NTSC_24, NTSC_30 = 24000 / 1001, 30000 / 1001


def _clip(name, url, start, count, rate, available=None):
    reference = otio.schema.ExternalReference(
        target_url=url,
        available_range=None if available is None else TimeRange(RationalTime(available[0], rate),
                                                                  RationalTime(available[1], rate)))
    return otio.schema.Clip(name=name, media_reference=reference,
                            source_range=TimeRange(RationalTime(start, rate), RationalTime(count, rate)))


def _mixed_timeline():
    """A 24 fps timeline holding 23.976, 29.97, 25 and 24 fps media (as an
    editor exports it: each clip's range at its media's rate)."""
    timeline = otio.schema.Timeline(name="mixed", global_start_time=RationalTime(86400, 24))
    track = otio.schema.Track(name="V1")
    track.append(_clip("ntsc film", "file:///m/a.mov", 10, 48, NTSC_24, available=(0, 100)))
    track.append(otio.schema.Gap(source_range=TimeRange(RationalTime(0, 24), RationalTime(7, 24))))
    track.append(_clip("ntsc video", "file:///m/b.mov", 107892 + 30, 60, NTSC_30, available=(107892, 300)))
    track.append(_clip("pal", "file:///m/c.mov", 5, 50, 25, available=(0, 80)))
    track.append(_clip("film", "file:///m/d.mov", 0, 24, 24))
    timeline.tracks.append(track)
    return timeline


def test_exact_rates():
    assert exact_rate(23.976) == F(24000, 1001)
    assert exact_rate(23.98) == F(24000, 1001)
    assert exact_rate(NTSC_24) == F(24000, 1001)
    assert exact_rate(29.97) == F(30000, 1001)
    assert exact_rate(59.94) == F(60000, 1001)
    assert exact_rate(25) == 25 and exact_rate(24.0) == 24 and exact_rate(30) == 30
    with pytest.raises(ClipError):
        exact_rate(0)


def test_mixed_rate_clips_get_their_media_frames_at_their_own_rate():
    timeline = _mixed_timeline()
    a, b, c, d = timeline.find_clips()
    assert clip_media_range(a) == clip_media_range(a)  # frozen dataclass, comparable
    ra, rb, rc, rd = (clip_media_range(x) for x in (a, b, c, d))
    assert (ra.media_path, ra.start_frame, ra.frame_count, ra.rate) == ("/m/a.mov", 10, 48, F(24000, 1001))
    # 29.97 media whose timecode starts at 01:00:00;00 (frame 107892): frames count from its first frame.
    assert (rb.start_frame, rb.frame_count, rb.rate) == (30, 60, F(30000, 1001))
    assert (rc.start_frame, rc.frame_count, rc.rate) == (5, 50, F(25))
    # No available range: the source range's own rate and numbering.
    assert (rd.start_frame, rd.frame_count, rd.rate) == (0, 24, F(24))


def test_mixed_rate_results_land_exactly_over_their_sources(tmp_path):
    timeline = _mixed_timeline()
    original = serialized_tracks(timeline)
    pairs = []
    for clip in timeline.find_clips():
        new = place_on_track_above(timeline, clip, f"/r/{clip.name}.mp4", done_job(clip))
        pairs.append((clip, new))
    for clip, new in pairs:
        assert same_span(new.range_in_parent(), seen_range_by_otio(clip, timeline))
        assert same_span(new.range_in_parent(), clip_timeline_range(clip))
        # The result clip counts frames at the media's rate, like its source.
        assert new.source_range.duration.rate == pytest.approx(clip.source_range.duration.rate)
    assert serialized_tracks(timeline, keep=lambda t: not is_result_track(t)) == original
    # 29.97 clip sits after 48 frames of 23.976 and a 7-frame gap at 24.
    ntsc_video = pairs[1][1]
    assert ntsc_video.range_in_parent().start_time.to_seconds() == pytest.approx(48 * 1001 / 24000 + 7 / 24)
    path = tmp_path / "mixed.otio"
    otio.adapters.write_to_file(timeline, str(path))
    back = otio.adapters.read_from_file(str(path))
    results = [c for c in back.find_clips() if "fairy" in c.metadata]
    for (clip, new), again in zip(pairs, results):
        assert same_span(again.range_in_parent(), new.range_in_parent())


def test_handles_are_clamped_to_the_media():
    timeline = _mixed_timeline()
    a, b, c, d = timeline.find_clips()
    # a uses 10..57 of 0..99: 10 before at most, 42 after.
    assert (clip_media_range(a, handles=12).handles_before, clip_media_range(a, handles=12).handles_after) == (10, 12)
    assert clip_media_range(a, handles=50).handles_after == 42
    # c uses 5..54 of 0..79.
    rc = clip_media_range(c, handles=30)
    assert (rc.handles_before, rc.handles_after) == (5, 25)
    # d: unknown media length, so the server is asked and clamps (rendered_range says).
    rd = clip_media_range(d, handles=6)
    assert (rd.handles_before, rd.handles_after) == (0, 6)
    with pytest.raises(ClipError, match="handles must be 0 or more"):
        clip_media_range(a, handles=-1)


def test_drop_frame_timecode_and_frames():
    assert parse_time("00:01:00;02", NTSC_30) == RationalTime(1800, NTSC_30)      # DF skips ;00 and ;01
    assert parse_time("00:01:00:02", NTSC_30) == RationalTime(1802, NTSC_30)      # NDF counts them
    assert parse_time("00:10:00;00", NTSC_30).value == 17982
    start = RationalTime.from_timecode("01:00:00;00", NTSC_30)
    assert parse_time("01:00:01;00", NTSC_30, start=start).value == 30
    assert parse_time("240", 24).value == 240
    assert parse_time("00:00:10:00", 25).value == 250


def test_parse_range():
    start = RationalTime(86400, 24)
    r = parse_range("01:00:10:00-01:00:20:00", 24, start=start)
    assert r == TimeRange(RationalTime(240, 24), RationalTime(240, 24))
    assert parse_range("240-480", 24) == TimeRange(RationalTime(240, 24), RationalTime(240, 24))
    assert parse_range("01:00:00;00-01:00:01;00", NTSC_30,
                       start=RationalTime.from_timecode("01:00:00;00", NTSC_30)).duration.value == 30
    for bad, message in [("240", "must be START-END"), ("480-240", "ends before it starts"),
                         ("1:2-3", "neither a frame number nor a timecode"),
                         ("00:00:01:00-00:00:02:00", "before the timeline's start"),
                         ("01:00:00:99-01:00:01:00", "not a valid timecode"),
                         ("-5", "must be START-END")]:
        with pytest.raises(SelectionError, match=message):
            parse_range(bad, 24, start=start)


def test_timeline_rate():
    assert timeline_rate(_mixed_timeline()) == 24
    t = otio.schema.Timeline(global_start_time=RationalTime(0, 29.97))
    assert timeline_rate(t) == NTSC_30
    t = otio.adapters.read_from_file(str(SAMPLES_DIR / "simple_cut.otio"))
    assert timeline_rate(t) == 24


def test_media_paths(tmp_path):
    ref = otio.schema.ExternalReference
    assert media_path(ref("file:///media/My%20Shot%20%231.mov")) == "/media/My Shot #1.mov"
    assert media_path(ref("file://localhost/media/a.mov")) == "/media/a.mov"
    assert media_path(ref("/abs/a.mov")) == "/abs/a.mov"
    assert media_path(ref("shots/a.mov"), base_dir=tmp_path) == str(tmp_path / "shots/a.mov")
    with pytest.raises(ClipError, match="clip 'x' has no media"):
        media_path(otio.schema.MissingReference(), clip_name="x")
    with pytest.raises(ClipError, match="not a local file"):
        media_path(ref("https://example.com/a.mov"))
    with pytest.raises(ClipError, match="ImageSequenceReference"):
        media_path(otio.schema.ImageSequenceReference(target_url_base="file:///seq/"))
    with pytest.raises(ClipError, match="empty media URL"):
        media_path(ref(""))


def test_clips_outside_their_media_are_refused():
    early = _clip("early", "file:///a.mov", 2, 10, 24, available=(5, 100))
    late = _clip("late", "file:///a.mov", 90, 20, 24, available=(0, 100))
    for clip, message in [(early, "starts 3 frames before"), (late, "uses frames 90-109 but its media has only 100")]:
        track = otio.schema.Track()
        track.append(clip)
        with pytest.raises(ClipError, match=message):
            clip_media_range(clip)


_RATES = st.sampled_from([24.0, 25.0, NTSC_24, NTSC_30, 30.0, 50.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 200), st.integers(0, 500), _RATES), min_size=1, max_size=8),
       st.integers(0, 3))
def test_any_track_layout_places_results_exactly(items, nest_at):
    """Random gaps and clips of random rates, some inside a nested stack."""
    timeline = otio.schema.Timeline()
    top = otio.schema.Track(name="V1")
    nested_track = otio.schema.Track(name="inner")
    for i, (is_clip, count, start, rate) in enumerate(items):
        target = nested_track if i == nest_at else top
        if is_clip:
            target.append(_clip(f"c{i}", f"file:///m/{i}.mov", start, count, rate, available=(0, start + count + 5)))
        else:
            target.append(otio.schema.Gap(source_range=TimeRange(RationalTime(0, rate), RationalTime(count, rate))))
        if i == nest_at:
            stack = otio.schema.Stack(name="nest")
            stack.append(nested_track)
            top.append(stack)
    timeline.tracks.append(top)
    original = serialized_tracks(timeline)
    for clip in list(timeline.find_clips()):
        expected = seen_range_by_otio(clip, timeline)
        new = place_on_track_above(timeline, clip, "/r/x.mp4", done_job(clip))
        assert same_span(new.range_in_parent(), expected)
        assert clip_media_range(clip).frame_count == round(clip.source_range.duration.value)
    assert serialized_tracks(timeline, keep=lambda t: not is_result_track(t)) == original
