"""Relinking results into the real OTIO sample timelines (nested stacks,
transitions, gaps, several tracks) and into mixed-rate timelines."""

from __future__ import annotations

import pathlib

import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange

from fairy_plugin.errors import ClipError
from fairy_plugin.ranges import clip_timeline_range, clip_used_frames, top_level_track
from fairy_plugin.relink import add_as_media_reference, is_result_track, place_on_track_above
from otio_helpers import SAMPLES_DIR, done_job, same_span, seen_range_by_otio, serialized_tracks

SAMPLES = sorted(SAMPLES_DIR.glob("*.otio"))
# Clips under a speed or freeze effect are refused (their frames are not 1:1).
RETIMED = {("nested_example.otio", "Clip Inside A Stack 2"), ("nested_example.otio", "Clip Inside A Track")}


def test_samples_are_there():
    assert len(SAMPLES) == 6


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_result_lands_over_its_source_and_nothing_else_changes(sample, tmp_path):
    timeline = otio.adapters.read_from_file(str(sample))
    original = serialized_tracks(timeline)
    sources = list(timeline.find_clips())
    placed = []
    for clip in sources:
        if (sample.name, clip.name) in RETIMED:
            with pytest.raises(ClipError, match="retimed by a (LinearTimeWarp|FreezeFrame)"):
                clip_used_frames(clip)
            continue
        expected = seen_range_by_otio(clip, timeline)
        job = done_job(clip, handles_before=0)
        new = place_on_track_above(timeline, clip, str(tmp_path / f"{job.job_id}.mp4"), job)
        placed.append((clip, new, expected))
    assert placed, "every sample has editable clips"

    # Every result: on a result track above its source's track, at exactly its range.
    for clip, new, expected in placed:
        track = new.parent()
        assert is_result_track(track) and track.parent() is timeline.tracks
        assert timeline.tracks.index(track) > timeline.tracks.index(top_level_track(clip))
        assert same_span(new.range_in_parent(), expected), (clip.name, new.range_in_parent(), expected)
        assert new.metadata["fairy"]["source"]["name"] == clip.name
        assert new.metadata["fairy"]["instruction"] == "make it snowy"

    # Nothing else changed: the original tracks, in order, serialize as before,
    # and so does the whole timeline once the result tracks are taken out.
    assert serialized_tracks(timeline, keep=lambda t: not is_result_track(t)) == original
    stripped = timeline.deepcopy()
    for index in reversed([i for i, t in enumerate(stripped.tracks) if is_result_track(t)]):
        del stripped.tracks[index]
    pristine = otio.adapters.read_from_file(str(sample))
    assert otio.adapters.write_to_string(stripped, "otio_json") == otio.adapters.write_to_string(pristine, "otio_json")

    # The written file reads back with the same placements.
    out = tmp_path / "out.otio"
    otio.adapters.write_to_file(timeline, str(out))
    back = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(back) == serialized_tracks(timeline)
    results = [c for c in back.find_clips() if "fairy" in c.metadata]
    assert len(results) == len(placed)
    by_job = {c.metadata["fairy"]["job_id"]: c for c in results}
    for _, new, _ in placed:
        again = by_job[new.metadata["fairy"]["job_id"]]
        assert same_span(again.range_in_parent(), new.range_in_parent())


def test_nested_clip_is_placed_where_its_trimmed_stack_shows_it():
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "nested_example.otio"))
    clip = next(c for c in timeline.find_clips() if c.name == "Clip Inside A Stack 1")
    # The stack shows 31 of the clip's 37 frames, from timeline frame 238.
    assert clip_timeline_range(clip) == TimeRange(RationalTime(238, 24), RationalTime(31, 24))
    assert clip_used_frames(clip)[:2] == (373, 31)
    new = place_on_track_above(timeline, clip, "/r/a.mp4", done_job(clip))
    assert new.range_in_parent() == TimeRange(RationalTime(238, 24), RationalTime(31, 24))


def test_results_reuse_a_free_result_track_and_stack_up_when_busy(tmp_path):
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "simple_cut.otio"))
    first, second = list(timeline.find_clips())[:2]
    a = place_on_track_above(timeline, first, "/r/a.mp4", done_job(first))
    b = place_on_track_above(timeline, second, "/r/b.mp4", done_job(second))
    assert a.parent() is b.parent()  # free there: same result track
    c = place_on_track_above(timeline, first, "/r/c.mp4", done_job(first, instruction="night"))
    assert c.parent() is not a.parent()  # busy there: a new track above
    names = [t.name for t in timeline.tracks]
    assert names == ["Track-001", "Fairy 1", "Fairy 2"]
    assert same_span(c.range_in_parent(), a.range_in_parent())
    # The earlier results kept their places when the track was rebuilt.
    assert a.range_in_parent() == TimeRange(RationalTime(0, 24), RationalTime(3, 24))
    assert b.range_in_parent() == TimeRange(RationalTime(3, 24), RationalTime(6, 24))


def test_result_track_goes_right_above_the_source_track():
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "multitrack.otio"))
    clip = next(c for c in timeline.find_clips() if c.name == "t-hawk (loop)-HD.mp4")  # on "Sequence 2"
    place_on_track_above(timeline, clip, "/r/a.mp4", done_job(clip))
    assert [t.name for t in timeline.tracks] == ["Sequence", "Sequence 2", "Fairy 1", "Sequence 3"]


def test_result_clip_points_at_the_file_with_handles_outside_its_range():
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "transition.otio"))
    clip = next(c for c in timeline.find_clips() if c.name == "Clip-002")  # media 0..9, uses 2..8
    job = done_job(clip, handles_before=2, handles_after=1)
    new = place_on_track_above(timeline, clip, "/renders/wind up.mp4", job, name="Snowy")
    assert new.name == "Snowy"
    assert new.media_reference.target_url == "file:///renders/wind%20up.mp4"
    assert new.media_reference.available_range == TimeRange(RationalTime(0, 24), RationalTime(9, 24))
    assert new.source_range == TimeRange(RationalTime(2, 24), RationalTime(6, 24))
    meta = new.metadata["fairy"]
    assert meta["job_id"] == job.job_id and meta["seed"] == 3 and meta["model"] == "builtin:tiny"
    assert meta["settings"]["steps"] == 4
    assert meta["handles"] == {"before": 2, "after": 1}
    assert meta["source"] == {"name": "Clip-002", "media": "/folder/wind-up.mov", "start_frame": 2,
                              "frame_count": 6, "rate": "24/1"}


def test_a_job_for_other_frames_is_refused(tmp_path):
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "simple_cut.otio"))
    clip = timeline.find_clips()[0]
    job = done_job(clip)
    clip.source_range = TimeRange(RationalTime(1, 24), RationalTime(3, 24))  # trimmed since
    before = serialized_tracks(timeline)
    with pytest.raises(ClipError, match="the timeline changed since it was submitted"):
        place_on_track_above(timeline, clip, "/r/a.mp4", job)
    assert serialized_tracks(timeline) == before


def test_audio_clips_are_refused():
    timeline = otio.schema.Timeline()
    track = otio.schema.Track(kind=otio.schema.TrackKind.Audio)
    clip = otio.schema.Clip(name="mic", media_reference=otio.schema.ExternalReference("file:///a.wav"),
                            source_range=TimeRange(RationalTime(0, 24), RationalTime(5, 24)))
    track.append(clip)
    timeline.tracks.append(track)
    with pytest.raises(ClipError, match="Audio track"):
        place_on_track_above(timeline, clip, "/r/a.mp4", done_job(clip))
    assert len(timeline.tracks) == 1


def test_add_as_media_reference_switches_versions_of_the_same_frames():
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "simple_cut.otio"))
    clip = next(c for c in timeline.find_clips() if c.name == "Clip-004")  # media timecode starts at frame 100
    others = [otio.adapters.write_to_string(c, "otio_json") for c in timeline.find_clips() if c is not clip]
    seen = clip_timeline_range(clip)
    job = done_job(clip, handles_after=0)
    key = add_as_media_reference(clip, "/renders/credits_snow.mp4", job)
    assert key == "fairy"
    assert clip.active_media_reference_key == "fairy"
    assert set(clip.media_references()) == {"DEFAULT_MEDIA", "fairy"}
    assert clip.media_references()["DEFAULT_MEDIA"].target_url == "file:///folder/credits.mov"
    assert clip.media_reference.target_url == "file:///renders/credits_snow.mp4"
    # The result's frames sit at the original's media time: same source range, same frames.
    assert clip.media_reference.available_range == TimeRange(RationalTime(100, 24), RationalTime(6, 24))
    assert clip_used_frames(clip)[:2] == (0, 6)
    assert clip_timeline_range(clip) == seen
    assert clip.media_reference.metadata["fairy"]["job_id"] == job.job_id
    # A second version gets its own key; asking not to activate keeps the current one.
    key2 = add_as_media_reference(clip, "/renders/credits_rain.mp4", done_job(clip, instruction="rain"),
                                  make_active=False)
    assert key2 == "fairy-2" and clip.active_media_reference_key == "fairy"
    assert [otio.adapters.write_to_string(c, "otio_json") for c in timeline.find_clips() if c is not clip] == others
    back = otio.adapters.read_from_string(otio.adapters.write_to_string(timeline, "otio_json"), "otio_json")
    clip_back = next(c for c in back.find_clips() if c.name == "Clip-004")
    assert clip_back.active_media_reference_key == "fairy"
    assert set(clip_back.media_references()) == {"DEFAULT_MEDIA", "fairy", "fairy-2"}


def test_add_as_media_reference_with_handles_keeps_frames_aligned():
    timeline = otio.adapters.read_from_file(str(SAMPLES_DIR / "transition.otio"))
    clip = next(c for c in timeline.find_clips() if c.name == "Clip-003")  # media 1..11 (tc), uses 4..8
    job = done_job(clip, handles_before=2, handles_after=3)
    add_as_media_reference(clip, "/r/p.mp4", job)
    # Used frames 2..5 of media starting at time 1; the file starts 2 frames earlier: media time 1.
    assert clip.media_reference.available_range == TimeRange(RationalTime(1, 24), RationalTime(9, 24))
    assert clip_used_frames(clip)[:2] == (2, 4)
