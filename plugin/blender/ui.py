"""Blender's side: operators, menus, the sidebar panel, the status bar, preferences and the timer.

Thin wrappers: what an operator does lives in strips.py (which frames),
jobs.py (the jobs and the timer's work) and placement.py (the new strips).
"""

# No `from __future__ import annotations` here: Blender reads the operators' property
# annotations as objects, and older versions do not evaluate string annotations.
import pathlib
import tempfile
import threading
import traceback

import bpy
import bpy.utils.previews
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from fairy_plugin.client import DEFAULT_ADDRESS, FairyClient, format_server_info
from fairy_plugin.errors import PluginError
from fairy_plugin.requests import EditParams
from fairy_proto.v1.settings import REQUEST_SETTINGS

from . import compat, strips
from .jobs import EditOptions, JobBoard, check_address_allowed

# Where the timer looks for work: often while jobs run, rarely when idle.
_BUSY_INTERVAL = 0.25
_IDLE_INTERVAL = 1.0

_board: JobBoard | None = None
_icons = None            # bpy.utils.previews collection holding anchor previews
_connection = {"text": "", "thread": None}


def board() -> JobBoard:
    """The session's job board (created by register())."""
    if _board is None:
        raise PluginError("the Fairy extension is not enabled")
    return _board


def _user_dir() -> pathlib.Path:
    """The extension's user folder (Blender keeps it across updates); a temp folder when run from source."""
    try:
        return pathlib.Path(bpy.utils.extension_path_user(__package__, create=True))
    except ValueError:  # not installed as an extension (e.g. imported as fairy_plugin.blender)
        path = pathlib.Path(tempfile.gettempdir()) / "fairy_edit"
        path.mkdir(parents=True, exist_ok=True)
        return path


def preferences(context):
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def server_settings(context) -> tuple[str, str]:
    prefs = preferences(context)
    if prefs is None:
        return DEFAULT_ADDRESS, ""
    return prefs.address.strip() or DEFAULT_ADDRESS, prefs.token.strip()


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"SEQUENCE_EDITOR", "STATUSBAR", "PREFERENCES"}:
                area.tag_redraw()


def _undo_push(message: str) -> None:
    """One undo step per inserted result; skipped where Blender has no undo (e.g. some background runs)."""
    try:
        if bpy.ops.ed.undo_push.poll():
            bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        traceback.print_exc()


def _load_previews(records) -> None:
    if _icons is None:
        return
    for record in records:
        for i, path in enumerate(record.preview_paths):
            key = f"{record.job_id}-{i}"
            if key not in _icons:
                _icons.load(key, path, "IMAGE")


@bpy.app.handlers.persistent
def on_load_pre(*_args):
    """Blender is about to open another file: results of running jobs must not land in it."""
    if _board is not None:
        _board.detach_all()


@bpy.app.handlers.persistent
def on_load_post(*_args):
    """A file was opened: follow the jobs it asked for before it was closed (or Blender quit)."""
    if _board is None or not bpy.data.filepath:
        return
    address, token = server_settings(bpy.context)
    try:
        if _board.reattach(bpy.data.filepath, bpy.data.scenes, address=address, token=token,
                           online_access=bpy.app.online_access, undo_push=_undo_push):
            _redraw()
    except PluginError as exc:
        print(f"Fairy: {exc}")


def timer_tick():
    """The main-thread timer: apply what the job threads reported. Never raises (that would stop the timer)."""
    if _board is None:
        return None  # unregistered: stop
    try:
        changed = _board.tick(bpy.data.scenes, undo_push=_undo_push)
        if changed:
            _load_previews(changed)
            _redraw()
    except Exception:  # a bug must not kill the timer and freeze every later job
        traceback.print_exc()
    return _BUSY_INTERVAL if _board.busy else _IDLE_INTERVAL


# --- the edit dialog's settings ------------------------------------------------------

# Blender's integer properties hold 32 bits: a larger seed is typed through fairy timeline instead.
_BLENDER_INT_MAX = 2**31 - 1
DIALOG_SETTINGS = tuple(REQUEST_SETTINGS)


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def setting_properties() -> dict:
    """Blender properties for every setting of the table: the table's default, range and help."""
    properties = {}
    for s in DIALOG_SETTINGS:
        label, help_text = _label(s.name), s.help[:1].upper() + s.help[1:]
        if s.choices:
            items = [(choice, choice.replace("_", " "), "") for choice in s.choices]
            prop = EnumProperty(name=label, items=items, default=s.default, description=help_text)
        elif s.type is str:
            prop = StringProperty(name=label, default=s.default or "", description=f"{help_text} (empty: {s.default_text})")
        elif s.type is int:
            # A setting the model chooses starts at what a model that says nothing gets (sent only when ticked).
            default = s.default if s.default is not None else s.fallback
            prop = IntProperty(name=label, default=default, min=int(s.minimum), max=min(int(s.maximum), _BLENDER_INT_MAX),
                               description=help_text, subtype="PIXEL" if s.name == "long_side" else "NONE")
        else:
            default = s.default if s.default is not None else s.fallback
            prop = FloatProperty(name=label, default=default, min=s.minimum, max=s.maximum, description=help_text)
        properties[s.name] = prop
        if s.server_default:
            properties[f"use_{s.name}"] = BoolProperty(
                name=f"Set {label.lower()}", default=False,
                description=f"Send this {label.lower()}; off: the server's default"
                            + (f" ({s.default})" if s.default is not None else f" ({s.default_text})"))
    return properties


def dialog_settings(operator) -> dict:
    """The settings the dialog sends: the table's names, only those ticked (and the seed, always)."""
    values = {}
    for s in DIALOG_SETTINGS:
        if s.server_default and not getattr(operator, f"use_{s.name}"):
            continue
        value = getattr(operator, s.name)
        if s.type is str and not s.choices and not value.strip():
            continue  # an empty model: the server's
        values[s.name] = value.strip() if isinstance(value, str) and not s.choices else value
    return values


# --- operators ----------------------------------------------------------------------


class _EditDialog:
    """The dialog both edit operators share."""

    bl_options = {"REGISTER"}

    # One property per setting of the settings table, under its name; a setting the server has a default for
    # also gets a use_NAME toggle, and is sent only when that is on (off: the server's default applies).
    __annotations__ = {
        "instruction": StringProperty(name="Instruction", description="What the edit should do, e.g. \"make it snowy\""),
        **setting_properties(),
        "handles": IntProperty(name="Handles", default=0, min=0, max=240,
                               description="Extra frames rendered before and after, where the movie has them"),
    }

    @classmethod
    def poll(cls, context):
        scene = compat.sequencer_scene(context)
        return scene is not None and scene.sequence_editor is not None

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self, width=420)

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "instruction", text="")
        layout.prop(self, "handles")
        column = layout.column(heading="Settings (unticked: the server's default)")
        for s in DIALOG_SETTINGS:
            row = column.row(align=True)
            if s.server_default:
                row.prop(self, f"use_{s.name}", text="")
                row.active = getattr(self, f"use_{s.name}")
            row.prop(self, s.name)
        try:
            spans = self.chosen_spans(compat.sequencer_scene(context))
            frames = sum(span.frame_count for span in spans)
            layout.label(text=f"{len(spans)} strip{'s' if len(spans) != 1 else ''}, {frames} frames", icon="INFO")
        except PluginError as exc:  # shown now, refused again by execute
            layout.label(text=str(exc), icon="ERROR")

    def edit_options(self) -> EditOptions:
        return EditOptions(params=EditParams(self.instruction.strip(), **dialog_settings(self)), handles=self.handles)

    def chosen_spans(self, scene):
        raise NotImplementedError

    def execute(self, context):
        scene = compat.sequencer_scene(context)
        address, token = server_settings(context)
        try:
            options = self.edit_options()
            options.params.check()
            spans = self.chosen_spans(scene)
            records = board().submit(scene.name, spans, options, address=address, token=token,
                                     online_access=bpy.app.online_access, blend_file=bpy.data.filepath)
        except PluginError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Fairy: {len(records)} job{'s' if len(records) != 1 else ''} queued")
        _redraw()
        return {"FINISHED"}


class FAIRY_OT_edit_strips(_EditDialog, bpy.types.Operator):
    """Edit the selected movie strips (or the active one) with an instruction"""

    bl_idname = "fairy.edit_strips"
    bl_label = "Fairy Edit\u2026"

    def chosen_spans(self, scene):
        chosen = strips.selected_movie_strips(scene.sequence_editor)
        return strips.spans_for(chosen, handles=self.handles, abspath=bpy.path.abspath)


class FAIRY_OT_edit_range(_EditDialog, bpy.types.Operator):
    """Edit every movie strip in the preview range (or the scene's frame range)"""

    bl_idname = "fairy.edit_range"
    bl_label = "Fairy Edit Range"

    def chosen_spans(self, scene):
        window = strips.scene_frame_range(scene)
        chosen = strips.movie_strips_in_range(scene.sequence_editor, window)
        return strips.spans_for(chosen, window=window, handles=self.handles, abspath=bpy.path.abspath)


class FAIRY_OT_cancel_job(bpy.types.Operator):
    """Cancel this Fairy job on the server"""

    bl_idname = "fairy.cancel_job"
    bl_label = "Cancel Fairy Job"
    bl_options = {"INTERNAL"}

    job_id: StringProperty()

    def execute(self, context):
        try:
            board().cancel(self.job_id)
        except PluginError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class FAIRY_OT_add_result(bpy.types.Operator):
    """Add this job's edited clip to the timeline above its source strip"""

    bl_idname = "fairy.add_result"
    bl_label = "Add to Timeline"
    bl_options = {"INTERNAL"}

    job_id: StringProperty()

    def execute(self, context):
        try:
            board().insert_again(self.job_id, bpy.data.scenes, undo_push=_undo_push)
        except PluginError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _redraw()
        return {"FINISHED"}


def result_strip_present(record) -> bool:
    """Whether the job's inserted strip is still there (undo removes it)."""
    scene = bpy.data.scenes.get(record.scene)
    if not record.result_strip or scene is None:
        return False
    return strips.find_strip(scene.sequence_editor, record.result_strip) is not None


class FAIRY_OT_clear_jobs(bpy.types.Operator):
    """Remove finished jobs from the list (their strips stay)"""

    bl_idname = "fairy.clear_jobs"
    bl_label = "Clear Finished"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        board().clear_finished()
        _redraw()
        return {"FINISHED"}


def describe_server(address: str, token: str, *, timeout: float = 3.0) -> str:
    """One line about the server at ``address``: version and devices, or why it cannot be reached."""
    try:
        check_address_allowed(address, bpy.app.online_access)
        with FairyClient(address, token=token or None, connect_timeout=timeout) as client:
            return "Connected: " + format_server_info(client.server_info())
    except PluginError as exc:
        return str(exc)


def connection_status() -> str:
    return _connection["text"]


def _connection_done():
    thread = _connection["thread"]
    if thread is not None and thread.is_alive():
        return 0.2
    _redraw()
    return None


class FAIRY_OT_check_connection(bpy.types.Operator):
    """Ask the Fairy server for its version and devices"""

    bl_idname = "fairy.check_connection"
    bl_label = "Check Connection"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        address, token = server_settings(context)
        _connection["text"] = f"Connecting to {address}\u2026"

        def check():  # off the main thread: an unreachable server takes seconds to give up on
            _connection["text"] = describe_server(address, token)

        thread = threading.Thread(target=check, name="fairy-check-connection", daemon=True)
        _connection["thread"] = thread
        thread.start()
        bpy.app.timers.register(_connection_done, first_interval=0.2)
        return {"FINISHED"}


# --- preferences, panel, menus, status bar --------------------------------------------


class FairyPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    address: StringProperty(name="Server", default=DEFAULT_ADDRESS,
                            description="HOST:PORT of the Fairy server (start one with `fairy-server`)")
    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="Bearer token, when the server asks for one")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "address")
        layout.prop(self, "token")
        row = layout.row()
        row.operator(FAIRY_OT_check_connection.bl_idname, icon="URL")
        if connection_status():
            row.label(text=connection_status())


def _progress(layout, fraction: float, text: str) -> None:
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=fraction, type="BAR", text=text)
    else:
        layout.label(text=text)


class SEQUENCER_PT_fairy_jobs(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Fairy"
    bl_label = "Fairy Jobs"

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.operator(FAIRY_OT_edit_strips.bl_idname, text="Edit Selected\u2026")
        row.operator(FAIRY_OT_edit_range.bl_idname, text="Edit Range\u2026")
        if _board is None or not _board.records:
            layout.label(text="No jobs yet")
            return
        for record in reversed(list(_board.records.values())):
            box = layout.box()
            head = box.row()
            head.label(text=record.label, icon="SEQUENCE")
            if not record.final:
                head.operator(FAIRY_OT_cancel_job.bl_idname, text="", icon="X").job_id = record.job_id
            _progress(box, record.fraction, f"{record.state.replace('_', ' ').title()} {record.fraction:.0%}")
            if record.message:
                alert = box.row()
                alert.alert = record.state == "FAILED" or record.message.startswith("not added")
                alert.label(text=record.message)
            if result_strip_present(record):
                box.label(text=f"Added as '{record.result_strip}'", icon="CHECKMARK")
            elif record.state == "DONE" and record.result_path:
                box.operator(FAIRY_OT_add_result.bl_idname, icon="ADD").job_id = record.job_id
            if record.preview_paths and _icons is not None:
                grid = box.grid_flow(columns=min(4, len(record.preview_paths)), align=True)
                for i in range(len(record.preview_paths)):
                    key = f"{record.job_id}-{i}"
                    if key in _icons:
                        grid.template_icon(icon_value=_icons[key].icon_id, scale=3.0)
        layout.operator(FAIRY_OT_clear_jobs.bl_idname, icon="TRASH")


def draw_strip_menu(self, context):
    layout = self.layout
    layout.separator()
    layout.operator_context = "INVOKE_DEFAULT"
    layout.operator(FAIRY_OT_edit_strips.bl_idname, text="Fairy Edit\u2026")
    layout.operator(FAIRY_OT_edit_range.bl_idname, text="Fairy Edit Range")


def draw_status(self, context):
    if _board is None:
        return
    fraction, left, total = _board.overall()
    if left:
        _progress(self.layout, fraction, f"Fairy: {left} of {total} job{'s' if total != 1 else ''} left")


_CLASSES = (
    FairyPreferences,
    FAIRY_OT_edit_strips,
    FAIRY_OT_edit_range,
    FAIRY_OT_cancel_job,
    FAIRY_OT_add_result,
    FAIRY_OT_clear_jobs,
    FAIRY_OT_check_connection,
    SEQUENCER_PT_fairy_jobs,
)
_MENUS = ("SEQUENCER_MT_context_menu", "SEQUENCER_MT_strip")


def register() -> None:
    global _board, _icons
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    for name in _MENUS:
        getattr(bpy.types, name).append(draw_strip_menu)
    bpy.types.STATUSBAR_HT_header.append(draw_status)
    _icons = bpy.utils.previews.new()
    _board = JobBoard(_user_dir())
    bpy.app.timers.register(timer_tick, first_interval=_IDLE_INTERVAL, persistent=True)
    bpy.app.handlers.load_pre.append(on_load_pre)
    bpy.app.handlers.load_post.append(on_load_post)


def unregister() -> None:
    global _board, _icons
    if on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(on_load_pre)
    if on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load_post)
    if bpy.app.timers.is_registered(timer_tick):
        bpy.app.timers.unregister(timer_tick)
    if _board is not None:
        _board.close()  # the server keeps running the jobs
        _board = None
    if _icons is not None:
        bpy.utils.previews.remove(_icons)
        _icons = None
    bpy.types.STATUSBAR_HT_header.remove(draw_status)
    for name in _MENUS:
        getattr(bpy.types, name).remove(draw_strip_menu)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
