"""Decoding exact frame indices (``iter_frames``, ``read_frames``) as upright RGB ``uint8`` frames."""

from __future__ import annotations

import bisect
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import InvalidInputError, MediaError
from .timing import _RESEEK_SECONDS, _av, _checked_path, _open_input, _reason, _rewind, _timeline, _Timeline, _video_stream


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


def _numbered(frames, ordinal_of: dict[int, int]):
    for frame in frames:
        if frame.pts is None:
            continue
        ordinal = ordinal_of.get(frame.pts)
        if ordinal is None:
            # A frame the demuxer scan never saw (outside the edit list): skip it.
            continue
        yield ordinal, frame
