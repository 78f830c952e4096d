"""Proto messages <-> domain types; nothing else.

The fingerprint that makes a resubmit idempotent is the SHA-256 of the
request's deterministic serialization without its job id.
"""

from __future__ import annotations

import hashlib

from fairy_proto.v1 import fairy_pb2

from fairy_proto.v1.settings import setting

from .config import ServerConfig
from .errors import InvalidRequestError
from .jobs import EditRequest, JobState
from .manager import JobView

__all__ = [
    "request_from_proto",
    "fingerprint",
    "job_to_proto",
    "state_from_proto",
    "STATE_TO_PROTO",
]

STATE_TO_PROTO = {state: fairy_pb2.JobState.Value(f"JOB_STATE_{state.value}") for state in JobState}
_STATE_FROM_PROTO = {v: k for k, v in STATE_TO_PROTO.items()}
# Enum value -> the settings table's choice (None: UNSPECIFIED, the server's default).
_CODECS = {value: setting("codec").from_proto_name(name) for name, value in fairy_pb2.OutputCodec.items()}
_NOISE = {value: setting("noise").from_proto_name(name) for name, value in fairy_pb2.NoisePolicy.items()}


def state_from_proto(value: int) -> JobState:
    try:
        return _STATE_FROM_PROTO[value]
    except KeyError:
        raise InvalidRequestError(f"unknown job state {value}") from None


def fingerprint(request: fairy_pb2.SubmitEditRequest) -> str:
    copy = fairy_pb2.SubmitEditRequest()
    copy.CopyFrom(request)
    copy.job_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def request_from_proto(message: fairy_pb2.SubmitEditRequest) -> EditRequest:
    which = message.source.WhichOneof("source")
    params = message.parameters
    if params.codec not in _CODECS:
        raise InvalidRequestError(f"unknown output codec {params.codec}")
    if params.noise not in _NOISE:
        raise InvalidRequestError(f"unknown noise policy {params.noise}")
    return EditRequest(
        job_id=message.job_id,
        source_path=message.source.path if which == "path" else None,
        upload_id=message.source.upload_id if which == "upload_id" else None,
        start_frame=message.range.start_frame,
        frame_count=message.range.frame_count,
        rate_num=message.range.rate.num,
        rate_den=message.range.rate.den,
        handles_before=message.handles.before,
        handles_after=message.handles.after,
        instruction=message.instruction,
        model=params.model,
        seed=params.seed,
        steps=params.steps if params.HasField("steps") else None,
        anchors=params.anchors if params.HasField("anchors") else None,
        guidance_scale=params.guidance_scale if params.HasField("guidance_scale") else None,
        image_guidance_scale=params.image_guidance_scale if params.HasField("image_guidance_scale") else None,
        long_side=params.long_side if params.HasField("long_side") else None,
        codec=_CODECS[params.codec],
        noise=_NOISE[params.noise],
        labels=dict(message.labels),
    )


def job_to_proto(view: JobView) -> fairy_pb2.Job:
    record = view.record
    request = fairy_pb2.SubmitEditRequest.FromString(record.request)
    plan = record.plan
    job = fairy_pb2.Job(
        job_id=record.job_id,
        state=STATE_TO_PROTO[record.state],
        request=request,
        progress=fairy_pb2.Progress(
            step=view.progress.step,
            total_steps=view.progress.total_steps,
            frames_done=view.progress.frames_done,
            total_frames=view.progress.total_frames,
            eta_seconds=view.progress.eta_seconds,
            fraction=view.progress.fraction,
        ),
        error_message=record.error_message,
        error_code=_grpc_code_value(record.error_code),
        result_path=record.result_path,
        sidecar_path=record.sidecar_path,
        result_size_bytes=record.result_size,
        cache_hit=record.cache_hit,
        created_unix=record.created,
        started_unix=record.started or 0.0,
        finished_unix=record.finished or 0.0,
        anchor_previews=[
            fairy_pb2.Preview(frame_index=p.frame_index, jpeg=p.jpeg, width=p.width, height=p.height) for p in view.previews
        ],
        queue_position=view.queue_position,
        model=record.model,
        rendered_range=fairy_pb2.FrameRange(
            start_frame=plan.render_start,
            frame_count=plan.render_count,
            rate=fairy_pb2.Rational(num=plan.rate_num, den=plan.rate_den),
        ),
        attempts=record.attempts,
        frame_batch_size=record.batch_size,
        cancel_requested=record.cancel_requested,
        render_seconds=record.render_seconds,
    )
    job.resolved_parameters.CopyFrom(parameters_to_proto(plan))
    return job


def parameters_to_proto(plan) -> fairy_pb2.EditParameters:
    """Every setting of an admitted job, the server's defaults filled in."""
    return fairy_pb2.EditParameters(
        model=plan.model, seed=plan.seed, steps=plan.steps, anchors=plan.anchors, guidance_scale=plan.guidance_scale,
        image_guidance_scale=plan.image_guidance_scale, long_side=plan.long_side,
        codec=fairy_pb2.OutputCodec.Value(setting("codec").to_proto_name(plan.codec)),
        noise=fairy_pb2.NoisePolicy.Value(setting("noise").to_proto_name(plan.noise)),
    )


def _grpc_code_value(name: str) -> int:
    if not name:
        return 0
    import grpc

    return grpc.StatusCode[name].value[0]


def limits_to_proto(config: ServerConfig) -> fairy_pb2.Limits:
    limits = config.limits
    return fairy_pb2.Limits(
        max_frames=limits.max_frames,
        max_pixels=limits.max_pixels,
        max_instruction_length=limits.max_instruction_length,
        max_upload_bytes=limits.max_upload_bytes,
        max_message_bytes=limits.max_message_bytes,
    )
