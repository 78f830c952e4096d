"""Decode exact frame ranges and encode edited frames, with PyAV.

Frame indices
-------------
A clip is addressed by frame index on a constant-rate grid, the way an NLE
conforms a clip to a timeline:

* ``fps`` is the video stream's nominal rate: its average rate, snapped to the
  nearest common rate (23.976 = 24000/1001, 29.97 = 30000/1001, 25, 60, ...)
  when within 0.04 % for constant-rate files, or within 2 % for variable-rate
  ones; an uncommon rate is kept as is (as a Fraction with denominator <= 1001).
* ``t0`` is the presentation time of the first frame.
* Frame ``i`` is the frame on screen at ``t_i = t0 + i / fps``: the last decoded
  frame whose presentation time is before ``t_i + 1 / (2 fps)``. The half-frame
  allowance means a timestamp is rounded to the nearest grid point (halves go
  to the later one), so a
  constant-rate file whose time base cannot hold ``i / fps`` exactly (1/1000 in
  Matroska, say) still maps frame ``i`` to its ``i``-th decoded frame.
* ``frame_count`` is one more than the grid index of the last frame; for a
  variable-rate file whose last frame has a duration, the grid runs on to the
  grid point nearest the end of that frame (it may be held for a while).

For a constant-rate file this is exactly "the i-th decoded frame". For a
variable-rate file, a frame that stays on screen across several grid points
is repeated and frames that fall between two grid points are dropped
(only the later one is kept), so an edit of N indices always has N frames.

Frames come out as HxWx3 ``uint8`` RGB, upright: the display matrix's rotation
(phone footage) is applied, so ``VideoInfo.width``/``height`` are the display
size. Flips in the display matrix are ignored.

Encoding writes H.264 (yuv420p, CRF 18, .mp4/.mov/.mkv) or ProRes 422
(FFmpeg's prores_aw encoder, prores_ks for odd widths; profile 2, yuv422p10le, .mov) at an exact rational frame rate,
tagged BT.709. libx264 cannot store 4:2:0 at an odd width or height, so an
odd-sized H.264 output is written as yuv444p (High 4:4:4) to keep the exact
size; some players and NLEs do not decode that profile, so pick an even size
where you can. Audio for the range is carried over as AAC (mp4, mkv) or
16-bit PCM (mov), trimmed or padded with silence to the video's duration.
Outputs appear atomically: frames go to a hidden temporary file beside the
output, which is renamed onto it only when complete.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np

from .errors import InvalidInputError, MediaError, OutputExistsError

__all__ = [
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "make_test_clip",
    "model_size",
    "probe",
    "read_frames",
    "resize_frames",
    "test_pattern_frame",
]

# Common nominal rates a measured average rate is snapped to.
_COMMON_RATES = tuple(
    Fraction(r)
    for r in (
        Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30, Fraction(48000, 1001), 48, 50,
        Fraction(60000, 1001), 60, 72, 90, 96, 100, Fraction(120000, 1001), 120, 144, 240,
        8, 10, 12, Fraction(25, 2), 15, 16, 18, 20,
    )
)
_CFR_SNAP = Fraction(4, 10000)  # 29.97 and 30 are 0.1 % apart
_VFR_SNAP = Fraction(2, 100)

# After seeking, decoding starts at a keyframe; if the first frame is already
# past the wanted one (open GOPs, B-frame reordering across a keyframe), seek
# this much earlier and retry, doubling, then decode from the start.
_RESEEK_SECONDS = 1.0

# Which encoder, pixel format and options each output codec name uses.
_H264_OPTIONS = {"crf": "18", "preset": "medium"}
# prores_aw where it can: prores_ks gave different bytes for the same frames from run to
# run on noisy pictures at sizes that are not multiples of 16 (seen with FFmpeg in PyAV 18),
# which breaks "same settings, same result"; prores_aw is deterministic but refuses odd
# widths, which keep prores_ks.
_PRORES_ENCODER = "prores_aw"
_PRORES_ODD_WIDTH_ENCODER = "prores_ks"
_PRORES_OPTIONS = {"profile": "2", "vendor": "apl0"}
_OUTPUT_EXTENSIONS = {"h264": (".mp4", ".mov", ".mkv", ".m4v"), "prores": (".mov",)}

_TEST_CLIP_CODECS = {
    # name: (encoder, pixel format for even sizes, for odd sizes, options).
    # Short GOPs (12 frames) so tests exercise seeking to a keyframe.
    "h264": ("libx264", "yuv420p", "yuv444p", {**_H264_OPTIONS, "g": "12"}),
    "prores": (_PRORES_ENCODER, "yuv422p10le", "yuv422p10le", _PRORES_OPTIONS),
    "hevc": ("libx265", "yuv420p", "yuv444p", {"crf": "20", "x265-params": "keyint=12:min-keyint=12:log-level=error"}),
    "dnxhd": ("dnxhd", "yuv422p", "yuv422p", {"profile": "dnxhr_sq"}),
    "vp9": (
        "libvpx-vp9", "yuv420p", "yuv420p", {"crf": "30", "b": "0", "g": "12", "deadline": "realtime", "cpu-used": "8"}
    ),
    "mjpeg": ("mjpeg", "yuvj420p", "yuvj444p", {"q:v": "2"}),
}
_TEST_PATTERNS = ("moving", "index")
_TEST_AUDIO_RATE = 48000


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a file; sizes are as displayed (rotation applied)."""

    path: pathlib.Path
    width: int
    height: int
    rotation: int  # clockwise degrees the player turns the stored picture: 0, 90, 180 or 270
    fps: Fraction
    frame_count: int
    codec: str
    pix_fmt: str
    variable_frame_rate: bool
    has_audio: bool
    audio_sample_rate: int | None
    duration: float  # seconds, frame_count / fps


# ---------------------------------------------------------------------------
# Opening files and scanning timestamps


def _av():
    import av  # deferred: `import fairy` stays cheap

    return av


def _checked_path(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise MediaError(f"{path}: not readable (permission denied)")
    return path


def _open_input(path: pathlib.Path):
    av = _av()
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: not a media file PyAV can open ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """A one-line reason from a PyAV error (its messages can span lines)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _video_stream(container, path: pathlib.Path):
    for stream in container.streams.video:
        # Cover art in an audio file is a "video" stream of one attached picture.
        if not stream.disposition & stream.disposition.attached_pic:
            return stream
    raise MediaError(f"{path}: no video stream")


def _audio_stream(container):
    return container.streams.audio[0] if container.streams.audio else None


@dataclasses.dataclass(frozen=True)
class _Timeline:
    """The presentation timestamps of a video stream and the grid indices built on them."""

    time_base: Fraction
    pts: tuple[int, ...]  # sorted, unique, in time_base units
    keyframe_pts: tuple[int, ...]  # sorted
    keyframe_seek: tuple[int, ...]  # where to seek for each keyframe: its decode timestamp
    fps: Fraction
    source_of: tuple[int, ...]  # grid index -> ordinal into pts
    variable_frame_rate: bool
    decode_only: bool  # packets carry no timestamps: frames are counted, never sought

    @property
    def frame_count(self) -> int:
        return len(self.source_of)

    @property
    def t0(self) -> Fraction:
        return self.pts[0] * self.time_base


def _nominal_rate(stream, pts: Sequence[int], time_base: Fraction, cfr: bool) -> Fraction:
    """The stream's average rate, checked against its timestamps, snapped to a common rate."""
    rate = next((r for r in (stream.average_rate, stream.guessed_rate, stream.base_rate) if r and r > 0), None)
    if len(pts) >= 2 and pts[-1] > pts[0]:
        measured = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
        # Constant-rate timestamps measure the rate directly; metadata that
        # disagrees (a bogus last-frame duration, say) loses. A variable-rate
        # clip's span leaves out its last frame, so there the metadata wins.
        if rate is None or (cfr and abs(rate / measured - 1) > Fraction(1, 100)):
            rate = measured
    if rate is None:
        return Fraction(24)  # a single frame and no rate metadata: any rate will do
    return _snap_rate(Fraction(rate), _CFR_SNAP if cfr else _VFR_SNAP)


def _snap_rate(rate: Fraction, tolerance: Fraction) -> Fraction:
    nearest = min(_COMMON_RATES, key=lambda common: abs(rate / common - 1))
    if abs(rate / nearest - 1) <= tolerance:
        return nearest
    return rate.limit_denominator(1001)


def _is_constant_rate(pts: Sequence[int]) -> bool:
    if len(pts) < 3:
        return True
    deltas = [b - a for a, b in zip(pts, pts[1:])]
    # One unit of slack: a 1/1000 time base stores 29.97 fps as 33 and 34 ms.
    return max(deltas) - min(deltas) <= max(1, min(deltas) // 50)


def _grid(pts: Sequence[int], time_base: Fraction, fps: Fraction, end: int | None = None) -> tuple[int, ...]:
    """Map every grid index to the ordinal of the frame shown there (see the module docstring).

    ``end`` (when the last frame's duration is known) extends the grid up to
    the grid point nearest the end of the last frame.
    """
    # slot = floor((pts - pts0) * time_base * fps + 1/2), in integers.
    num = time_base.numerator * fps.numerator
    den = time_base.denominator * fps.denominator
    first = pts[0]
    slots = [(2 * (p - first) * num + den) // (2 * den) for p in pts]
    source_of: list[int] = []
    for ordinal, slot in enumerate(slots):
        # Fill up to this frame's slot with the previous frame (repeat), then
        # this frame takes its slot (a later frame in the same slot replaces it).
        while len(source_of) < slot:
            source_of.append(source_of[-1])
        if len(source_of) == slot + 1:
            source_of[slot] = ordinal
        else:
            source_of.append(ordinal)
    if end is not None:
        end_slot = (2 * (end - first) * num + den) // (2 * den)
        source_of.extend([source_of[-1]] * (end_slot - len(source_of)))
    return tuple(source_of)


def _file_key(path: pathlib.Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _timeline(path: pathlib.Path) -> _Timeline:
    path = _checked_path(path)
    return _cached_timeline(_file_key(path), path)


@functools.lru_cache(maxsize=32)
def _cached_timeline(key: tuple[str, int, int], path: pathlib.Path) -> _Timeline:
    av = _av()
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        time_base = stream.time_base
        raw: list[tuple[int | None, bool, int]] = []
        keyframe_dts: dict[int, int] = {}
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # the end-of-stream marker, or a sample outside the edit list
                raw.append((packet.pts, packet.is_keyframe, packet.duration or 0))
                if packet.is_keyframe and packet.pts is not None:
                    keyframe_dts[packet.pts] = packet.dts if packet.dts is not None else packet.pts
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: cannot read ({_reason(exc)})") from None
        if not raw:
            raise MediaError(f"{path}: the video stream has no frames")
        decode_only = time_base is None or any(p is None for p, _, _ in raw)
        if decode_only:
            # Raw elementary streams: count frames and assume a constant rate.
            time_base = Fraction(1, 1)
            count = _count_decoded_frames(container, stream, path)
            pts = list(range(count))
            fps = _nominal_rate(stream, [], time_base, cfr=True)
            return _Timeline(time_base, tuple(pts), (0,), (0,), fps, tuple(pts), False, True)
        pts = sorted({p for p, _, _ in raw})
        keyframe_pts = sorted(keyframe_dts) or [pts[0]]
        keyframe_seek = [keyframe_dts.get(p, p) for p in keyframe_pts]
        # Where the last frame ends: packet durations are decode-order deltas,
        # so take the latest end over all packets rather than the last one's.
        last_end = max(p + duration for p, _, duration in raw)
        cfr = _is_constant_rate(pts)
        fps = _nominal_rate(stream, pts, time_base, cfr)  # reads the stream: before closing
    # A variable-rate clip's last frame may stay up for several grid points.
    end = last_end if not cfr and last_end > pts[-1] else None
    source_of = _grid(pts, time_base, fps, end)
    variable = not cfr or len(source_of) != len(pts)
    return _Timeline(
        time_base, tuple(pts), tuple(keyframe_pts), tuple(keyframe_seek), fps, source_of, variable, False
    )


def _count_decoded_frames(container, stream, path: pathlib.Path) -> int:
    av = _av()
    _rewind(container)
    try:
        return sum(1 for _ in container.decode(stream))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode ({_reason(exc)})") from None


# ---------------------------------------------------------------------------
# Decoding


def probe(path) -> VideoInfo:
    """Describe a video file; raises MediaError with a one-line reason if it cannot be read."""
    path = _checked_path(path)
    timeline = _timeline(path)
    av = _av()
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        audio = _audio_stream(container)
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode ({_reason(exc)})") from None
        if first is None:
            raise MediaError(f"{path}: the video stream has no decodable frames")
        rotation = _clockwise_rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            rotation=rotation,
            fps=timeline.fps,
            frame_count=timeline.frame_count,
            codec=stream.codec_context.name,
            pix_fmt=first.format.name,
            variable_frame_rate=timeline.variable_frame_rate,
            has_audio=audio is not None,
            audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            duration=float(timeline.frame_count / timeline.fps),
        )


def _clockwise_rotation(frame) -> int:
    # PyAV reports the display matrix as a counter-clockwise angle in [-180, 180].
    return (-round(frame.rotation / 90) * 90) % 360


def _to_rgb(frame) -> np.ndarray:
    kwargs = {"format": "rgb24"}
    if frame.colorspace == 2 and frame.height >= 720:
        # Untagged HD video is BT.709 in practice (what players assume too).
        kwargs["src_colorspace"] = "ITU709"
    array = frame.to_ndarray(**kwargs)
    turns = round(frame.rotation / 90) % 4  # np.rot90 turns counter-clockwise, like PyAV's angle
    if turns:
        array = np.ascontiguousarray(np.rot90(array, turns))
    return array


def _check_range(path: pathlib.Path, timeline: _Timeline, start: int, count: int) -> None:
    for name, value in (("start", start), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidInputError(f"{name} must be a non-negative integer, got {value!r}")
    if start + count > timeline.frame_count:
        raise MediaError(
            f"{path}: frames {start}..{start + count - 1} are past the end "
            f"(the clip has {timeline.frame_count} frames, 0..{timeline.frame_count - 1})"
        )


def iter_frames(path, start: int, count: int) -> Iterator[np.ndarray]:
    """Yield exactly ``count`` upright RGB frames, indices ``start .. start + count - 1``.

    Checks the range before returning, so a bad range raises here, not on the
    first ``next()``. Decodes from the keyframe before ``start`` onwards.
    """
    path = _checked_path(path)
    timeline = _timeline(path)
    _check_range(path, timeline, start, count)
    return _iter_frames(path, timeline, start, count)


def _iter_frames(path: pathlib.Path, timeline: _Timeline, start: int, count: int) -> Iterator[np.ndarray]:
    if count == 0:
        return
    wanted = timeline.source_of[start : start + count]
    index = 0
    for ordinal, frame in _decode_ordinals(path, timeline, sorted(set(wanted))):
        array = _to_rgb(frame)
        # A variable-rate source can show one decoded frame at several indices;
        # each gets its own array so a caller may modify frames in place.
        repeat = False
        while index < count and wanted[index] == ordinal:
            yield array.copy() if repeat else array
            repeat = True
            index += 1


def read_frames(path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Decode a few frames by index (anchor frames): seek to the keyframe before each, decode forward."""
    path = _checked_path(path)
    timeline = _timeline(path)
    indices = list(indices)
    for index in indices:
        _check_range(path, timeline, index, 1)
    by_ordinal: dict[int, list[int]] = {}
    for index in set(indices):
        by_ordinal.setdefault(timeline.source_of[index], []).append(index)
    frames: dict[int, np.ndarray] = {}
    for ordinal, frame in _decode_ordinals(path, timeline, sorted(by_ordinal)):
        array = _to_rgb(frame)
        for copy_needed, index in enumerate(by_ordinal[ordinal]):
            frames[index] = array.copy() if copy_needed else array
    return frames


def _decode_ordinals(path: pathlib.Path, timeline: _Timeline, ordinals: list[int]):
    """Yield (ordinal, VideoFrame) for each wanted ordinal (sorted), in order."""
    av = _av()
    if not ordinals:
        return
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            if timeline.decode_only:
                yield from _count_through(container, stream, ordinals)
            else:
                yield from _seek_through(container, stream, timeline, ordinals, path)
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode ({_reason(exc)})") from None


def _count_through(container, stream, ordinals: list[int]):
    wanted = iter(ordinals)
    target = next(wanted)
    for ordinal, frame in enumerate(container.decode(stream)):
        if ordinal == target:
            yield ordinal, frame
            target = next(wanted, None)
            if target is None:
                return


def _seek_through(container, stream, timeline: _Timeline, ordinals: list[int], path: pathlib.Path):
    ordinal_of = {pts: ordinal for ordinal, pts in enumerate(timeline.pts)}
    position = 0  # next entry of `ordinals` to deliver
    while position < len(ordinals):
        target = ordinals[position]
        frames = _decode_from(container, stream, timeline, target, ordinal_of, path)
        for ordinal, frame in frames:
            if ordinal < target:
                continue
            if ordinal > target:
                raise MediaError(f"{path}: frame {target} could not be decoded (the stream skips it)")
            yield ordinal, frame
            position += 1
            if position == len(ordinals):
                return
            previous, target = ordinal, ordinals[position]
            if _keyframe_between(timeline, previous, target):
                break  # cheaper to seek than to decode through a whole GOP
        else:
            raise MediaError(f"{path}: the stream ended before frame {target}")


def _keyframe_between(timeline: _Timeline, after: int, upto: int) -> bool:
    """Is there a keyframe strictly after ordinal `after` and at or before `upto`?"""
    low, high = timeline.pts[after], timeline.pts[upto]
    i = bisect.bisect_right(timeline.keyframe_pts, low)
    return i < len(timeline.keyframe_pts) and timeline.keyframe_pts[i] <= high


def _decode_from(container, stream, timeline: _Timeline, target: int, ordinal_of, path: pathlib.Path):
    """Seek to the keyframe at or before `target` and yield (ordinal, frame) from there on.

    If the first frame that comes out is already past `target` (or none does),
    seek further back (doubling) until it is not, ending with a decode from
    the start.
    """
    target_pts = timeline.pts[target]
    keyframe_at = max(bisect.bisect_right(timeline.keyframe_pts, target_pts) - 1, 0)
    # Seek by the keyframe's decode time: MP4 and MPEG-TS index keyframes by
    # it, and for containers indexed by presentation time it is no later.
    seek_pts = timeline.keyframe_seek[keyframe_at]
    back = _RESEEK_SECONDS
    while True:
        from_start = seek_pts <= timeline.pts[0]
        if from_start:
            _rewind(container)
        else:
            container.seek(int(seek_pts), stream=stream, backward=True)
        frames = _numbered(container.decode(stream), ordinal_of)
        first = next(frames, None)
        if first is not None and (first[0] <= target or from_start):
            yield first
            yield from frames
            return
        if from_start:
            raise MediaError(f"{path}: the stream ended before frame {target}")
        # Landed past the target, or somewhere nothing decodes: go further back.
        seek_pts = min(seek_pts, target_pts) - int(back / timeline.time_base)
        back *= 2


def _rewind(container) -> None:
    # Time 0 with no stream is before every packet, whatever the container's
    # start time (MPEG-TS starts at 1.4 s; seeking to exactly that can land a
    # GOP late). A demuxer that refuses gets a byte seek to the beginning.
    av = _av()
    try:
        container.seek(0, backward=True)
    except av.FFmpegError:
        container.seek(0, unsupported_byte_offset=True)


def _numbered(frames, ordinal_of: dict[int, int]):
    for frame in frames:
        if frame.pts is None:
            continue
        ordinal = ordinal_of.get(frame.pts)
        if ordinal is None:
            # A frame the demuxer scan never saw (outside the edit list): skip it.
            continue
        yield ordinal, frame


# ---------------------------------------------------------------------------
# Model sizes and resizing


def model_size(width: int, height: int, long_side: int = 512, multiple: int = 64) -> tuple[int, int]:
    """The (width, height) frames are edited at: longer side ``long_side``, aspect kept.

    Both sides are rounded to the nearest multiple of ``multiple`` (halves
    round up), and are at least ``multiple``. 1920x1080 -> (512, 320):
    1080 * 512 / 1920 = 288 = 4.5 * 64 rounds up to 320.
    """
    for name, value in (("width", width), ("height", height), ("long_side", long_side), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")

    def nearest_multiple(numerator: int, denominator: int) -> int:
        # round(numerator / denominator / multiple) * multiple, halves up, exactly.
        steps = (2 * numerator + denominator * multiple) // (2 * denominator * multiple)
        return max(int(steps), 1) * multiple

    longer, shorter = max(width, height), min(width, height)
    long_out = nearest_multiple(long_side, 1)
    short_out = nearest_multiple(shorter * long_side, longer)
    return (long_out, short_out) if width >= height else (short_out, long_out)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize NxHxWx3 uint8 frames to ``size`` = (width, height), antialiased bicubic.

    Returns ``frames`` itself when it already has that size.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise InvalidInputError(f"frames must be an NxHxWx3 uint8 array, got shape {shape} of {dtype}")
    width, height = size
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"size must be two positive integers (width, height), got {size!r}")
    if frames.shape[1:3] == (height, width):
        return frames

    import torch
    import torch.nn.functional as F

    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    chunk = 16  # bounds the temporary tensors for long clips
    with torch.no_grad():
        for begin in range(0, frames.shape[0], chunk):
            # NHWC bytes viewed as channels-last NCHW: torch's uint8 kernels
            # resize these directly, ~20x faster than going through float.
            batch = torch.from_numpy(frames[begin : begin + chunk]).permute(0, 3, 1, 2)
            try:
                resized = F.interpolate(batch, size=(height, width), mode="bicubic", antialias=True)
            except (RuntimeError, NotImplementedError):  # a torch without the uint8 kernels
                resized = F.interpolate(batch.float(), size=(height, width), mode="bicubic", antialias=True)
                resized = resized.round_().clamp_(0, 255).to(torch.uint8)  # bicubic overshoots
            out[begin : begin + chunk] = resized.permute(0, 2, 3, 1).numpy()
    return out


# ---------------------------------------------------------------------------
# Audio: read a span of a file's audio, write it into an output


def _audio_layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class _AudioSpan:
    """The audio of ``path`` from ``start`` for ``duration`` seconds, as float32 planar chunks.

    ``start`` counts from the first video frame (so frame ``i`` starts at
    ``i / fps``). Gaps the source does not cover are filled with silence, so
    exactly ``round(duration * rate)`` samples come out.
    """

    def __init__(self, path, start: float, duration: float):
        self.path = _checked_path(path)
        if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
            raise InvalidInputError(
                f"audio span must have start >= 0 and duration >= 0 seconds, got ({start}, {duration})"
            )
        self._container = _open_input(self.path)
        self.stream = _audio_stream(self._container)
        if self.stream is None:
            self._container.close()
            self._container = None
            self.rate = None
            return
        self.rate = self.stream.codec_context.sample_rate
        self.layout = _audio_layout(self.stream.codec_context.channels)
        self.channels = 1 if self.layout == "mono" else 2
        self.total = round(duration * self.rate)
        video_start = float(_timeline(self.path).t0) if self._container.streams.video else 0.0
        self._start_time = video_start + start

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def chunks(self) -> Iterator[np.ndarray]:
        """float32 arrays of shape (channels, n) adding up to exactly ``total`` samples."""
        if self.stream is None:
            return
        emitted = 0
        for chunk in self._source_chunks():
            take = chunk[:, : self.total - emitted]
            if take.shape[1]:
                yield take
                emitted += take.shape[1]
            if emitted >= self.total:
                return
        if emitted < self.total:
            yield np.zeros((self.channels, self.total - emitted), dtype=np.float32)

    def _source_chunks(self) -> Iterator[np.ndarray]:
        av = _av()
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        position = None  # where the next source sample falls, in samples from the span's start
        try:
            for frame in self._frames_from_span_start():
                if position is None:
                    position = round((frame.time - self._start_time) * self.rate)
                    if position > 0:  # the audio starts after the span does
                        yield np.zeros((self.channels, position), dtype=np.float32)
                        position = 0
                for out in resampler.resample(frame):
                    position = yield from self._trimmed(out.to_ndarray(), position)
            if position is not None:
                for out in resampler.resample(None):
                    position = yield from self._trimmed(out.to_ndarray(), position)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: cannot decode its audio ({_reason(exc)})") from None

    def _frames_from_span_start(self):
        """Decoded audio frames, the first starting at or before the span's start."""
        container, stream = self._container, self.stream
        if self._start_time > 2 * _RESEEK_SECONDS:
            container.seek(int((self._start_time - _RESEEK_SECONDS) / stream.time_base), stream=stream, backward=True)
            frames = (frame for frame in container.decode(stream) if frame.pts is not None)
            first = next(frames, None)
            if first is not None and first.time <= self._start_time:
                yield first
                yield from frames
                return
            _rewind(container)
        yield from (frame for frame in container.decode(stream) if frame.pts is not None)

    @staticmethod
    def _trimmed(samples: np.ndarray, position: int):
        """Yield the part of `samples` at or after the span's start; return the new position."""
        samples = samples.astype(np.float32, copy=False)
        skip = max(0, -position)
        if skip < samples.shape[1]:
            yield samples[:, skip:]
        return position + samples.shape[1]


class _AudioTrack:
    """An output audio stream fed with float32 planar chunks, in encoder-sized frames."""

    def __init__(self, container, codec: str, rate: int, layout: str):
        av = _av()
        self._av = av
        self._container = container
        self.stream = container.add_stream(codec, rate=rate, layout=layout)
        self.stream.time_base = Fraction(1, rate)
        self.rate = rate
        self.layout = layout
        self.stream.codec_context.open()
        frame_size = self.stream.codec_context.frame_size or None
        self._resampler = av.AudioResampler(
            format=self.stream.codec_context.format.name, layout=layout, rate=rate, frame_size=frame_size
        )
        self.samples_in = 0
        self._samples_out = 0

    def write(self, chunk: np.ndarray) -> None:
        samples = np.ascontiguousarray(chunk, dtype=np.float32)
        frame = self._av.AudioFrame.from_ndarray(samples, format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.samples_in
        frame.time_base = Fraction(1, self.rate)
        self.samples_in += chunk.shape[1]
        for out in self._resampler.resample(frame):
            self._encode(out)

    def close(self) -> None:
        for out in self._resampler.resample(None):
            self._encode(out)
        for packet in self.stream.encode(None):
            self._container.mux(packet)

    def _encode(self, frame) -> None:
        frame.pts = self._samples_out
        frame.time_base = Fraction(1, self.rate)
        self._samples_out += frame.samples
        for packet in self.stream.encode(frame):
            self._container.mux(packet)


def _audio_codec_for(suffix: str) -> str:
    return "pcm_s16le" if suffix in (".mov", ".avi") else "libopus" if suffix == ".webm" else "aac"


# ---------------------------------------------------------------------------
# Encoding


class VideoWriter:
    """Write RGB frames to a video file that appears only when complete.

    Use as a context manager. Leaving the ``with`` block normally flushes the
    encoder, checks that ``expected_frames`` frames were written and renames
    the hidden temporary file onto ``path``; leaving it with an exception
    (including KeyboardInterrupt or EditCancelled) deletes the temporary file.
    """

    def __init__(
        self,
        path,
        *,
        fps: Fraction,
        width: int,
        height: int,
        codec: str = "h264",
        audio_source: tuple[str | os.PathLike, float, float] | None = None,
        overwrite: bool = False,
        expected_frames: int | None = None,
    ):
        self.path = pathlib.Path(path)
        self.fps = _as_rate(fps)
        self.width, self.height = width, height
        self.codec = codec
        self.expected_frames = expected_frames
        self.frames_written = 0
        self._check(audio_source, overwrite)
        self._overwrite = overwrite
        self._audio_source = audio_source
        self._temp: pathlib.Path | None = None
        self._container = None
        self._audio_span: _AudioSpan | None = None
        self._audio_chunks: Iterator[np.ndarray] | None = None
        self._audio_track: _AudioTrack | None = None

    def _check(self, audio_source, overwrite: bool) -> None:
        if self.codec not in _OUTPUT_EXTENSIONS:
            raise InvalidInputError(f"codec must be one of {sorted(_OUTPUT_EXTENSIONS)}, got {self.codec!r}")
        suffix = self.path.suffix.lower()
        if suffix not in _OUTPUT_EXTENSIONS[self.codec]:
            allowed = ", ".join(_OUTPUT_EXTENSIONS[self.codec])
            raise InvalidInputError(f"{self.path}: a {self.codec} output must end in {allowed}")
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.expected_frames is not None and self.expected_frames < 0:
            raise InvalidInputError(f"expected_frames must be >= 0, got {self.expected_frames}")
        if not self.path.parent.is_dir():
            raise MediaError(f"{self.path}: the folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise OutputExistsError(f"{self.path}: is a folder")
        if audio_source is not None:
            _checked_path(audio_source[0])
        if audio_source is not None and self.path.exists() and _same_file(self.path, audio_source[0]):
            raise OutputExistsError(f"{self.path}: is the input itself; choose another output")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path}: already exists (pass overwrite to replace it)")

    def __enter__(self) -> VideoWriter:
        av = _av()
        if self._audio_source is not None:
            source, start, duration = self._audio_source
            self._audio_span = _AudioSpan(source, float(start), float(duration))
        try:
            fd, temp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.stem}.partial-", suffix=self.path.suffix
            )
        except OSError as exc:
            self._close_audio_source()
            raise MediaError(f"{self.path}: cannot write in {self.path.parent} ({exc.strerror})") from None
        os.close(fd)
        self._temp = pathlib.Path(temp)
        try:
            self._container = av.open(str(self._temp), "w", format=_muxer_for(self.path.suffix.lower()))
            self._video = _add_video_stream(self._container, self.codec, self.fps, self.width, self.height)
            if self._audio_span is not None and self._audio_span.rate is not None:
                span = self._audio_span
                self._audio_track = _AudioTrack(
                    self._container, _audio_codec_for(self.path.suffix.lower()), span.rate, span.layout
                )
                self._audio_chunks = span.chunks()
        except BaseException as exc:
            self._discard()
            if isinstance(exc, av.FFmpegError):
                raise MediaError(f"{self.path}: cannot start encoding ({_reason(exc)})") from None
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write() called outside its `with` block")
        if not isinstance(frame, np.ndarray) or frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            shape = getattr(frame, "shape", None)
            dtype = getattr(frame, "dtype", type(frame).__name__)
            raise InvalidInputError(
                f"frame must be a {self.height}x{self.width}x3 uint8 array, got shape {shape} of {dtype}"
            )
        av = _av()
        try:
            video_frame = _encoder_frame(frame, self._video.pix_fmt)
            video_frame.pts = self.frames_written
            for packet in self._video.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1
            # Keep audio level with video so the file is interleaved.
            self._feed_audio(Fraction(self.frames_written) / self.fps)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: encoding failed ({_reason(exc)})") from None

    def _feed_audio(self, until_seconds: Fraction | None) -> None:
        if self._audio_track is None or self._audio_chunks is None:
            return
        limit = None if until_seconds is None else until_seconds * self._audio_track.rate
        while limit is None or self._audio_track.samples_in < limit:
            chunk = next(self._audio_chunks, None)
            if chunk is None:
                self._audio_chunks = None
                return
            self._audio_track.write(chunk)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        av = _av()
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            self._feed_audio(None)
            if self._audio_track is not None:
                self._audio_track.close()
            self._container.close()
            self._container = None
        except av.FFmpegError as exc:
            self._discard()
            raise MediaError(f"{self.path}: encoding failed ({_reason(exc)})") from None
        except BaseException:
            self._discard()
            raise
        if self.frames_written == 0:
            self._discard()
            raise MediaError(f"{self.path}: no frames were written; nothing was saved")
        if self.expected_frames is not None and self.frames_written != self.expected_frames:
            self._discard()
            raise MediaError(
                f"{self.path}: got {self.frames_written} frames, expected {self.expected_frames}; nothing was written"
            )
        if self.path.exists() and not self._overwrite:
            self._discard()
            raise OutputExistsError(f"{self.path}: appeared while encoding; not replaced")
        self._close_audio_source()
        # mkstemp made the file private (0600); give it the mode a new file gets.
        os.chmod(self._temp, new_file_mode())
        os.replace(self._temp, self.path)
        self._temp = None

    def _close_audio_source(self) -> None:
        if self._audio_span is not None:
            self._audio_span.close()
            self._audio_span = None

    def _discard(self) -> None:
        """Drop everything written so far; leaves no file behind."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._close_audio_source()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()
            self._temp = None


def new_file_mode() -> int:
    """The mode a new file of this process gets (0666 less the umask): what a
    finished output written through mkstemp (0600) is given before its rename."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it; not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _as_rate(fps) -> Fraction:
    """A frame rate as an exact Fraction; a float (29.97) means the common rate it rounds (30000/1001)."""
    try:
        if isinstance(fps, bool):
            raise TypeError
        rate = Fraction(fps) if isinstance(fps, (int, Fraction)) else _snap_rate(Fraction(fps), _CFR_SNAP)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"fps must be a positive number such as Fraction(30000, 1001), got {fps!r}") from None
    if rate <= 0:
        raise InvalidInputError(f"fps must be positive, got {fps!r}")
    return rate


def _same_file(a: pathlib.Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _muxer_for(suffix: str) -> str:
    muxers = {
        ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".ts": "mpegts"
    }
    if suffix not in muxers:
        raise InvalidInputError(f"unsupported file extension {suffix!r}: use one of {', '.join(muxers)}")
    return muxers[suffix]


def _add_video_stream(container, codec: str, fps: Fraction, width: int, height: int):
    odd = width % 2 or height % 2
    if codec == "h264":
        encoder, pix_fmt, options = "libx264", "yuv444p" if odd else "yuv420p", _H264_OPTIONS
    else:
        encoder = _PRORES_ENCODER if width % 2 == 0 else _PRORES_ODD_WIDTH_ENCODER
        pix_fmt, options = "yuv422p10le", _PRORES_OPTIONS
    return _new_video_stream(container, encoder, pix_fmt, options, fps, width, height)


def _new_video_stream(container, encoder: str, pix_fmt: str, options: dict, fps: Fraction, width: int, height: int):
    stream = container.add_stream(encoder, rate=fps, options=dict(options))
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    # One tick per frame: frame i has pts i, so the rate is exact (30000/1001 stays 30000/1001).
    stream.codec_context.time_base = 1 / fps
    context = stream.codec_context
    if not pix_fmt.startswith("yuvj"):
        # Tag BT.709, limited range, so every reader converts back the way we converted.
        context.colorspace, context.color_primaries, context.color_trc, context.color_range = 1, 1, 1, 1
    return stream


def _encoder_frame(rgb: np.ndarray, pix_fmt: str):
    av = _av()
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if pix_fmt.startswith("yuvj"):
        return frame.reformat(format=pix_fmt)
    return frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")


# ---------------------------------------------------------------------------
# Synthetic clips


def make_test_clip(
    path,
    *,
    frames: int = 24,
    width: int = 96,
    height: int = 64,
    fps: Fraction = Fraction(24),
    codec: str = "h264",
    audio: bool = True,
    rotation: int = 0,
    pattern: str = "moving",
) -> pathlib.Path:
    """Write a synthetic clip for tests, demos and benchmarks; returns its path.

    ``width`` x ``height`` is the picture as displayed. With ``rotation`` 90,
    180 or 270 the file stores it turned the other way plus a display matrix
    saying "turn it ``rotation`` degrees clockwise", like phone footage, so a
    reader that honours rotation sees the same picture as an unrotated clip.

    Patterns: ``"moving"``, smoothly moving textured shapes over a drifting
    textured background (so optical flow is meaningful); ``"index"``, eight
    vertical bars, bar k white when bit k of the frame index is set (bit 0 on
    the left), which survives any codec. Codecs: h264, hevc, prores, dnxhd
    (DNxHR SQ: at least 256x120), vp9 (.webm), mjpeg (.avi or .mov); .ts
    files are MPEG-TS (which starts its clock at 1.4 s, not 0). Audio is a
    440 Hz sine tone at 48 kHz, as long as the video. Overwrites ``path``.
    """
    path = pathlib.Path(path)
    if codec not in _TEST_CLIP_CODECS:
        raise InvalidInputError(f"codec must be one of {sorted(_TEST_CLIP_CODECS)}, got {codec!r}")
    if pattern not in _TEST_PATTERNS:
        raise InvalidInputError(f"pattern must be one of {_TEST_PATTERNS}, got {pattern!r}")
    if rotation not in (0, 90, 180, 270):
        raise InvalidInputError(f"rotation must be 0, 90, 180 or 270, got {rotation!r}")
    if frames <= 0 or width <= 0 or height <= 0:
        raise InvalidInputError(f"frames, width and height must be positive, got {frames}, {width}, {height}")
    if codec == "dnxhd" and (width < 256 or height < 120) and (height < 256 or width < 120):
        raise InvalidInputError(f"DNxHR needs at least 256x120 pixels, got {width}x{height}")
    fps = _as_rate(fps)
    encoder, even_fmt, odd_fmt, options = _TEST_CLIP_CODECS[codec]
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    if encoder == _PRORES_ENCODER and stored_w % 2:
        encoder = _PRORES_ODD_WIDTH_ENCODER
    pix_fmt = odd_fmt if stored_w % 2 or stored_h % 2 else even_fmt
    suffix = path.suffix.lower()
    av = _av()
    try:
        with av.open(str(path), "w", format=_muxer_for(suffix)) as container:
            stream = _new_video_stream(container, encoder, pix_fmt, options, fps, stored_w, stored_h)
            if rotation:
                # PyAV takes the counter-clockwise angle a reader will report.
                stream.set_display_rotation(-rotation)
            track = None
            if audio:
                track = _AudioTrack(container, _audio_codec_for(suffix), _TEST_AUDIO_RATE, "stereo")
            for index in range(frames):
                picture = test_pattern_frame(index, width, height, pattern)
                if rotation:
                    # Store it turned counter-clockwise; the reader turns it back clockwise.
                    picture = np.ascontiguousarray(np.rot90(picture, rotation // 90))
                frame = _encoder_frame(picture, pix_fmt)
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
                if track is not None:
                    end = round(Fraction(index + 1) / fps * _TEST_AUDIO_RATE)
                    if end > track.samples_in:
                        track.write(_sine(track.samples_in, end - track.samples_in))
            for packet in stream.encode(None):
                container.mux(packet)
            if track is not None:
                track.close()
    except av.FFmpegError as exc:
        path.unlink(missing_ok=True)
        raise MediaError(f"{path}: cannot write a {codec} test clip ({_reason(exc)})") from None
    return path


def _sine(first_sample: int, count: int) -> np.ndarray:
    t = (np.arange(first_sample, first_sample + count) / _TEST_AUDIO_RATE).astype(np.float64)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    return np.stack([tone, tone])


def test_pattern_frame(index: int, width: int, height: int, pattern: str = "moving") -> np.ndarray:
    """Frame ``index`` of a synthetic pattern, HxWx3 uint8 (what make_test_clip encodes)."""
    if pattern == "index":
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        edges = np.linspace(0, width, 9).round().astype(int)
        for bit in range(8):
            if index >> bit & 1:
                frame[:, edges[bit] : edges[bit + 1]] = 255
        return frame
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = float(index)
    # Background: a diagonal gradient with a fine texture, drifting right 0.7 px a frame.
    bx = x - 0.7 * t
    background = 0.45 + 0.2 * np.sin(bx / 9.0) * np.cos(y / 7.0) + 0.15 * (y / max(height, 1))
    r = background.copy()
    g = 0.8 * background + 0.1 * np.sin((bx + y) / 4.0)
    b = 0.6 * background + 0.2
    # A checkered disc moving on a slow ellipse.
    cx = width * (0.5 + 0.25 * math.cos(t / 12.0))
    cy = height * (0.5 + 0.25 * math.sin(t / 12.0))
    radius = 0.22 * min(width, height)
    disc = ((x - cx) ** 2 + (y - cy) ** 2) <= radius**2
    checker = ((np.floor((x - cx) / 4) + np.floor((y - cy) / 4)) % 2).astype(np.float32)
    r = np.where(disc, 0.9 - 0.5 * checker, r)
    g = np.where(disc, 0.3 + 0.4 * checker, g)
    b = np.where(disc, 0.2, b)
    # A striped square sliding left to right and back.
    side = 0.3 * min(width, height)
    sx = (width - side) * (0.5 + 0.5 * math.sin(t / 9.0))
    sy = height * 0.15
    square = (x >= sx) & (x < sx + side) & (y >= sy) & (y < sy + side)
    stripes = 0.5 + 0.5 * np.sin((x - sx) / 2.0)
    r = np.where(square, 0.1, r)
    g = np.where(square, 0.2 + 0.3 * stripes, g)
    b = np.where(square, 0.5 + 0.4 * stripes, b)
    rgb = np.stack([r, g, b], axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


test_pattern_frame.__test__ = False  # not a pytest test, despite its name
