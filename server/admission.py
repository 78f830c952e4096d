"""Checking a request before it is queued: limits first, then the media.

Everything a client can get wrong is refused here with a one-line message,
before the media is hashed or anything large is allocated.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from fractions import Fraction

from fairy.model_info import model_defaults
from fairy_proto.v1.settings import REQUEST_SETTINGS, SettingError

from .config import ServerConfig
from .errors import InvalidRequestError, NotFoundError, ResourceExhaustedError
from .jobs import EditPlan, EditRequest
from .paths import resolve_media_path, shown
from .store import JobStore
from .uploads import UploadStore

__all__ = ["JOB_ID_PATTERN", "check_job_id", "check_request", "plan_edit", "media_sha256"]

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_INT = 2**31 - 1
_RATE_TOLERANCE = Fraction(1, 10_000)  # relative; 24000/1001 vs 2997/125 is a mismatch, rounding noise is not


def check_job_id(job_id: str) -> None:
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidRequestError(
            f"job_id must be 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit: {shown(job_id)}"
        )


# Stricter than the settings table where this server is configured so (e.g. at most 200 steps a job).
_SERVER_MAXIMA = {"steps": "max_steps", "anchors": "max_anchors", "long_side": "max_long_side"}


def _check_settings(request: EditRequest, limits) -> None:
    """The table's range for every setting the request sets, then this server's own maxima."""
    for s in REQUEST_SETTINGS:
        value = getattr(request, s.name)
        if s.name == "model" or value is None:
            continue
        try:
            s.check(value)
        except SettingError as exc:
            raise InvalidRequestError(f"parameters.{exc}") from None
        most = getattr(limits, _SERVER_MAXIMA.get(s.name, ""), None)
        if most is not None and value > most:
            raise InvalidRequestError(f"parameters.{s.name} {value} is more than this server allows ({most})")


def check_request(request: EditRequest, config: ServerConfig) -> None:
    """Checks that need no file access."""
    limits = config.limits
    check_job_id(request.job_id)
    if not request.instruction.strip():
        raise InvalidRequestError("the instruction is empty")
    if len(request.instruction) > limits.max_instruction_length:
        raise InvalidRequestError(
            f"the instruction is {len(request.instruction)} characters; this server takes at most {limits.max_instruction_length}"
        )
    if "\x00" in request.instruction:
        raise InvalidRequestError("the instruction contains a NUL character")
    if (request.source_path is None) == (request.upload_id is None):
        raise InvalidRequestError("source must be a path or an upload_id")
    if request.start_frame < 0:
        raise InvalidRequestError(f"range.start_frame must be 0 or more, got {request.start_frame}")
    if request.frame_count <= 0:
        raise InvalidRequestError(f"range.frame_count must be at least 1, got {request.frame_count}")
    if request.handles_before < 0 or request.handles_after < 0:
        raise InvalidRequestError("handles must be 0 or more")
    if request.rate_num <= 0 or request.rate_den <= 0:
        raise InvalidRequestError(f"range.rate must be a positive fraction, got {request.rate_num}/{request.rate_den}")
    if request.rate_num > 1_000_000 or request.rate_den > 1_000_000 or Fraction(request.rate_num, request.rate_den) > 1000:
        raise InvalidRequestError(f"range.rate {request.rate_num}/{request.rate_den} is not a video frame rate")
    if request.frame_count > limits.max_frames:
        raise ResourceExhaustedError(
            f"{request.frame_count} frames is more than this server renders in one job ({limits.max_frames})"
        )
    if request.model and request.model not in config.models:
        raise InvalidRequestError(f"this server does not run model {shown(request.model)}; it runs {', '.join(config.models)}")
    _check_settings(request, limits)
    if len(request.labels) > limits.max_labels:
        raise InvalidRequestError(f"at most {limits.max_labels} labels")
    for key, value in request.labels.items():
        if len(key.encode()) > limits.max_label_bytes or len(value.encode()) > limits.max_label_bytes:
            raise InvalidRequestError(f"label {shown(key[:40])} is longer than {limits.max_label_bytes} bytes")


def media_sha256(path: pathlib.Path, store: JobStore) -> str:
    """The file's SHA-256, remembered by (path, size, mtime, inode) so an unchanged file is read once."""
    st = path.stat()
    cached = store.cached_media_hash(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if cached:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    sha = digest.hexdigest()
    store.remember_media_hash(str(path), st.st_size, st.st_mtime_ns, st.st_ino, sha)
    return sha


def plan_edit(request: EditRequest, config: ServerConfig, store: JobStore, uploads: UploadStore) -> EditPlan:
    """Check ``request`` against the limits and the media; the plan a worker renders."""
    from fairy.errors import FairyError
    from fairy.video import probe

    check_request(request, config)
    if request.upload_id is not None:
        source = uploads.path_of(request.upload_id)
    else:
        source = resolve_media_path(request.source_path, config.media_roots)
    try:
        info = probe(source)
    except FairyError as exc:
        raise InvalidRequestError(f"cannot read the source media: {exc}") from None
    except OSError as exc:
        raise NotFoundError(f"cannot read the source media: {exc.__class__.__name__}") from None

    limits = config.limits
    if info.width * info.height > limits.max_pixels:
        raise ResourceExhaustedError(
            f"the media is {info.width}x{info.height}; this server takes at most {limits.max_pixels} pixels a frame"
        )
    media_rate = Fraction(info.fps)
    asked_rate = Fraction(request.rate_num, request.rate_den)
    if abs(asked_rate - media_rate) > media_rate * _RATE_TOLERANCE:
        raise InvalidRequestError(
            f"range.rate {request.rate_num}/{request.rate_den} does not match the media's rate "
            f"{media_rate.numerator}/{media_rate.denominator}"
        )
    end = request.start_frame + request.frame_count
    if end > info.frame_count:
        raise InvalidRequestError(
            f"range [{request.start_frame}, {end}) is past the end of the media ({info.frame_count} frames)"
        )
    render_start = max(0, request.start_frame - request.handles_before)
    render_end = min(info.frame_count, end + request.handles_after)
    if render_end - render_start > limits.max_frames:
        raise ResourceExhaustedError(
            f"{render_end - render_start} frames with handles is more than this server renders in one job "
            f"({limits.max_frames}); ask for fewer handles"
        )
    defaults = config.defaults
    model = request.model or config.model
    chosen_by_model = model_defaults(model)  # for what neither the request nor the server sets
    return EditPlan(
        source=str(source),
        source_sha256=media_sha256(pathlib.Path(source), store),
        start_frame=request.start_frame,
        frame_count=request.frame_count,
        rate_num=media_rate.numerator,
        rate_den=media_rate.denominator,
        render_start=render_start,
        render_count=render_end - render_start,
        width=info.width,
        height=info.height,
        instruction=request.instruction,
        model=model,
        seed=request.seed,
        steps=_first_set(request.steps, defaults.steps),
        anchors=_first_set(request.anchors, defaults.anchors),
        guidance_scale=_first_set(request.guidance_scale, defaults.guidance_scale, chosen_by_model["guidance_scale"]),
        image_guidance_scale=_first_set(request.image_guidance_scale, defaults.image_guidance_scale,
                                        chosen_by_model["image_guidance_scale"]),
        long_side=_first_set(request.long_side, defaults.long_side, chosen_by_model["long_side"]),
        codec=_first_set(request.codec, defaults.codec),
        noise=_first_set(request.noise, defaults.noise),
    )



def _first_set(*values):
    return next((v for v in values if v is not None), None)
