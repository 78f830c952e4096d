"""Opening media files, the constant-rate frame grid over their timestamps, and ``probe``.

See the package docstring (``fairy.video``) for how frame indices are defined.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Sequence
from fractions import Fraction


from ..errors import MediaError


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


def _rewind(container) -> None:
    # Time 0 with no stream is before every packet, whatever the container's
    # start time (MPEG-TS starts at 1.4 s; seeking to exactly that can land a
    # GOP late). A demuxer that refuses gets a byte seek to the beginning.
    av = _av()
    try:
        container.seek(0, backward=True)
    except av.FFmpegError:
        container.seek(0, unsupported_byte_offset=True)


# After seeking, decoding starts at a keyframe; if the first frame is already
# past the wanted one (open GOPs, B-frame reordering across a keyframe), seek
# this much earlier and retry, doubling, then decode from the start.
_RESEEK_SECONDS = 1.0
