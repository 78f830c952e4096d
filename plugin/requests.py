"""Turn a media range and the user's parameters into a SubmitEditRequest."""

from __future__ import annotations

import dataclasses

from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.jobs import new_job_id

from fairy_proto.v1.settings import SettingError, check_settings, setting

from .errors import PluginError
from .ranges import MediaRange

__all__ = ["EditParams", "request_for_range", "parameters_message", "CODECS"]

CODECS = setting("codec").choices


@dataclasses.dataclass(frozen=True)
class EditParams:
    """What the user asked for. Every field but the instruction is a setting of ``fairy_proto.v1.settings``,
    under the same name; None means unset, so the server's default applies."""

    instruction: str
    seed: int = setting("seed").default
    steps: int | None = None
    anchors: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    model: str | None = None
    codec: str | None = None
    long_side: int | None = None
    noise: str | None = None

    def settings(self) -> dict:
        """The settings that are set, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "instruction" and getattr(self, f.name) not in (None, "")}

    def check(self) -> None:
        """Refuse what the server would refuse anyway, before anything is sent."""
        if not self.instruction.strip():
            raise PluginError("the instruction is empty; say what the edit should do, e.g. \"make it snowy\"")
        try:
            check_settings(self.settings())
        except SettingError as exc:
            raise PluginError(str(exc)) from None


def parameters_message(params: EditParams) -> fairy_pb2.EditParameters:
    """The request's EditParameters: the set settings only (unset fields take the server's defaults)."""
    message = fairy_pb2.EditParameters()
    for name, value in params.settings().items():
        s = setting(name)
        if s.proto_values:
            enum = message.DESCRIPTOR.fields_by_name[name].enum_type
            value = enum.values_by_name[s.to_proto_name(value)].number
        setattr(message, name, value)
    return message


def request_for_range(media_range: MediaRange, params: EditParams, *, job_id: str | None = None,
                      labels: dict[str, str] | None = None,
                      upload_id: str | None = None) -> fairy_pb2.SubmitEditRequest:
    """A request editing ``media_range`` (plus its handles) with ``params``.

    ``job_id`` None mints a new one (``fairy_proto.v1.jobs.new_job_id``) so retries stay idempotent; ``upload_id``
    names media sent with FairyClient.upload instead of a server-side path.
    """
    params.check()
    parameters = parameters_message(params)
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
