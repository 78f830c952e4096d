"""Which strips to edit and which media frames each one shows.

Plain functions over Blender's data (no ``bpy`` import, no operators), so the
menu entries, timers and headless tests all run this same code.

How Blender maps a movie strip to its file (checked by rendering with bpy 5.0.1,
see tests/plugin/test_blender_strips.py): one media frame per timeline frame,
whatever the scene's rate; the content's first frame is the file's frame
``animation_offset_start``; ``use_reverse_frames`` plays the content backwards.
So the media range needs no rate conversion: frames are counted in the media's
own frames and the media's exact rate (``strip.fps``) goes to the server.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Callable, Iterable

from fairy_plugin.errors import ClipError, SelectionError
from fairy_plugin.ranges import MediaRange, exact_rate

from . import compat

__all__ = [
    "StripSpan",
    "strip_span",
    "media_range",
    "selected_movie_strips",
    "movie_strips_in_range",
    "scene_frame_range",
    "strip_collection",
]


@dataclasses.dataclass(frozen=True)
class StripSpan:
    """The part of a movie strip to edit: where it is on the timeline and which file frames show there."""

    strip_name: str
    channel: int
    media_path: str
    rate: fractions.Fraction     # the media's exact rate
    timeline_start: int          # first timeline frame edited
    timeline_end: int            # one past the last
    media_start: int             # lowest file frame shown in [timeline_start, timeline_end)
    handles_before: int          # extra file frames before media_start (and after the range) the file has,
    handles_after: int           # up to the number asked for
    reversed: bool = False       # the strip plays its content backwards

    @property
    def frame_count(self) -> int:
        return self.timeline_end - self.timeline_start


def _strip_label(strip) -> str:
    return f"strip '{strip.name}'"


def strip_span(strip, *, window: tuple[int, int] | None = None, handles: int = 0,
               abspath: Callable[[str], str] = os.path.abspath) -> StripSpan:
    """The media frames ``strip`` shows, limited to the timeline frames ``window`` = (start, end exclusive).

    ``abspath`` resolves Blender's ``//relative`` paths (``bpy.path.abspath`` in Blender).
    Raises ClipError for a strip that is not an editable movie strip.
    """
    label = _strip_label(strip)
    if not compat.is_movie(strip):
        raise ClipError(f"{label} is a {str(getattr(strip, 'type', '?')).lower()} strip; Fairy edits movie strips")
    if handles < 0:
        raise ClipError(f"handles must be 0 or more, got {handles}")
    if len(getattr(strip, "retiming_keys", ()) or ()):
        raise ClipError(f"{label} is retimed; reset its retiming (Strip > Retiming) or render it first")
    if getattr(strip, "speed_factor", 1.0) != 1.0:  # before retiming existed
        raise ClipError(f"{label} has a speed factor; reset it to 1 or render it first")
    fps = float(getattr(strip, "fps", 0.0) or 0.0)
    if fps <= 0:
        raise ClipError(f"{label}: Blender cannot read its movie ({strip.filepath}); fix the path first")
    # Saved .blend files keep "//../clips/a.mp4"; the server refuses paths with "..".
    path = os.path.normpath(abspath(strip.filepath))
    if not os.path.isfile(path):
        raise ClipError(f"{label}: its movie file {path} does not exist")

    left, right = compat.left_handle(strip), compat.right_handle(strip)
    if window is not None:
        left, right = max(left, window[0]), min(right, window[1])
        if left >= right:
            raise ClipError(f"{label} does not overlap frames {window[0]}-{window[1] - 1}")

    content_start = round(compat.content_start(strip))
    content_frames = compat.content_duration(strip)
    hidden_before = int(getattr(strip, "animation_offset_start", 0) or 0)  # file frames before the content
    hidden_after = int(getattr(strip, "animation_offset_end", 0) or 0)
    total = hidden_before + content_frames + hidden_after
    reverse = bool(getattr(strip, "use_reverse_frames", False))
    if reverse:
        # Content index i shows at timeline frame content_start + (content_frames - 1 - i).
        media_start = hidden_before + content_frames - (right - content_start)
    else:
        media_start = hidden_before + (left - content_start)
    count = right - left
    if media_start < 0 or media_start + count > total:
        raise ClipError(f"{label} shows frames outside its movie; Blender's strip data looks inconsistent")
    return StripSpan(
        strip_name=strip.name,
        channel=int(strip.channel),
        media_path=path,
        rate=exact_rate(fps),
        timeline_start=left,
        timeline_end=right,
        media_start=media_start,
        handles_before=min(handles, media_start),
        handles_after=min(handles, total - media_start - count),
        reversed=reverse,
    )


def media_range(span: StripSpan) -> MediaRange:
    """The core's MediaRange for a span (what ``request_for_range`` takes)."""
    return MediaRange(media_path=span.media_path, start_frame=span.media_start,
                      frame_count=span.frame_count, rate=span.rate,
                      handles_before=span.handles_before, handles_after=span.handles_after)


# --- choosing strips ---------------------------------------------------------------


def selected_movie_strips(editor) -> list:
    """The selected movie strips of the level the user sees, else the active strip if it is a movie.

    Raises SelectionError when that leaves nothing to edit.
    """
    if editor is None:
        raise SelectionError("this scene has no video sequencer strips")
    level = list(compat.display_strips(editor))
    chosen = [s for s in level if s.select and compat.is_movie(s)]
    if not chosen:
        active = editor.active_strip
        if active is not None and compat.is_movie(active):
            chosen = [active]
    if not chosen:
        raise SelectionError("select one or more movie strips first")
    return sorted(chosen, key=lambda s: (compat.left_handle(s), s.channel))


def scene_frame_range(scene) -> tuple[int, int]:
    """The preview range when it is on, else the scene's frame range, as (start, end exclusive)."""
    if getattr(scene, "use_preview_range", False):
        return int(scene.frame_preview_start), int(scene.frame_preview_end) + 1
    return int(scene.frame_start), int(scene.frame_end) + 1


def movie_strips_in_range(editor, window: tuple[int, int], *, include_muted: bool = False) -> list:
    """Every movie strip of the visible level that overlaps ``window`` (start, end exclusive)."""
    if editor is None:
        raise SelectionError("this scene has no video sequencer strips")
    start, end = window
    chosen = [s for s in compat.display_strips(editor)
              if compat.is_movie(s) and (include_muted or not s.mute)
              and compat.left_handle(s) < end and compat.right_handle(s) > start]
    if not chosen:
        raise SelectionError(f"no movie strip overlaps frames {start}-{end - 1}")
    return sorted(chosen, key=lambda s: (compat.left_handle(s), s.channel))


def strip_collection(editor, strip):
    """The collection that holds ``strip``: its meta strip's strips, else the top level."""
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    if parent is not None:
        return compat.top_level_strips(parent)  # a meta strip's own `strips` (`sequences` before 4.4)
    return compat.top_level_strips(editor)


def find_strip(editor, name: str):
    """The strip called ``name`` anywhere in the editor, or None (names are unique per scene)."""
    if editor is None:
        return None
    for strip in compat.all_strips(editor):
        if strip.name == name:
            return strip
    return None


def spans_for(strips: Iterable, *, window: tuple[int, int] | None = None, handles: int = 0,
              abspath: Callable[[str], str] = os.path.abspath) -> list[StripSpan]:
    """A span per strip; the first strip that cannot be edited stops everything (nothing is sent)."""
    return [strip_span(s, window=window, handles=handles, abspath=abspath) for s in strips]
