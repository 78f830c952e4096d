"""Fairy Edit for DaVinci Resolve: Workspace > Scripts > fairy_edit.

Install with `python -m fairy_plugin.resolve install-script` (or copy this file
into Fusion/Scripts/Edit and set FAIRY_PLUGIN_PATH below to the folder that
holds fairy_plugin). Edits the selected video clips, or the clip under the
playhead when none is selected, and puts each result on the first free track
above its clip, with a marker carrying the instruction.

Resolve scripts have no dialog API of their own here: the instruction is asked
with Tk when Resolve's Python has it, else read from $FAIRY_INSTRUCTION.
Settings come from the environment: FAIRY_SERVER, FAIRY_TOKEN, FAIRY_MEDIA_DIR,
FAIRY_HANDLES, FAIRY_AS_TAKE=1, and one variable per edit setting, named after it
(FAIRY_SEED, FAIRY_STEPS, FAIRY_ANCHORS, FAIRY_GUIDANCE_SCALE, FAIRY_NOISE...);
an unset one takes the server's default.
"""

import os
import sys

FAIRY_PLUGIN_PATH = ""  # filled in by install-script


def _ask_instruction():
    if os.environ.get("FAIRY_INSTRUCTION"):
        return os.environ["FAIRY_INSTRUCTION"]
    try:
        import tkinter
        from tkinter import simpledialog
    except ImportError:
        return None
    root = tkinter.Tk()
    root.withdraw()
    try:
        return simpledialog.askstring("Fairy Edit", "Instruction (e.g. make it snowy):", parent=root)
    finally:
        root.destroy()


def _resolve_object():
    found = globals().get("resolve")  # Resolve defines it for scripts it runs
    if found:
        return found
    bmd = globals().get("bmd")
    if bmd is not None:
        return bmd.scriptapp("Resolve")
    from fairy_plugin.resolve.cli import connect
    return connect()


def run():
    if FAIRY_PLUGIN_PATH and FAIRY_PLUGIN_PATH not in sys.path:
        sys.path.insert(0, FAIRY_PLUGIN_PATH)

    from fairy_plugin.client import DEFAULT_ADDRESS, FairyClient
    from fairy_plugin.errors import PluginError
    from fairy_plugin.requests import EditParams
    from fairy_plugin.resolve.cli import default_media_dir
    from fairy_plugin.resolve.edit import current_timeline, edit_timeline
    from fairy_proto.v1.settings import REQUEST_SETTINGS, SettingError, values_from_environment

    instruction = _ask_instruction()
    if not instruction or not instruction.strip():
        print("Fairy Edit: no instruction given; nothing done")
        return
    env = os.environ
    try:
        params = EditParams(instruction, **values_from_environment(env, [s.name for s in REQUEST_SETTINGS]))
    except SettingError as exc:
        print(f"Fairy Edit: {exc}")
        return
    try:
        resolve = _resolve_object()
        _, timeline = current_timeline(resolve)
        selected = [i for i in (timeline.GetSelectedClips() or []) if i.GetTrackTypeAndIndex()[0] == "video"]
        with FairyClient(env.get("FAIRY_SERVER", DEFAULT_ADDRESS), token=env.get("FAIRY_TOKEN")) as client:
            summary = edit_timeline(resolve, params, client=client, media_dir=default_media_dir(),
                                    mode="selected" if selected else "current",
                                    handles=int(env.get("FAIRY_HANDLES", "0")),
                                    as_take=env.get("FAIRY_AS_TAKE") == "1", stream=sys.stdout)
    except PluginError as exc:
        print(f"Fairy Edit: {exc}")
        return
    for line in summary.lines():
        print(f"Fairy Edit: {line}")


if __name__ == "__main__":
    run()
