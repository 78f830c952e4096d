"""Strip -> media range and result placement, checked on real Blender (bpy 5.0.1).

The clips show their frame index as eight black/white bars (fairy.video's
"index" pattern), and Blender itself renders the timeline, so every assertion
about "which file frame shows at timeline frame t" is Blender's answer, not ours.
"""

from __future__ import annotations

import os
import types
from fractions import Fraction

import av
import bpy
import numpy as np
import pytest

from fairy.video import make_test_clip
from fairy_plugin.blender import compat, placement, strips
from fairy_plugin.errors import ClipError, SelectionError

W, H = 96, 64


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "24": str(make_test_clip(folder / "c24.mp4", frames=20, width=W, height=H, fps=Fraction(24),
                                 audio=False, pattern="index")),
        "2997": str(make_test_clip(folder / "c2997.mp4", frames=20, width=W, height=H,
                                   fps=Fraction(30000, 1001), audio=False, pattern="index")),
    }


@pytest.fixture
def scene():
    scene = bpy.data.scenes.new("strips-test")
    scene.render.fps, scene.render.fps_base = 30, 1.0  # not the clips' rate: must not matter
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = "Standard"  # bars stay exactly black/white
    scene.sequence_editor_create()
    yield scene
    bpy.data.scenes.remove(scene)


def shown_index(scene, frame: int, tmp_path) -> int:
    """The frame index Blender renders at timeline ``frame`` (top-most strip), read from the bars."""
    window = bpy.context.window
    previous = window.scene
    window.scene = scene
    try:
        scene.frame_set(frame)
        scene.render.filepath = str(tmp_path / "render.png")
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        window.scene = previous
    image = bpy.data.images.load(str(tmp_path / "render.png"), check_existing=False)
    try:
        pixels = np.array(image.pixels[:], dtype=np.float32).reshape(H, W, 4)
    finally:
        bpy.data.images.remove(image)
    bars = pixels[H // 2, [12 * k + 6 for k in range(8)], 0] > 0.5
    return int(sum(1 << k for k, on in enumerate(bars) if on))


def cut_clip(src: str, dst, start: int, count: int) -> str:
    """Frames [start, start+count) of ``src`` as a new clip at the same rate (what the server renders)."""
    with av.open(src) as inp:
        stream = inp.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(stream)][start:start + count]
    assert len(frames) == count
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode())
    return str(dst)


def add_movie(scene, clip, *, name="shot", channel=2, frame_start=10, offsets=(0, 0)):
    strip = compat.top_level_strips(scene.sequence_editor).new_movie(
        name=name, filepath=clip, channel=channel, frame_start=frame_start)
    compat.set_handle_offsets(strip, *offsets)
    return strip


def expected_index(span, frame):
    i = frame - span.timeline_start
    return span.media_start + (span.frame_count - 1 - i if span.reversed else i)


# --- strip -> media range -------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "trimmed", "animation offset", "reversed", "window"])
def test_span_matches_the_frames_blender_renders(scene, clips, tmp_path, case):
    strip = add_movie(scene, clips["24"], offsets=(0, 0) if case == "plain" else (3, 4))
    window = None
    if case == "animation offset":
        strip.animation_offset_start = 2  # the content starts at the file's frame 2
    if case == "reversed":
        strip.use_reverse_frames = True
    if case == "window":
        window = (15, 19)
    span = strips.strip_span(strip, window=window, handles=2)
    assert span.rate == Fraction(24)
    assert span.channel == 2 and span.strip_name == "shot"
    if case == "window":
        assert (span.timeline_start, span.timeline_end) == (15, 19)
    else:
        assert (span.timeline_start, span.timeline_end) == (compat.left_handle(strip), compat.right_handle(strip))
    for frame in (span.timeline_start, span.timeline_start + 1, span.timeline_end - 1):
        assert shown_index(scene, frame, tmp_path) == expected_index(span, frame), (case, frame)


def test_span_of_an_ntsc_clip_has_its_exact_rate_and_handles(scene, clips):
    strip = add_movie(scene, clips["2997"], offsets=(1, 2))
    span = strips.strip_span(strip, handles=5)
    assert span.rate == Fraction(30000, 1001)
    assert (span.media_start, span.frame_count) == (1, 17)
    # The file has 1 frame before the range and 2 after: handles are capped there.
    assert (span.handles_before, span.handles_after) == (1, 2)
    mr = strips.media_range(span)
    assert (mr.start_frame, mr.frame_count, mr.rate, mr.handles_before, mr.handles_after) == (
        1, 17, Fraction(30000, 1001), 1, 2)
    assert mr.media_path == clips["2997"]


def test_relative_paths_resolve_through_the_given_resolver(scene, clips):
    strip = add_movie(scene, clips["24"])
    span = strips.strip_span(strip, abspath=lambda p: bpy.path.abspath(p))
    assert span.media_path == clips["24"]
    # A saved .blend stores "//../clips/c24.mp4"; resolved, the ".." must be gone (the server refuses it).
    folder, name = os.path.split(clips["24"])
    span = strips.strip_span(strip, abspath=lambda p: os.path.join(folder, "sub", "..", name))
    assert span.media_path == clips["24"]


def test_strips_that_cannot_be_edited_are_refused_with_their_name(scene, clips, tmp_path):
    editor = scene.sequence_editor
    color = compat.top_level_strips(editor).new_effect(name="matte", type="COLOR", channel=1, frame_start=1,
                                                        length=10)
    with pytest.raises(ClipError, match="strip 'matte' is a color strip"):
        strips.strip_span(color)
    strip = add_movie(scene, clips["24"], name="moved")
    strip.filepath = str(tmp_path / "gone.mp4")
    with pytest.raises(ClipError, match="strip 'moved'"):
        strips.strip_span(strip)
    # RetimingKeys.add() crashes bpy 5.0.1 in module mode, so a stand-in carries the retiming key.
    retimed = types.SimpleNamespace(name="retimed", type="MOVIE", retiming_keys=[object()])
    with pytest.raises(ClipError, match="strip 'retimed' is retimed"):
        strips.strip_span(retimed)
    with pytest.raises(ClipError, match="does not overlap"):
        strips.strip_span(add_movie(scene, clips["24"], name="late", channel=5, frame_start=100), window=(1, 50))


# --- choosing strips ---------------------------------------------------------------


def test_selected_movie_strips_then_the_active_one(scene, clips):
    editor = scene.sequence_editor
    a = add_movie(scene, clips["24"], name="a", channel=1, frame_start=1)
    b = add_movie(scene, clips["24"], name="b", channel=1, frame_start=40)
    color = compat.top_level_strips(editor).new_effect(name="matte", type="COLOR", channel=3, frame_start=1,
                                                        length=10)
    for s in (a, b, color):
        s.select = False
    editor.active_strip = None
    with pytest.raises(SelectionError, match="select one or more movie strips"):
        strips.selected_movie_strips(editor)
    editor.active_strip = b
    assert [s.name for s in strips.selected_movie_strips(editor)] == ["b"]
    a.select = color.select = True
    assert [s.name for s in strips.selected_movie_strips(editor)] == ["a"]  # the selection wins; no color strip
    b.select = True
    assert [s.name for s in strips.selected_movie_strips(editor)] == ["a", "b"]
    editor.active_strip = color
    a.select = b.select = False
    with pytest.raises(SelectionError):
        strips.selected_movie_strips(editor)


def test_range_uses_the_preview_range_when_on(scene, clips):
    editor = scene.sequence_editor
    add_movie(scene, clips["24"], name="early", channel=1, frame_start=1)       # 1..20
    add_movie(scene, clips["24"], name="middle", channel=2, frame_start=25)     # 25..44
    add_movie(scene, clips["24"], name="late", channel=1, frame_start=60)       # 60..79
    muted = add_movie(scene, clips["24"], name="muted", channel=3, frame_start=25)
    muted.mute = True
    scene.frame_start, scene.frame_end = 1, 100
    assert strips.scene_frame_range(scene) == (1, 101)
    assert [s.name for s in strips.movie_strips_in_range(editor, strips.scene_frame_range(scene))] == [
        "early", "middle", "late"]
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 20, 59
    assert strips.scene_frame_range(scene) == (20, 60)
    chosen = strips.movie_strips_in_range(editor, strips.scene_frame_range(scene))
    assert [s.name for s in chosen] == ["early", "middle"]
    spans = strips.spans_for(chosen, window=strips.scene_frame_range(scene))
    assert [(s.timeline_start, s.timeline_end) for s in spans] == [(20, 21), (25, 45)]
    scene.frame_preview_start, scene.frame_preview_end = 200, 210
    with pytest.raises(SelectionError, match="no movie strip overlaps frames 200-210"):
        strips.movie_strips_in_range(editor, strips.scene_frame_range(scene))


# --- placing results ----------------------------------------------------------------


def _props(strip):
    return {name: getattr(strip, name) for name in (
        "name", "channel", "frame_start", "frame_final_start", "frame_final_end", "frame_offset_start",
        "frame_offset_end", "filepath", "mute", "use_reverse_frames", "animation_offset_start")} | {
        "keys": sorted(strip.keys())}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reversed"])
def test_result_with_handles_lines_up_frame_for_frame_above_the_source(scene, clips, tmp_path, reverse):
    editor = scene.sequence_editor
    source = add_movie(scene, clips["24"], channel=2, frame_start=10, offsets=(3, 4))
    source.use_reverse_frames = reverse
    blocker = add_movie(scene, clips["24"], name="blocker", channel=3, frame_start=20)  # channel 3 is taken there
    before = _props(source)
    span = strips.strip_span(source, handles=2)
    # What the server renders: the range plus the handles, in file order.
    result = cut_clip(clips["24"], tmp_path / "result.mp4", span.media_start - span.handles_before,
                      span.frame_count + span.handles_before + span.handles_after)
    meta = {"instruction": "make it snowy", "job_id": "j1", "seed": 7}
    inserted = placement.insert_result(editor, span, result, name=placement.strip_name_for("make  it\nsnowy"),
                                       metadata=meta, rendered_before=span.handles_before,
                                       rendered_after=span.handles_after)
    assert inserted.name == "make it snowy"
    assert inserted.channel == 4  # first free channel above 2: 3 is taken by `blocker` in these frames
    assert (compat.left_handle(inserted), compat.right_handle(inserted)) == (span.timeline_start, span.timeline_end)
    assert inserted.filepath == result
    assert inserted["fairy"].to_dict() == meta
    assert _props(source) == before, "the source strip must not change"
    assert blocker.channel == 3
    # Blender renders the result's frames exactly where the source showed the same frames.
    for frame in range(span.timeline_start, span.timeline_end, 3):
        assert shown_index(scene, frame, tmp_path) == expected_index(span, frame)


def test_result_goes_to_the_first_free_unlocked_channel(scene, clips, tmp_path):
    editor = scene.sequence_editor
    source = add_movie(scene, clips["24"], channel=1, frame_start=1)
    add_movie(scene, clips["24"], name="above", channel=2, frame_start=15)   # overlaps frames 15..20
    add_movie(scene, clips["24"], name="later", channel=3, frame_start=21)   # right after: no overlap
    editor.channels[3].lock = True
    span = strips.strip_span(source)
    result = cut_clip(clips["24"], tmp_path / "r.mp4", 0, 20)
    inserted = placement.insert_result(editor, span, result, name="x", metadata={})
    assert inserted.channel == 4
    editor.channels[3].lock = False
    second = placement.insert_result(editor, span, result, name="y", metadata={})
    assert second.channel == 3  # now unlocked, and "later" starts where this ends


def test_result_of_the_wrong_length_is_refused_and_leaves_nothing(scene, clips, tmp_path):
    editor = scene.sequence_editor
    source = add_movie(scene, clips["24"], channel=1, frame_start=1)
    span = strips.strip_span(source)
    short = cut_clip(clips["24"], tmp_path / "short.mp4", 0, 19)
    names = {s.name for s in compat.all_strips(editor)}
    with pytest.raises(ClipError, match="has 19 frames, expected 20; it was not added"):
        placement.insert_result(editor, span, short, name="bad", metadata={})
    assert {s.name for s in compat.all_strips(editor)} == names


def test_no_free_channel_above_the_top_one(scene, clips, tmp_path):
    editor = scene.sequence_editor
    source = add_movie(scene, clips["24"], channel=128, frame_start=1)
    span = strips.strip_span(source)
    with pytest.raises(ClipError, match="no free channel above channel 128"):
        placement.insert_result(editor, span, clips["24"], name="x", metadata={})
    assert len(compat.all_strips(editor)) == 1


def test_result_inside_a_meta_strip_stays_in_it(scene, clips, tmp_path):
    editor = scene.sequence_editor
    meta = compat.top_level_strips(editor).new_meta(name="group", channel=1, frame_start=1)
    inner = compat.top_level_strips(meta).new_movie(name="inner", filepath=clips["24"], channel=1, frame_start=1)
    span = strips.strip_span(inner)
    result = cut_clip(clips["24"], tmp_path / "r.mp4", 0, 20)
    inserted = placement.insert_result(editor, span, result, name="edited", metadata={})
    assert inserted.parent_meta() == meta
    assert inserted.channel == 2
