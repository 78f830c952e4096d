"""Helpers shared by the OTIO tests: fake finished jobs and an independent
computation of where a clip is seen (OTIO's own transforms, not ours)."""

from __future__ import annotations

import fractions
import pathlib
import uuid

import opentimelineio as otio
from fairy_proto.v1 import fairy_pb2
from opentimelineio.opentime import TimeRange

from fairy_plugin.ranges import clip_used_frames


def done_job(clip, *, instruction="make it snowy", handles_before=0, handles_after=0, job_id=None, seed=3):
    """A DONE Job as the server would send for editing ``clip``."""
    start, count, rate, _ = clip_used_frames(clip)
    r = fairy_pb2.Rational(num=rate.numerator, den=rate.denominator)
    request = fairy_pb2.SubmitEditRequest(
        job_id=job_id or uuid.uuid4().hex,
        source=fairy_pb2.MediaSource(path="/media/x.mov"),
        range=fairy_pb2.FrameRange(start_frame=start, frame_count=count, rate=r),
        handles=fairy_pb2.Handles(before=handles_before, after=handles_after),
        instruction=instruction,
        parameters=fairy_pb2.EditParameters(seed=seed, steps=4, model="builtin:tiny"),
        labels={"clip": clip.name},
    )
    return fairy_pb2.Job(
        job_id=request.job_id, state=fairy_pb2.JOB_STATE_DONE, request=request, model="builtin:tiny",
        rendered_range=fairy_pb2.FrameRange(start_frame=start - handles_before,
                                            frame_count=count + handles_before + handles_after, rate=r))


def seen_range_by_otio(clip, timeline) -> TimeRange:
    """The clip's range in timeline.tracks, clipped by every ancestor's trim,
    computed with OTIO's transformed_time_range."""
    root = timeline.tracks
    seen = clip.transformed_time_range(clip.trimmed_range(), root)
    item = clip.parent()
    while item is not None and item is not root:
        bounds = item.transformed_time_range(item.trimmed_range(), root)
        start = max(seen.start_time, bounds.start_time)
        end = min(seen.end_time_exclusive(), bounds.end_time_exclusive())
        seen = TimeRange.range_from_start_end_time(start, end)
        item = item.parent()
    return seen


def same_span(a: TimeRange, b: TimeRange, eps: float = 1e-9) -> bool:
    return (abs(a.start_time.to_seconds() - b.start_time.to_seconds()) < eps
            and abs(a.duration.to_seconds() - b.duration.to_seconds()) < eps)


def serialized_tracks(timeline, keep=lambda track: True) -> list[str]:
    return [otio.adapters.write_to_string(t, "otio_json") for t in timeline.tracks if keep(t)]


def rate_of(fraction_text: str) -> fractions.Fraction:
    return fractions.Fraction(fraction_text)


# Real timelines from the OpenTimelineIO project (Apache-2.0), kept with the tests.
SAMPLES_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "otio_samples"
