"""Put a finished job's clip on the timeline: a new movie strip above its source.

Plain functions over Blender's data (callable from timers and headless tests).
The source strip is only read, never changed.
"""

from __future__ import annotations

import dataclasses

from fairy_plugin.errors import ClipError

from . import compat
from .strips import StripSpan, find_strip, strip_collection

__all__ = ["ResultLayout", "result_layout", "free_channel_above", "insert_result", "strip_name_for",
           "MAX_CHANNEL", "METADATA_KEY"]

MAX_CHANNEL = 128
# The custom property (an IDProperty group) holding the job's metadata on a result strip.
METADATA_KEY = "fairy"
_MAX_NAME = 60  # Blender names hold 63 bytes; leave room for its ".001" suffixes


@dataclasses.dataclass(frozen=True)
class ResultLayout:
    """Where the rendered clip's content goes so its range part lands exactly over the source."""

    content_start: int   # timeline frame of the clip's first frame
    offset_start: int    # content frames hidden at the start (the handles shown before the range)
    offset_end: int
    length: int          # frames the rendered clip must have


def result_layout(span: StripSpan, rendered_before: int = 0, rendered_after: int = 0) -> ResultLayout:
    """Placement of a clip holding ``rendered_before`` + the span's frames + ``rendered_after``, in file order.

    A reversed source plays its frames backwards, so the result does too: its
    later frames (``rendered_after``) are then the ones before the range on the timeline.
    """
    length = rendered_before + span.frame_count + rendered_after
    shown_before, shown_after = ((rendered_after, rendered_before) if span.reversed
                                 else (rendered_before, rendered_after))
    return ResultLayout(content_start=span.timeline_start - shown_before,
                        offset_start=shown_before, offset_end=shown_after, length=length)


def _channel_locked(editor, channel: int) -> bool:
    channels = getattr(editor, "channels", None)
    if channels is None or channel >= len(channels):
        return False
    return bool(getattr(channels[channel], "lock", False))


def _occupied(collection, channel: int, start: int, end: int) -> bool:
    return any(s.channel == channel and compat.left_handle(s) < end and compat.right_handle(s) > start
               for s in collection)


def free_channel_above(collection, channel: int, start: int, end: int, *, editor=None) -> int:
    """The lowest channel above ``channel`` with nothing in frames [start, end) (and not locked)."""
    for candidate in range(channel + 1, MAX_CHANNEL + 1):
        if editor is not None and _channel_locked(editor, candidate):
            continue
        if not _occupied(collection, candidate, start, end):
            return candidate
    raise ClipError(f"no free channel above channel {channel} for frames {start}-{end - 1}")


def _staging_channel(collection, preferred: int, start: int, end: int) -> int:
    """A channel where the whole untrimmed clip fits, so Blender does not move it while it is added."""
    order = list(range(preferred, MAX_CHANNEL + 1)) + list(range(preferred - 1, 0, -1))
    for candidate in order:
        if not _occupied(collection, candidate, start, end):
            return candidate
    raise ClipError(f"no channel has room for frames {start}-{end - 1}")


def strip_name_for(instruction: str) -> str:
    """A strip name after the instruction: one line, short enough for Blender."""
    name = " ".join(instruction.split())
    return name if len(name) <= _MAX_NAME else name[:_MAX_NAME - 1].rstrip() + "\u2026"


def insert_result(editor, span: StripSpan, result_path: str, *, name: str, metadata: dict,
                  rendered_before: int = 0, rendered_after: int = 0):
    """Add ``result_path`` as a movie strip on the first free channel above the source, over exactly
    the span's timeline frames, with ``metadata`` under ``strip["fairy"]``; returns the strip.

    Raises ClipError (and leaves nothing behind) when the clip's length does not match or no channel is free.
    """
    source = find_strip(editor, span.strip_name)
    collection = strip_collection(editor, source) if source is not None else compat.top_level_strips(editor)
    below = source.channel if source is not None else span.channel
    meta = source.parent_meta() if source is not None and hasattr(source, "parent_meta") else None
    target = free_channel_above(collection, below, span.timeline_start, span.timeline_end,
                                editor=meta if meta is not None else editor)
    layout = result_layout(span, rendered_before, rendered_after)
    staging = _staging_channel(collection, target, layout.content_start, layout.content_start + layout.length)

    strip = collection.new_movie(name=name, filepath=result_path, channel=staging,
                                 frame_start=layout.content_start)
    try:
        if compat.content_duration(strip) != layout.length:
            raise ClipError(
                f"the result {result_path} has {compat.content_duration(strip)} frames, expected "
                f"{layout.length}; it was not added")
        strip.use_reverse_frames = span.reversed
        compat.set_handle_offsets(strip, layout.offset_start, layout.offset_end)
        strip.channel = target
        placed = (strip.channel, compat.left_handle(strip), compat.right_handle(strip))
        if placed != (target, span.timeline_start, span.timeline_end):
            raise ClipError(
                f"Blender placed the result at channel {placed[0]}, frames {placed[1]}-{placed[2] - 1} "
                f"instead of channel {target}, frames {span.timeline_start}-{span.timeline_end - 1}; it was not added")
        strip[METADATA_KEY] = metadata
        strip.select = False
    except BaseException:
        collection.remove(strip)
        raise
    return strip
