"""The compatibility layer picks the right API name for Blender 4.2 .. 5.1.

Stand-in objects carry only the old or only the new names (this tests the name
choice, not Blender); the real bpy 5.0.1 strips check the choice on Blender itself.
"""

from __future__ import annotations

import types
from fractions import Fraction

import pytest

from fairy_plugin.blender import compat


class _Strip42:
    """A movie strip as Blender 4.2 .. 5.0 names its timing."""

    type = "MOVIE"
    frame_final_start = 12
    frame_final_end = 30
    frame_final_duration = 18
    frame_start = 10.0
    frame_offset_start = 2.0
    frame_offset_end = 4.0
    frame_duration = 24


class _Strip51:
    """A movie strip with only the 5.1 names."""

    type = "MOVIE"
    left_handle = 12
    right_handle = 30
    duration = 18
    content_start = 10.0
    left_handle_offset = 2.0
    right_handle_offset = 4.0
    frame_duration = 24


@pytest.mark.parametrize("strip", [_Strip42(), _Strip51()], ids=["4.2-5.0 names", "5.1 names"])
def test_timing_reads_whichever_names_the_strip_has(strip):
    assert compat.left_handle(strip) == 12
    assert compat.right_handle(strip) == 30
    assert compat.duration(strip) == 18
    assert compat.content_start(strip) == 10.0
    assert compat.left_handle_offset(strip) == 2
    assert compat.right_handle_offset(strip) == 4
    assert compat.content_duration(strip) == 24
    assert compat.is_movie(strip)


def test_new_names_win_when_both_exist():
    # 5.1 keeps the old names as deprecated aliases; the new ones must be used.
    strip = types.SimpleNamespace(left_handle=5, frame_final_start=99)
    assert compat.left_handle(strip) == 5


@pytest.mark.parametrize("cls,old", [(_Strip42, True), (_Strip51, False)])
def test_set_handle_offsets_writes_the_existing_names_end_first(cls, old):
    writes = []

    class Recording(cls):
        def __setattr__(self, name, value):
            writes.append(name)
            object.__setattr__(self, name, value)

    strip = Recording()
    compat.set_handle_offsets(strip, 3, 5)
    expected = (["frame_offset_end", "frame_offset_start"] if old
                else ["right_handle_offset", "left_handle_offset"])
    assert writes == expected
    assert (compat.left_handle_offset(strip), compat.right_handle_offset(strip)) == (3, 5)


def test_missing_names_fail_with_the_names_tried():
    with pytest.raises(AttributeError, match="left_handle, frame_final_start"):
        compat.left_handle(types.SimpleNamespace())


def test_editor_collections_before_and_after_4_4():
    old = types.SimpleNamespace(sequences=["top"], sequences_all=["all"], meta_stack=[])
    new = types.SimpleNamespace(strips=["top"], strips_all=["all"], meta_stack=[])
    for editor in (old, new):
        assert compat.top_level_strips(editor) == ["top"]
        assert compat.all_strips(editor) == ["all"]
        assert compat.display_strips(editor) == ["top"]


def test_display_strips_follow_the_open_meta_strip():
    meta_old = types.SimpleNamespace(sequences=["inside"])
    meta_new = types.SimpleNamespace(strips=["inside"])
    for meta in (meta_old, meta_new):
        editor = types.SimpleNamespace(strips=["top"], meta_stack=[meta])
        assert compat.display_strips(editor) == ["inside"]


def test_context_names_before_4_4_after_4_4_and_5_0():
    scene = object()
    ctx42 = types.SimpleNamespace(scene=scene, active_sequence_strip="a", selected_sequences=["s"])
    ctx44 = types.SimpleNamespace(scene=scene, active_strip="a", selected_strips=["s"])
    other = object()
    ctx50 = types.SimpleNamespace(scene=scene, sequencer_scene=other, active_strip="a", selected_strips=None)
    assert compat.sequencer_scene(ctx42) is scene
    assert compat.sequencer_scene(ctx44) is scene
    assert compat.sequencer_scene(ctx50) is other
    # 5.0 without a sequencer scene set falls back to the window's scene.
    assert compat.sequencer_scene(types.SimpleNamespace(scene=scene, sequencer_scene=None)) is scene
    for ctx in (ctx42, ctx44):
        assert compat.active_strip(ctx) == "a"
        assert compat.selected_strips(ctx) == ["s"]
    assert compat.selected_strips(ctx50) == []


# --- the same choices on real Blender (bpy 5.0.1) ---------------------------------------


@pytest.fixture(scope="module")
def bpy_editor(tmp_path_factory):
    import bpy  # a test dependency (pyproject [test])

    from fairy.video import make_test_clip

    clip = make_test_clip(tmp_path_factory.mktemp("compat") / "clip.mp4", frames=12, fps=Fraction(24),
                          audio=False, pattern="index")
    scene = bpy.data.scenes.new("compat")
    editor = scene.sequence_editor_create()
    yield bpy, scene, editor, str(clip)
    bpy.data.scenes.remove(scene)


def test_real_bpy_strip_timing_matches_blender(bpy_editor):
    bpy, scene, editor, clip = bpy_editor
    strip = compat.top_level_strips(editor).new_movie(name="shot", filepath=clip, channel=2, frame_start=10)
    assert type(strip).__name__ == "MovieStrip"  # 4.4+ class name
    assert compat.is_movie(strip)
    assert (compat.left_handle(strip), compat.right_handle(strip), compat.duration(strip)) == (10, 22, 12)
    compat.set_handle_offsets(strip, 2, 3)
    assert (compat.left_handle(strip), compat.right_handle(strip), compat.duration(strip)) == (12, 19, 7)
    assert (compat.left_handle_offset(strip), compat.right_handle_offset(strip)) == (2, 3)
    assert compat.content_start(strip) == 10.0 and compat.content_duration(strip) == 12
    # The values agree with whatever names this bpy has.
    assert compat.left_handle(strip) == getattr(strip, "left_handle", getattr(strip, "frame_final_start", None))
    assert strip in list(compat.all_strips(editor))
    assert strip in list(compat.display_strips(editor))


def test_real_bpy_short_strip_trims_in_either_direction(bpy_editor):
    # Trimming order matters in Blender: a 12-frame strip cut to its last frames must not clamp.
    bpy, scene, editor, clip = bpy_editor
    strip = compat.top_level_strips(editor).new_movie(name="short", filepath=clip, channel=5, frame_start=1)
    compat.set_handle_offsets(strip, 10, 1)
    assert (compat.left_handle(strip), compat.right_handle(strip)) == (11, 12)
    compat.set_handle_offsets(strip, 0, 11)
    assert (compat.left_handle(strip), compat.right_handle(strip)) == (1, 2)


def test_real_bpy_context_names(bpy_editor):
    bpy, *_ = bpy_editor
    assert compat.sequencer_scene(bpy.context) is not None
    assert isinstance(compat.selected_strips(bpy.context), list)
