"""Blender API names that changed between 4.2 LTS and 5.x, chosen per object.

Every function asks the object it is given (``hasattr``), never the Blender
version: a name's presence is what matters, and this keeps the choice testable
with plain stand-in objects. The renames covered:

- 4.4: ``Sequence`` types became ``Strip``; ``SequenceEditor.strips`` /
  ``strips_all`` and ``context.active_strip`` / ``selected_strips`` were added.
- 5.0: ``SequenceEditor.sequences`` / ``sequences_all`` and
  ``context.sequences`` were removed; the sequencer edits the workspace's
  ``context.sequencer_scene`` (``context.scene`` before).
- 5.1: timing properties renamed (old names deprecated until 6.0):
  ``frame_final_start`` -> ``left_handle``, ``frame_final_end`` ->
  ``right_handle``, ``frame_final_duration`` -> ``duration``, ``frame_start`` ->
  ``content_start``, ``frame_offset_start/end`` ->
  ``left_handle_offset/right_handle_offset``.

No ``bpy`` import here: the module is importable (and tested) anywhere.
"""

from __future__ import annotations

__all__ = [
    "MOVIE",
    "sequencer_scene",
    "top_level_strips",
    "all_strips",
    "display_strips",
    "active_strip",
    "selected_strips",
    "left_handle",
    "right_handle",
    "duration",
    "content_start",
    "left_handle_offset",
    "right_handle_offset",
    "set_handle_offsets",
    "content_duration",
    "is_movie",
]

# ``strip.type`` of a movie strip, the same in every version.
MOVIE = "MOVIE"


def _first_attr(obj, names: tuple[str, ...]):
    """The value of the first of ``names`` that ``obj`` has (new names come first)."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(f"{type(obj).__name__} has none of {', '.join(names)}")


def _first_name(obj, names: tuple[str, ...]) -> str:
    for name in names:
        if hasattr(obj, name):
            return name
    raise AttributeError(f"{type(obj).__name__} has none of {', '.join(names)}")


# --- context and editor -----------------------------------------------------------


def sequencer_scene(context):
    """The scene the sequencer edits: ``context.sequencer_scene`` (5.0+) when set, else ``context.scene``."""
    scene = getattr(context, "sequencer_scene", None)
    return scene if scene is not None else context.scene


def top_level_strips(editor):
    """The editor's top-level strip collection (``strips`` 4.4+, ``sequences`` before); it has ``new_movie``."""
    return _first_attr(editor, ("strips", "sequences"))


def all_strips(editor):
    """Every strip, inside meta strips too (``strips_all`` 4.4+, ``sequences_all`` before)."""
    return _first_attr(editor, ("strips_all", "sequences_all"))


def display_strips(editor):
    """The strips of the level the user sees: the innermost open meta strip's, else the top level.

    This is what ``context.selected_strips`` is drawn from, computed from data so
    it also works without a sequencer area (timers, scripts, headless tests).
    """
    stack = list(getattr(editor, "meta_stack", ()) or ())
    if stack:
        return _first_attr(stack[-1], ("strips", "sequences"))
    return top_level_strips(editor)


def active_strip(context):
    """``context.active_strip`` (4.4+) or ``context.active_sequence_strip`` (before); may be None."""
    if hasattr(context, "active_strip"):
        return context.active_strip
    return getattr(context, "active_sequence_strip", None)


def selected_strips(context) -> list:
    """``context.selected_strips`` (4.4+) or ``context.selected_sequences`` (before); [] when absent."""
    for name in ("selected_strips", "selected_sequences"):
        if hasattr(context, name):
            return list(getattr(context, name) or [])
    return []


# --- strip timing (timeline frames) --------------------------------------------------


def left_handle(strip) -> int:
    """First timeline frame shown (``left_handle`` 5.1+, ``frame_final_start`` before)."""
    return int(_first_attr(strip, ("left_handle", "frame_final_start")))


def right_handle(strip) -> int:
    """One past the last timeline frame shown (``right_handle`` 5.1+, ``frame_final_end`` before)."""
    return int(_first_attr(strip, ("right_handle", "frame_final_end")))


def duration(strip) -> int:
    """Timeline frames shown (``duration`` 5.1+, ``frame_final_duration`` before)."""
    return int(_first_attr(strip, ("duration", "frame_final_duration")))


def content_start(strip) -> float:
    """Timeline frame of the content's first frame (``content_start`` 5.1+, ``frame_start`` before)."""
    return float(_first_attr(strip, ("content_start", "frame_start")))


def left_handle_offset(strip) -> int:
    """Content frames hidden at the start (``left_handle_offset`` 5.1+, ``frame_offset_start`` before)."""
    return int(round(_first_attr(strip, ("left_handle_offset", "frame_offset_start"))))


def right_handle_offset(strip) -> int:
    """Content frames hidden at the end (``right_handle_offset`` 5.1+, ``frame_offset_end`` before)."""
    return int(round(_first_attr(strip, ("right_handle_offset", "frame_offset_end"))))


def content_duration(strip) -> int:
    """Timeline frames of the whole content before trimming (``frame_duration``, unchanged so far)."""
    return int(strip.frame_duration)


def set_handle_offsets(strip, start: int, end: int) -> None:
    """Hide ``start`` content frames at the beginning and ``end`` at the end.

    The end is set first: Blender clamps each offset against the other side's
    current position, so setting them in this order keeps a short strip from
    being clamped before its end moves (see nle-notes: trimming is order-sensitive).
    """
    setattr(strip, _first_name(strip, ("right_handle_offset", "frame_offset_end")), end)
    setattr(strip, _first_name(strip, ("left_handle_offset", "frame_offset_start")), start)


def is_movie(strip) -> bool:
    return getattr(strip, "type", None) == MOVIE
