"""The OTIO sidecar written beside every result: what the rendered file is and where it came from.

A Timeline with one video track holding one Clip. The clip's ExternalReference
points at the rendered file (available_range: all its frames, at the media
rate); the clip's source_range is the requested range inside it (the handles
before it are skipped). ``metadata["fairy"]`` records the instruction, seed,
parameters, model, job id, and the source media with the requested and
rendered ranges in the source's own frames.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import opentimelineio as otio

from fairy.video import new_file_mode

from .jobs import EditPlan

__all__ = ["fairy_metadata", "build_timeline", "write_sidecar"]


def fairy_metadata(plan: EditPlan, job_id: str) -> dict:
    rate = {"num": plan.rate_num, "den": plan.rate_den}
    return {
        "job_id": job_id,
        "instruction": plan.instruction,
        "seed": plan.seed,
        "model": plan.model,
        "parameters": plan.parameters(),
        "source": {
            "path": plan.source,
            "sha256": plan.source_sha256,
            "range": {"start_frame": plan.start_frame, "frame_count": plan.frame_count, "rate": rate},
            "rendered_range": {"start_frame": plan.render_start, "frame_count": plan.render_count, "rate": rate},
        },
    }


def build_timeline(plan: EditPlan, job_id: str, rendered: pathlib.Path) -> otio.schema.Timeline:
    rate = float(plan.rate)
    reference = otio.schema.ExternalReference(
        target_url=pathlib.Path(rendered).resolve().as_uri(),
        available_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(plan.render_count, rate)
        ),
    )
    metadata = fairy_metadata(plan, job_id)
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


def write_sidecar(path: pathlib.Path, plan: EditPlan, job_id: str, rendered: pathlib.Path) -> pathlib.Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = pathlib.Path(path)
    text = otio.adapters.write_to_string(build_timeline(plan, job_id, rendered), "otio_json")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".otio", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp made it private; results are shared media
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
