"""Range math on OpenTimelineIO: which frames of which media a clip shows, and where.

Two coordinate systems matter:

* the *timeline range* of a clip: the part of the timeline where the clip is
  seen, in the coordinates of the timeline's top-level stack (``timeline.tracks``),
  through any nested stacks and tracks and their trims;
* the *media range*: the frames of the clip's media that show there, counted
  from the media's first frame at the media's own exact rate.

OTIO rates are floats (23.976 is stored as 23.976023976023978); the wire
contract wants exact fractions, so :func:`exact_rate` recovers them.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
import pathlib
import urllib.parse
import urllib.request

import opentimelineio as otio
from opentimelineio.opentime import RationalTime, TimeRange

from .errors import ClipError, SelectionError

__all__ = [
    "MediaRange",
    "clip_media_range",
    "clip_timeline_range",
    "top_level_track",
    "media_path",
    "exact_rate",
    "otio_rate",
    "timeline_rate",
    "parse_time",
    "parse_range",
    "format_rate",
]

# Rates that are stored as floats but mean an NTSC fraction n*1000/1001.
_NTSC_BASES = (24, 30, 48, 60, 120, 240)


@dataclasses.dataclass(frozen=True)
class MediaRange:
    """The frames of one media file a clip shows, in the media's own frames."""

    media_path: str           # local filesystem path (file:// URLs decoded)
    start_frame: int          # first used frame, counted from the media's first frame
    frame_count: int
    rate: fractions.Fraction  # the media's exact rate (24000/1001 for 23.976)
    handles_before: int = 0   # extra frames requested before/after, where the media has them
    handles_after: int = 0


def exact_rate(rate: float) -> fractions.Fraction:
    """The exact fraction an OTIO float rate stands for (23.976 -> 24000/1001)."""
    if rate <= 0:
        raise ClipError(f"frame rate {rate} is not positive")
    for base in _NTSC_BASES:
        ntsc = fractions.Fraction(base * 1000, 1001)
        if abs(rate - float(ntsc)) < 0.005:  # 23.976, 23.98 and 24000/1001 alike
            return ntsc
    return fractions.Fraction(rate).limit_denominator(1001)


def otio_rate(rate: fractions.Fraction | float) -> float:
    """The float OTIO uses for an exact rate (so drop-frame timecode works for 29.97)."""
    return float(exact_rate(float(rate)))


def format_rate(rate: fractions.Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def media_path(reference: otio.core.MediaReference | None, *, clip_name: str = "",
               base_dir: str | os.PathLike | None = None) -> str:
    """The local path of an ExternalReference (file:// URL decoded; relative paths
    resolved against ``base_dir``, the folder of the timeline file)."""
    label = f"clip '{clip_name}'" if clip_name else "clip"
    if reference is None or isinstance(reference, otio.schema.MissingReference):
        raise ClipError(f"{label} has no media (missing media reference)")
    if not isinstance(reference, otio.schema.ExternalReference):
        raise ClipError(f"{label} uses a {reference.schema_name()}, not a media file; only external media files can be edited")
    url = reference.target_url or ""
    if not url:
        raise ClipError(f"{label} has an empty media URL")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = f"//{parsed.netloc}{path}"  # UNC share
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise ClipError(f"{label} media is not a local file ({url})")
    else:
        path = url
    if not os.path.isabs(path) and base_dir is not None:
        path = os.path.normpath(os.path.join(os.fspath(base_dir), path))
    return path


def top_level_track(clip: otio.schema.Clip) -> otio.schema.Track:
    """The track directly under the timeline's top-level stack that holds ``clip``
    (through any nesting)."""
    item, parent = clip, clip.parent()
    while parent is not None and parent.parent() is not None:
        item, parent = parent, parent.parent()
    if parent is None or not isinstance(item, otio.schema.Track):
        raise ClipError(f"clip '{clip.name}' is not inside a track of a timeline")
    return item


def _visible(clip: otio.schema.Clip) -> tuple[TimeRange, TimeRange]:
    """(range in the top-level stack, matching range in the clip's own media time)
    of the part of ``clip`` that is seen, through every parent's trim."""
    for item in _self_and_ancestors(clip):
        for effect in item.effects:
            if isinstance(effect, otio.schema.TimeEffect):
                where = "" if item is clip else f" (on '{item.name}')"
                raise ClipError(
                    f"clip '{clip.name}' is retimed by a {effect.schema_name()}{where}; "
                    "render the speed change first, then edit the rendered clip")
    own = clip.trimmed_range()
    outer = own
    item = clip
    while (parent := item.parent()) is not None:
        placed = item.range_in_parent()
        # Map into the parent's coordinates: same duration, new start.
        outer = TimeRange(placed.start_time + (outer.start_time - item.trimmed_range().start_time),
                          outer.duration)
        trim = _trim_window(parent)
        if trim is not None:
            cut_before = max(trim.start_time - outer.start_time, RationalTime(0, outer.start_time.rate))
            cut_after = max(outer.end_time_exclusive() - trim.end_time_exclusive(),
                            RationalTime(0, outer.start_time.rate))
            if cut_before + cut_after >= outer.duration:
                raise ClipError(f"clip '{clip.name}' is hidden by the trim of '{parent.name}'")
            outer = TimeRange(outer.start_time + cut_before, outer.duration - cut_before - cut_after)
            own = TimeRange(own.start_time + cut_before, own.duration - cut_before - cut_after)
        item = parent
    return outer, own


def _trim_window(item) -> TimeRange | None:
    """The part of ``item``'s own time that is seen, or None when all of it is.

    A track whose source range starts below zero, before its first child, is
    the CMX 3600 reader's way of placing the track at its record timecode (an
    EDL at 01:00:00:00 gives a track starting at -1 h): the start is an offset,
    kept by OTIO's time transforms (so the EDL writer puts the clips back at
    01:00:00:00), and the window seen is the track's first ``duration`` of
    content. Read literally it would hide every clip."""
    trim = item.source_range
    if trim is not None and isinstance(item, otio.schema.Track) and trim.start_time.value < 0:
        return TimeRange(RationalTime(0, trim.start_time.rate), trim.duration)
    return trim


def _self_and_ancestors(item):
    while item is not None:
        yield item
        item = item.parent()


def clip_timeline_range(clip: otio.schema.Clip) -> TimeRange:
    """Where ``clip`` is seen, in the coordinates of ``timeline.tracks`` (so a
    result clip on a top-level track lands exactly over it)."""
    return _visible(clip)[0]


def _media_rate(clip: otio.schema.Clip) -> float:
    reference = clip.media_reference
    available = reference.available_range if reference is not None else None
    if available is not None:
        return available.duration.rate
    if clip.source_range is not None:
        return clip.source_range.duration.rate
    raise ClipError(f"clip '{clip.name}' has neither a source range nor an available range; its frame rate is unknown")


def clip_used_frames(clip: otio.schema.Clip) -> tuple[int, int, fractions.Fraction, int | None]:
    """(start_frame, frame_count, exact media rate, frames in the media or None)
    of the visible part of ``clip``."""
    rate = _media_rate(clip)
    _, own = _visible(clip)
    available = clip.media_reference.available_range if clip.media_reference is not None else None
    first = available.start_time if available is not None else RationalTime(0, rate)
    start = (own.start_time - first).rescaled_to(rate).value
    count = own.duration.rescaled_to(rate).value
    start_frame, frame_count = round(start), round(count)
    if frame_count < 1:
        raise ClipError(f"clip '{clip.name}' shows less than one frame")
    if start_frame < 0:
        raise ClipError(f"clip '{clip.name}' starts {-start_frame} frames before its media's first frame")
    total = round(available.duration.rescaled_to(rate).value) if available is not None else None
    if total is not None and start_frame + frame_count > total:
        raise ClipError(
            f"clip '{clip.name}' uses frames {start_frame}-{start_frame + frame_count - 1} "
            f"but its media has only {total}")
    return start_frame, frame_count, exact_rate(rate), total


def clip_media_range(clip: otio.schema.Clip, *, handles: int = 0,
                     base_dir: str | os.PathLike | None = None) -> MediaRange:
    """The media frames ``clip`` shows on the timeline, plus up to ``handles``
    frames each side where the media has them.

    Raises ClipError for a clip without an editable media file, a clip under a
    time effect, or a range outside the media.
    """
    if handles < 0:
        raise ClipError(f"handles must be 0 or more, got {handles}")
    path = media_path(clip.media_reference, clip_name=clip.name, base_dir=base_dir)
    start, count, rate, total = clip_used_frames(clip)
    before = min(handles, start)
    # Unknown media length: ask for the full handles; the server renders what exists
    # and says so in Job.rendered_range.
    after = handles if total is None else max(0, min(handles, total - start - count))
    return MediaRange(media_path=path, start_frame=start, frame_count=count, rate=rate,
                      handles_before=before, handles_after=after)


def timeline_rate(timeline: otio.schema.Timeline) -> float:
    """The timeline's frame rate: its global start time's rate, else its first item's."""
    if timeline.global_start_time is not None:
        return otio_rate(timeline.global_start_time.rate)
    for track in timeline.tracks:
        for child in track:
            if isinstance(child, otio.core.Item):
                return otio_rate(child.trimmed_range().duration.rate)
    return 24.0


def parse_time(text: str, rate: float, *, start: RationalTime | None = None) -> RationalTime:
    """A time on the timeline from a timecode (``HH:MM:SS:FF``, ``;`` before the
    frames for drop-frame) or a frame number counted from the timeline's start.

    Timecodes are the ones the editor shows, so the timeline's global start
    time is subtracted; frame numbers are already relative to the start.
    """
    text = text.strip()
    if text.isdigit():
        return RationalTime(int(text), rate)
    if text.count(":") + text.count(";") == 3:
        try:
            absolute = RationalTime.from_timecode(text, rate)
        except (ValueError, RuntimeError) as exc:  # OTIO raises ValueError for a bad timecode
            raise SelectionError(f"'{text}' is not a valid timecode at {rate:g} fps ({exc})") from None
        origin = start if start is not None else RationalTime(0, rate)
        relative = absolute - origin.rescaled_to(rate)
        if relative.value < 0:
            raise SelectionError(
                f"timecode {text} is before the timeline's start {origin.to_timecode(rate)}")
        return relative.rescaled_to(rate)
    raise SelectionError(f"'{text}' is neither a frame number nor a timecode HH:MM:SS:FF")


def parse_range(text: str, rate: float, *, start: RationalTime | None = None) -> TimeRange:
    """``START-END`` (END exclusive, like an EDL record out) in timecode or frames."""
    parts = text.split("-")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise SelectionError(f"--range '{text}' must be START-END, e.g. 01:00:10:00-01:00:20:00 or 240-480")
    begin = parse_time(parts[0], rate, start=start)
    end = parse_time(parts[1], rate, start=start)
    if end <= begin:
        raise SelectionError(f"--range '{text}' ends before it starts")
    return TimeRange.range_from_start_end_time(begin, end)


def path_to_url(path: str | os.PathLike) -> str:
    """A file:// URL for a local file, as OTIO media references store them."""
    return pathlib.Path(path).resolve().as_uri()
