"""The Blender extension end to end: real Blender (bpy 5.0.1), the session's real ``fairy-server`` (tiny
model, CPU, one worker; tests/conftest.py ``fairy_server``).

The extension is enabled the way Blender enables add-ons (addon_utils), the
operators run through bpy.ops exactly as the strip menu calls them (the dialog
only fills their properties), and the timer callback Blender would call is
called by the test (bpy as a module has no event loop to fire timers). A job that must still be running
when the test acts asks the server to hold it in FRAMES (``live.HOLD``).
"""

from __future__ import annotations

import pathlib
import re
import time
from fractions import Fraction

import av
import bpy
import pytest
from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.settings import REQUEST_SETTINGS

import addon_utils  # Blender's own module; importable once bpy is

from fairy.video import make_test_clip
from fairy_plugin.blender import compat, ui
from real_server import closed_port

PACKAGE = "fairy_plugin.blender"
# Small and fast: the tiny random-weight model on 96x64 clips.
# The dialog sends a setting only when its use_ toggle is on; otherwise the server's default applies.
FAST = dict(use_steps=True, steps=2, use_anchors=True, anchors=2, use_long_side=True, long_side=64)


@pytest.fixture(scope="module")
def media(fairy_server):
    """Two clips in the session server's media root."""
    folder = fairy_server.media_root / "blender"
    folder.mkdir(exist_ok=True)
    return {
        "a": str(make_test_clip(folder / "a.mp4", frames=12, fps=Fraction(24), audio=False, pattern="index")),
        "b": str(make_test_clip(folder / "b.mp4", frames=12, fps=Fraction(30000, 1001), audio=False,
                                pattern="index")),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """The extension's user folder for this run (run from source it would be a shared temp folder)."""
    return tmp_path_factory.mktemp("extension-user")


def enable_extension(server, user_dir):
    addon_utils.enable(PACKAGE, default_set=True, handle_error=None)
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    prefs.address = server
    ui.board().work_dir = user_dir
    return prefs


@pytest.fixture(scope="module")
def extension(fairy_server, user_dir):
    yield enable_extension(fairy_server.address, user_dir)
    addon_utils.disable(PACKAGE)


@pytest.fixture
def scene(extension, live):
    """A scene of its own, current; the server's worker free before and after (``live``)."""
    scene = bpy.data.scenes.new("fairy-test")
    scene.render.fps = 24
    scene.sequence_editor_create()
    previous = bpy.context.window.scene.name
    bpy.context.window.scene = scene
    yield scene
    ui.board().cancel_all()
    pump(lambda: not ui.board().busy)
    ui.board().clear_finished()
    # Undo replaces Blender's data, so nothing from before the test is reused here.
    bpy.context.window.scene = bpy.data.scenes.get(previous) or bpy.data.scenes[0]
    if "fairy-test" in bpy.data.scenes:
        bpy.data.scenes.remove(bpy.data.scenes["fairy-test"])


def pump(until, timeout: float = 180.0) -> None:
    """Call the extension's timer the way Blender's event loop would, until ``until()``."""
    deadline = time.monotonic() + timeout
    while True:
        ui.timer_tick()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the Fairy jobs")
        time.sleep(0.1)


def add_movie(scene, path, *, name, channel, frame_start, offsets=(0, 0)):
    strip = compat.top_level_strips(scene.sequence_editor).new_movie(
        name=name, filepath=path, channel=channel, frame_start=frame_start)
    compat.set_handle_offsets(strip, *offsets)
    strip.select = False
    return strip


def snapshot(strip) -> dict:
    return {name: getattr(strip, name) for name in (
        "name", "channel", "frame_start", "frame_final_start", "frame_final_end", "frame_offset_start",
        "frame_offset_end", "filepath", "mute", "select")} | {"keys": sorted(strip.keys())}


def frame_count(path: str) -> tuple[int, Fraction]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), Fraction(stream.average_rate)


def strips_named(scene) -> dict:
    return {s.name: s for s in compat.all_strips(scene.sequence_editor)}


# --- registration ----------------------------------------------------------------


def test_enabling_registers_menus_panel_timer_and_preferences(extension):
    assert ui.draw_strip_menu in bpy.types.SEQUENCER_MT_context_menu._dyn_ui_initialize()
    assert ui.draw_strip_menu in bpy.types.SEQUENCER_MT_strip._dyn_ui_initialize()
    assert ui.draw_status in bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()
    assert hasattr(bpy.types, "SEQUENCER_PT_fairy_jobs")
    assert bpy.types.SEQUENCER_PT_fairy_jobs.bl_category == "Fairy"
    assert bpy.app.timers.is_registered(ui.timer_tick)
    assert extension.address.startswith("127.0.0.1:")
    assert bpy.ops.fairy.edit_strips.get_rna_type().name == "Fairy Edit\u2026"
    assert bpy.ops.fairy.edit_range.get_rna_type().name == "Fairy Edit Range"


class _Recorder:
    """Records UI layout calls (a stand-in for bpy's UILayout, which only exists while Blender draws)."""

    def __init__(self, log, name="layout"):
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        def call(*args, **kwargs):
            self._log.append((attr, args, kwargs))
            return _Recorder(self._log, attr)
        return call

    def __setattr__(self, attr, value):
        self._log.append(("set " + attr, (value,), {}))


def test_strip_menu_offers_both_entries(extension):
    log = []
    ui.draw_strip_menu(type("Menu", (), {"layout": _Recorder(log)})(), bpy.context)
    entries = [(args[0], kwargs["text"]) for name, args, kwargs in log if name == "operator"]
    assert entries == [("fairy.edit_strips", "Fairy Edit\u2026"), ("fairy.edit_range", "Fairy Edit Range")]


# --- editing strips ---------------------------------------------------------------


def test_edit_selected_strip_adds_the_result_above_with_one_undo_step(scene, media):
    source = add_movie(scene, media["a"], name="shot", channel=2, frame_start=10, offsets=(1, 2))
    add_movie(scene, media["b"], name="above", channel=3, frame_start=1)  # 3 is busy over frames 1..12
    source.select = True
    before = snapshot(source)
    bpy.ops.ed.undo_push(message="before Fairy")  # the step Blender has from the last user action

    assert bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="make it snowy", seed=3, handles=1,
                                     **FAST) == {"FINISHED"}
    [record] = ui.board().records.values()
    assert not record.final
    fraction, left, total = ui.board().overall()
    assert (left, total) == (1, 1)
    pump(lambda: record.final)

    assert record.state == "DONE", record.message
    result = strips_named(scene)["make it snowy"]
    assert result.channel == 4  # the first channel above 2 that is free over frames 11..19
    assert (compat.left_handle(result), compat.right_handle(result)) == (11, 20)
    assert compat.duration(result) == 9
    # Rendered with one handle each side: the file holds frames 0..10 of the source's 12.
    assert (compat.left_handle_offset(result), compat.right_handle_offset(result)) == (1, 1)
    assert result.filepath == record.result_path
    assert frame_count(record.result_path) == (11, Fraction(24))
    meta = result["fairy"].to_dict()
    assert meta["instruction"] == "make it snowy" and meta["seed"] == 3
    assert meta["job_id"] == record.job_id and meta["source"]["name"] == "shot"
    assert meta["model"] == "builtin:tiny" and (meta["source"]["start_frame"], meta["source"]["frame_count"]) == (1, 9)
    assert snapshot(strips_named(scene)["shot"]) == before, "the source strip must not change"
    # Anchor previews arrived, were written as JPEGs and loaded as icons for the panel.
    assert len(record.preview_paths) == 2
    for i, path in enumerate(record.preview_paths):
        assert pathlib.Path(path).read_bytes()[:2] == b"\xff\xd8"
        assert f"{record.job_id}-{i}" in ui._icons
    assert ui.board().overall() == (1.0, 0, 1)

    assert ui.result_strip_present(record)
    bpy.ops.ed.undo()
    scene = bpy.data.scenes["fairy-test"]  # undo replaces Blender's data: look everything up again
    assert "make it snowy" not in strips_named(scene)
    assert snapshot(strips_named(scene)["shot"]) == before
    assert not ui.result_strip_present(record)  # the panel now offers "Add to Timeline" again


def test_edit_range_edits_each_strip_in_the_preview_range(scene, media):
    add_movie(scene, media["a"], name="first", channel=1, frame_start=1)     # frames 1..12
    add_movie(scene, media["b"], name="second", channel=2, frame_start=13)   # frames 13..24
    add_movie(scene, media["a"], name="outside", channel=1, frame_start=40)  # frames 40..51
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 9, 16
    bpy.ops.ed.undo_push(message="before Fairy")

    assert bpy.ops.fairy.edit_range("EXEC_DEFAULT", instruction="pencil sketch", **FAST) == {"FINISHED"}
    records = list(ui.board().records.values())
    assert sorted(r.span.strip_name for r in records) == ["first", "second"]
    pump(lambda: all(r.final for r in records))
    assert [r.state for r in records] == ["DONE", "DONE"], [r.message for r in records]

    results = {r.span.strip_name: strips_named(scene)[r.result_strip] for r in records}
    assert (results["first"].channel, compat.left_handle(results["first"]),
            compat.right_handle(results["first"])) == (2, 9, 13)
    assert (results["second"].channel, compat.left_handle(results["second"]),
            compat.right_handle(results["second"])) == (3, 13, 17)
    assert frame_count(results["second"].filepath) == (4, Fraction(30000, 1001))
    assert "outside" in strips_named(scene) and len(strips_named(scene)) == 5
    assert ui.board().overall() == (1.0, 0, 2)

    # One undo step per inserted result: each undo removes exactly one of them.
    names = {r.result_strip for r in records}
    bpy.ops.ed.undo()
    scene = bpy.data.scenes["fairy-test"]
    remaining = names & set(strips_named(scene))
    assert len(remaining) == 1, remaining
    bpy.ops.ed.undo()
    scene = bpy.data.scenes["fairy-test"]
    assert not names & set(strips_named(scene))
    assert {"first", "second", "outside"} <= set(strips_named(scene))


def test_cancel_stops_the_job_and_adds_nothing(scene, media, live):
    source = add_movie(scene, media["a"], name="shot", channel=1, frame_start=1)
    source.select = True
    # The server holds the job (in FRAMES once it runs) until it is cancelled: it cannot finish first.
    assert bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction=f"slow one {live.HOLD}", **FAST) == {"FINISHED"}
    [record] = ui.board().records.values()
    assert bpy.ops.fairy.cancel_job(job_id=record.job_id) == {"FINISHED"}
    pump(lambda: record.final)
    assert record.state == "CANCELLED"
    assert record.result_strip == "" and not record.result_path
    assert set(strips_named(scene)) == {"shot"}
    on_server = live.job(record.job_id)
    assert on_server.state == fairy_pb2.JOB_STATE_CANCELLED and on_server.cancel_requested


def test_the_panel_and_status_bar_draw_jobs_with_progress_and_cancel(scene, media, live):
    source = add_movie(scene, media["a"], name="shot", channel=1, frame_start=1)
    source.select = True
    # Held by the server until cancelled (the scene fixture cancels it): still running while drawn.
    bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction=f"slow one {live.HOLD}", **FAST)
    [record] = ui.board().records.values()
    log = []
    ui.SEQUENCER_PT_fairy_jobs.draw(type("Panel", (), {"layout": _Recorder(log)})(), bpy.context)
    assert any(name == "progress" for name, *_ in log)
    assert ("set job_id", (record.job_id,), {}) in log  # the Cancel button targets this job
    log.clear()
    ui.draw_status(type("Header", (), {"layout": _Recorder(log)})(), bpy.context)
    [(name, args, kwargs)] = [entry for entry in log if entry[0] == "progress"]
    assert kwargs["text"] == "Fairy: 1 of 1 job left"


def test_the_dialog_says_what_will_be_edited(scene, media):
    add_movie(scene, media["a"], name="first", channel=1, frame_start=1)
    add_movie(scene, media["b"], name="second", channel=2, frame_start=13)
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 9, 16

    def labels(operator):
        log = []
        dialog = type("Dialog", (), {"handles": 0, "chosen_spans": operator.chosen_spans,
                                     "layout": _Recorder(log), **_dialog_values()})()
        ui._EditDialog.draw(dialog, bpy.context)
        return [kwargs["text"] for name, args, kwargs in log if name == "label"]

    assert labels(ui.FAIRY_OT_edit_range) == ["2 strips, 8 frames"]
    assert labels(ui.FAIRY_OT_edit_strips) == ["select one or more movie strips first"]  # nothing selected


def _dialog_values(**chosen) -> dict:
    """The dialog's properties as Blender initialises them (the settings table's defaults, toggles off)."""
    values = {}
    for s in REQUEST_SETTINGS:
        values[s.name] = next(v for v in (s.default, s.fallback, "") if v is not None)
        if s.server_default:
            values[f"use_{s.name}"] = False
    return values | chosen


def test_the_dialog_has_every_setting_and_sends_only_the_ticked_ones(extension):
    properties = ui._EditDialog.__annotations__  # what both edit operators register
    for s in REQUEST_SETTINGS:
        assert s.name in properties and (f"use_{s.name}" in properties) == s.server_default
        assert properties[s.name].keywords["description"].lower().startswith(s.help[:20].lower())
    assert properties["anchors"].keywords["min"] == 0  # per-frame editing is allowed here too

    from fairy_plugin.requests import EditParams

    dialog = type("Dialog", (), _dialog_values(instruction=" snow ", seed=4, steps=30, anchors=0, use_anchors=True,
                                               noise="per_frame", use_noise=True, handles=2))()
    options = ui._EditDialog.edit_options(dialog)
    # Steps were typed but not ticked: the server's default applies; the seed is always sent.
    assert options.params == EditParams("snow", seed=4, anchors=0, noise="per_frame")
    assert options.handles == 2
    log = []
    dialog.layout = _Recorder(log)
    dialog.chosen_spans = lambda scene: []
    ui._EditDialog.draw(dialog, bpy.context)
    drawn = [args[1] for name, args, kwargs in log if name == "prop"]
    assert [n for n in drawn if not n.startswith("use_")][2:] == [s.name for s in REQUEST_SETTINGS]


def test_bad_requests_are_refused_before_anything_is_sent(scene, media, extension):
    source = add_movie(scene, media["a"], name="shot", channel=1, frame_start=1)
    with pytest.raises(RuntimeError, match="select one or more movie strips first"):
        bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="x", **FAST)
    source.select = True
    with pytest.raises(RuntimeError, match="the instruction is empty"):
        bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="   ", **FAST)
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 100, 120
    with pytest.raises(RuntimeError, match="no movie strip overlaps frames 100-120"):
        bpy.ops.fairy.edit_range("EXEC_DEFAULT", instruction="x", **FAST)
    address = extension.address
    extension.address = "192.0.2.10:50151"  # not this computer
    try:
        assert bpy.app.online_access is False  # bpy as a module starts with online access off
        with pytest.raises(RuntimeError, match="online access is off"):
            bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="x", **FAST)
    finally:
        extension.address = address
    assert not ui.board().records


@pytest.mark.parametrize("address,allowed", [
    ("127.0.0.1:50151", True), ("localhost:50151", True), ("[::1]:50151", True), ("127.3.4.5:1", True),
    ("192.0.2.10:50151", False), ("render-box:50151", False), ("[2001:db8::1]:50151", False)])
def test_online_access_off_allows_only_this_computer(address, allowed):
    from fairy_plugin.blender.jobs import check_address_allowed
    from fairy_plugin.errors import PluginError

    check_address_allowed(address, online_access=True)  # on: anything goes
    if allowed:
        check_address_allowed(address, online_access=False)
    else:
        with pytest.raises(PluginError, match=f"not {re.escape(address)}$"):
            check_address_allowed(address, online_access=False)


def test_a_server_that_is_not_running_fails_the_job_with_a_clear_message(scene, media, tmp_path):
    from fairy_plugin.blender import jobs, strips
    from fairy_plugin.client import FairyClient
    from fairy_plugin.requests import EditParams

    board = jobs.JobBoard(tmp_path, make_client=lambda address, token: FairyClient(address, connect_timeout=0.5))
    try:
        with closed_port() as dead:
            span = strips.strip_span(add_movie(scene, media["a"], name="shot", channel=1, frame_start=1))
            [record] = board.submit(scene.name, [span], jobs.EditOptions(EditParams("x")), address=dead)
            deadline = time.monotonic() + 60
            while not record.final and time.monotonic() < deadline:
                board.tick(bpy.data.scenes)
                time.sleep(0.1)
        assert record.state == "FAILED"
        assert record.message == f"Fairy server is not running at {dead} (start it with `fairy-server`)"
        assert set(strips_named(scene)) == {"shot"}
    finally:
        board.close()


def test_check_connection_shows_the_server_version_and_devices(extension):
    assert bpy.ops.fairy.check_connection() == {"FINISHED"}
    ui._connection["thread"].join(timeout=30)
    assert ui.connection_status().startswith("Connected: Fairy server ")
    assert "cpu" in ui.connection_status()


def test_opening_another_file_keeps_running_jobs_out_of_it(scene, media):
    # Last in this module: it replaces Blender's whole data, as File > Open does.
    source = add_movie(scene, media["a"], name="shot", channel=1, frame_start=1)
    source.select = True
    bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="make it snowy", **FAST)
    [record] = ui.board().records.values()
    bpy.ops.wm.read_homefile(use_empty=True)  # Blender calls the extension's load_pre handler
    other = bpy.data.scenes.new("fairy-test")  # the same scene name in the other file
    other.sequence_editor_create()
    pump(lambda: record.final)
    assert record.state == "DONE", record.message
    assert record.message == f"its .blend file was closed; the result is at {record.result_path}"
    assert pathlib.Path(record.result_path).is_file()
    assert len(bpy.data.scenes["fairy-test"].sequence_editor.strips) == 0
    # Asked for explicitly, the result goes in (where the source strip was: channel 1, frames 1..12).
    assert bpy.ops.fairy.add_result(job_id=record.job_id) == {"FINISHED"}
    added = strips_named(bpy.data.scenes["fairy-test"])["make it snowy"]
    assert (added.channel, compat.left_handle(added), compat.right_handle(added)) == (2, 1, 13)
    assert ui.result_strip_present(record)


def test_reopening_the_file_adds_what_finished_while_it_was_closed(scene, media, tmp_path):
    blend = str(tmp_path / "edit.blend")
    source = add_movie(scene, media["a"], name="shot", channel=1, frame_start=1)
    source.select = True
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="make it snowy", **FAST)
    [record] = ui.board().records.values()
    bpy.ops.wm.read_homefile(use_empty=True)
    pump(lambda: record.final)
    assert record.state == "DONE" and record.detached and not record.result_strip, record.message
    bpy.ops.wm.open_mainfile(filepath=blend)  # Blender calls the extension's load_post handler
    added = strips_named(bpy.data.scenes["fairy-test"])["make it snowy"]
    assert (added.channel, compat.left_handle(added), compat.right_handle(added)) == (2, 1, 13)
    assert added["fairy"]["job_id"] == record.job_id
    assert ui.board().pending.for_file(blend) == {}


def test_jobs_survive_blender_quitting_and_land_when_the_file_is_opened_again(scene, media, tmp_path, live,
                                                                             user_dir):
    blend = str(tmp_path / "edit.blend")
    source = add_movie(scene, media["a"], name="shot", channel=3, frame_start=5)
    source.select = True
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.fairy.edit_strips("EXEC_DEFAULT", instruction="pencil sketch", **FAST)
    [job_id] = ui.board().records
    assert set(ui.board().pending.for_file(blend)) == {job_id}
    # Quit: the extension goes away (the server keeps the job), then a new session opens the file.
    addon_utils.disable(PACKAGE)
    bpy.ops.wm.read_homefile(use_empty=True)
    enable_extension(live.address, user_dir)
    assert not ui.board().records
    bpy.ops.wm.open_mainfile(filepath=blend)
    [record] = ui.board().records.values()
    assert record.job_id == job_id and record.span.strip_name == "shot"
    pump(lambda: record.final)
    assert record.state == "DONE", record.message
    added = strips_named(bpy.data.scenes["fairy-test"])[record.result_strip]
    assert (added.channel, compat.left_handle(added), compat.right_handle(added)) == (4, 5, 17)
    assert added["fairy"]["instruction"] == "pencil sketch"
    assert ui.board().pending.for_file(blend) == {}
