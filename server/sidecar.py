"""The OTIO sidecar written beside every result: what the rendered file is and where it came from.

A Timeline with one video track holding one Clip. The clip's ExternalReference
points at the rendered file (available_range: all its frames, at the media
rate); the clip's source_range is the requested range inside it (the handles
before it are skipped). ``metadata["fairy"]`` (clip and timeline) is the one
layout of ``fairy_proto.v1.clip_metadata``: instruction, settings, model, seed,
source range, handles, job id and server.
"""

from __future__ import annotations

import pathlib

import opentimelineio as otio

from fairy_proto.files import atomic_write
from fairy_proto.v1.clip_metadata import EditRecord, SourceRange

from .jobs import EditPlan

__all__ = ["fairy_metadata", "build_timeline", "write_sidecar"]


def fairy_metadata(plan: EditPlan, job_id: str, server: str = "") -> dict:
    """``metadata["fairy"]`` in the one layout every front end writes (fairy_proto.v1.clip_metadata)."""
    return EditRecord(
        instruction=plan.instruction,
        settings=plan.parameters(),
        model=plan.model,
        seed=plan.seed,
        source=SourceRange(name=pathlib.Path(plan.source).stem, media=plan.source, start_frame=plan.start_frame,
                           frame_count=plan.frame_count, rate=plan.rate),
        job_id=job_id,
        server=server,
        handles_before=plan.handles_before,
        handles_after=plan.handles_after,
    ).to_metadata()


def build_timeline(plan: EditPlan, job_id: str, rendered: pathlib.Path, *, server: str = "") -> otio.schema.Timeline:
    rate = float(plan.rate)
    reference = otio.schema.ExternalReference(
        target_url=pathlib.Path(rendered).resolve().as_uri(),
        available_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(plan.render_count, rate)
        ),
    )
    metadata = fairy_metadata(plan, job_id, server)
    clip = otio.schema.Clip(
        name=f"{pathlib.Path(plan.source).stem} - {plan.instruction[:60]}",
        media_reference=reference,
        source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(plan.handles_before, rate), otio.opentime.RationalTime(plan.frame_count, rate)
        ),
        metadata={"fairy": metadata},
    )
    track = otio.schema.Track(name="Fairy", kind=otio.schema.TrackKind.Video)
    track.append(clip)
    timeline = otio.schema.Timeline(name=f"fairy {job_id}", metadata={"fairy": metadata})
    timeline.tracks.append(track)
    return timeline


def write_sidecar(path: pathlib.Path, plan: EditPlan, job_id: str, rendered: pathlib.Path, *,
                  server: str = "") -> pathlib.Path:
    """Write atomically (temporary file in the same folder, then rename), with the mode any new file gets:
    results are shared media."""
    path = pathlib.Path(path)
    text = otio.adapters.write_to_string(build_timeline(plan, job_id, rendered, server=server), "otio_json")
    with atomic_write(path, "w", overwrite=True, fsync=True, encoding="utf-8") as f:
        f.write(text)
    return path
