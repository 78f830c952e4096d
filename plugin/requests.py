"""Turn a media range and the user's parameters into a SubmitEditRequest."""

from __future__ import annotations

import dataclasses

from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.jobs import new_job_id

from .errors import PluginError
from .ranges import MediaRange

__all__ = ["EditParams", "request_for_range", "CODECS"]

CODECS = {
    "h264": fairy_pb2.OUTPUT_CODEC_H264,
    "prores": fairy_pb2.OUTPUT_CODEC_PRORES_422,
}


@dataclasses.dataclass(frozen=True)
class EditParams:
    """What the user asked for; unset values take the server's defaults."""

    instruction: str
    seed: int = 0
    steps: int | None = None        # None: server default
    anchors: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    model: str = ""                 # "": server default
    codec: str = "h264"             # or "prores"
    long_side: int | None = None    # the longer side frames are edited at (server default 512)

    def check(self) -> None:
        """Refuse what the server would refuse anyway, before anything is sent."""
        if not self.instruction.strip():
            raise PluginError("the instruction is empty; say what the edit should do, e.g. \"make it snowy\"")
        if self.codec not in CODECS:
            raise PluginError(f"codec '{self.codec}' is unknown; use one of {', '.join(CODECS)}")
        for name in ("steps", "anchors", "long_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PluginError(f"{name} must be 1 or more, got {value}")


def request_for_range(media_range: MediaRange, params: EditParams, *, job_id: str | None = None,
                      labels: dict[str, str] | None = None,
                      upload_id: str | None = None) -> fairy_pb2.SubmitEditRequest:
    """A request editing ``media_range`` (plus its handles) with ``params``.

    ``job_id`` None mints a new one (``fairy_proto.v1.jobs.new_job_id``) so retries stay idempotent; ``upload_id``
    names media sent with FairyClient.upload instead of a server-side path.
    """
    params.check()
    parameters = fairy_pb2.EditParameters(model=params.model, seed=params.seed, codec=CODECS[params.codec])
    if params.steps is not None:
        parameters.steps = params.steps
    if params.anchors is not None:
        parameters.anchors = params.anchors
    if params.guidance_scale is not None:
        parameters.guidance_scale = params.guidance_scale
    if params.image_guidance_scale is not None:
        parameters.image_guidance_scale = params.image_guidance_scale
    if params.long_side is not None:
        parameters.long_side = params.long_side
    source = (fairy_pb2.MediaSource(upload_id=upload_id) if upload_id
              else fairy_pb2.MediaSource(path=media_range.media_path))
    return fairy_pb2.SubmitEditRequest(
        job_id=job_id or new_job_id(),
        source=source,
        range=fairy_pb2.FrameRange(
            start_frame=media_range.start_frame,
            frame_count=media_range.frame_count,
            rate=fairy_pb2.Rational(num=media_range.rate.numerator, den=media_range.rate.denominator),
        ),
        handles=fairy_pb2.Handles(before=media_range.handles_before, after=media_range.handles_after),
        instruction=params.instruction,
        parameters=parameters,
        labels=labels or {},
    )
