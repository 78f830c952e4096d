"""A finished job as the ``metadata["fairy"]`` record every front end writes (``fairy_proto.v1.clip_metadata``),
and back: the settings a record asks for, to render it again."""

from __future__ import annotations

import fractions

from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.clip_metadata import EditRecord, SourceRange
from fairy_proto.v1.settings import REQUEST_SETTINGS

from .errors import ClipError
from .requests import EditParams

__all__ = ["settings_of", "edit_record", "params_from_record", "rendered_handles"]


def settings_of(parameters: fairy_pb2.EditParameters) -> dict:
    """The set fields of an EditParameters by their settings-table names (enums as the table's choices)."""
    values = {}
    for s in REQUEST_SETTINGS:
        if s.proto_values:
            enum = parameters.DESCRIPTOR.fields_by_name[s.name].enum_type
            choice = s.from_proto_name(enum.values_by_number[getattr(parameters, s.name)].name)
            if choice is not None:
                values[s.name] = choice
        elif parameters.HasField(s.name) if _has_presence(parameters, s.name) else bool(getattr(parameters, s.name)):
            values[s.name] = getattr(parameters, s.name)  # optional fields when set; model and seed when not empty
    return values


def _has_presence(message, name: str) -> bool:
    return message.DESCRIPTOR.fields_by_name[name].has_presence


def rendered_handles(job: fairy_pb2.Job) -> tuple[int, int]:
    """Frames the server rendered before and after the asked range (the handles the media had)."""
    asked, rendered = job.request.range, job.rendered_range
    if rendered.frame_count <= 0:
        return 0, 0
    before = asked.start_frame - rendered.start_frame
    return before, rendered.frame_count - before - asked.frame_count


def edit_record(job: fairy_pb2.Job, *, source_name: str, source_media: str, server: str) -> EditRecord:
    """What a result records: the job's resolved settings (the server's defaults filled in) when the server
    sent them, else the request's."""
    request = job.request
    rate = request.range.rate
    if rate.num <= 0 or rate.den <= 0:
        raise ClipError(f"job {job.job_id} has no frame rate in its request")
    parameters = job.resolved_parameters if job.HasField("resolved_parameters") else request.parameters
    before, after = rendered_handles(job)
    return EditRecord(
        instruction=request.instruction,
        settings=settings_of(parameters),
        model=job.model or parameters.model,
        seed=int(parameters.seed),
        source=SourceRange(name=source_name, media=source_media, start_frame=request.range.start_frame,
                           frame_count=request.range.frame_count, rate=fractions.Fraction(rate.num, rate.den)),
        job_id=job.job_id,
        server=server,
        handles_before=before,
        handles_after=after,
    )


def params_from_record(record: EditRecord, **changes) -> EditParams:
    """The EditParams that render ``record`` again (same instruction, model, seed and settings), with
    ``changes`` (e.g. ``seed=7``) applied; a change of None keeps the recorded value."""
    values = {"instruction": record.instruction, "model": record.model or None, "seed": record.seed,
              **{name: value for name, value in record.settings.items() if name in EditParams.__dataclass_fields__}}
    values.update({name: value for name, value in changes.items() if value is not None})
    return EditParams(**values)
