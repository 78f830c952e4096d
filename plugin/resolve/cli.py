"""Run a Fairy edit on DaVinci Resolve's current timeline from outside Resolve
(Resolve Studio; external scripting allowed in Preferences > System > General),
or install the Workspace > Scripts entry.

    python -m fairy_plugin.resolve edit -i "make it snowy" [--current | --selected | --marks --track 2]
        [--take [--finalize-take]] [--server ADDR] [--token T] [--seed N --steps N --anchors N --noise per_frame ... --handles N]
    python -m fairy_plugin.resolve install-script      # copies fairy_edit.py into Fusion/Scripts/Edit
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
from typing import Any, TextIO

from fairy_proto.v1.settings import REQUEST_SETTINGS, add_arguments, values_from_arguments

from ..client import DEFAULT_ADDRESS, FairyClient
from ..errors import PluginError
from ..requests import EditParams
from .edit import edit_timeline

__all__ = ["main", "connect", "scripts_folder", "default_media_dir", "install_script"]

REQUEST_SETTING_NAMES = tuple(s.name for s in REQUEST_SETTINGS)

# Where Resolve looks for its scripting module when RESOLVE_SCRIPT_API is not set
# (the locations its README gives).
_SCRIPT_API = {
    "darwin": "/Library/Application Support/Blackmagic Design/DaVinci Resolve/Developer/Scripting",
    "win32": os.path.join(os.environ.get("PROGRAMDATA", r"C:\ProgramData"),
                          "Blackmagic Design", "DaVinci Resolve", "Support", "Developer", "Scripting"),
    "linux": "/opt/resolve/Developer/Scripting",
}


def connect() -> Any:
    """The ``resolve`` object of the running Resolve, via DaVinciResolveScript."""
    api = os.environ.get("RESOLVE_SCRIPT_API") or _SCRIPT_API.get(sys.platform, _SCRIPT_API["linux"])
    modules = os.path.join(api, "Modules")
    if os.path.isdir(modules) and modules not in sys.path:
        sys.path.append(modules)
    try:
        script_module = importlib.import_module("DaVinciResolveScript")
    except ImportError:
        raise PluginError("DaVinciResolveScript is not importable; set RESOLVE_SCRIPT_API and RESOLVE_SCRIPT_LIB "
                          "as Resolve's scripting README says (Help > Documentation > Developer)") from None
    resolve = script_module.scriptapp("Resolve")
    if not resolve:
        raise PluginError("DaVinci Resolve is not running, or external scripting is off "
                          "(Preferences > System > General > External scripting using: Local)")
    return resolve


def scripts_folder() -> pathlib.Path:
    """The per-user Fusion/Scripts/Edit folder Resolve lists under Workspace > Scripts."""
    home = pathlib.Path.home()
    if sys.platform == "darwin":
        base = home / "Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion"
    elif sys.platform == "win32":
        base = pathlib.Path(os.environ.get("APPDATA", home)) / "Blackmagic Design/DaVinci Resolve/Support/Fusion"
    else:
        base = home / ".local/share/DaVinciResolve/Fusion"
    return base / "Scripts" / "Edit"


def default_media_dir() -> pathlib.Path:
    """Where rendered clips are kept for Resolve to link to (not the server's cache)."""
    return pathlib.Path(os.environ.get("FAIRY_MEDIA_DIR") or pathlib.Path.home() / "Fairy Renders")


def install_script(folder: pathlib.Path | None = None) -> pathlib.Path:
    """Copy fairy_edit.py into ``folder`` (default: scripts_folder()), telling it
    where this copy of fairy_plugin lives so Resolve's Python can import it."""
    folder = folder or scripts_folder()
    folder.mkdir(parents=True, exist_ok=True)
    source = (pathlib.Path(__file__).with_name("fairy_edit.py")).read_text(encoding="utf-8")
    site = str(pathlib.Path(__file__).resolve().parents[2])  # the folder holding fairy_plugin
    text = source.replace('FAIRY_PLUGIN_PATH = ""', f"FAIRY_PLUGIN_PATH = {site!r}", 1)
    target = folder / "fairy_edit.py"
    from fairy_proto.files import atomic_write

    with atomic_write(target, "w", overwrite=True, encoding="utf-8") as f:  # Resolve never reads half a script
        f.write(text)
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairy_plugin.resolve",
                                     description="Fairy edits on DaVinci Resolve's current timeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="edit clips of the current timeline")
    edit.add_argument("-i", "--instruction", required=True)
    which = edit.add_mutually_exclusive_group()
    which.add_argument("--current", dest="mode", action="store_const", const="current",
                       help="the clip under the playhead (default)")
    which.add_argument("--selected", dest="mode", action="store_const", const="selected",
                       help="the selected video clips")
    which.add_argument("--marks", dest="mode", action="store_const", const="marks",
                       help="every clip between mark in and out on --track")
    edit.add_argument("--track", type=int, help="video track for --marks (1 = V1, the default)")
    edit.add_argument("--take", action="store_true", help="add each result as a take of its clip, selected")
    edit.add_argument("--finalize-take", action="store_true", help="with --take: finalize (drops the other takes)")
    edit.add_argument("--server", default=os.environ.get("FAIRY_SERVER", DEFAULT_ADDRESS))
    edit.add_argument("--token", default=os.environ.get("FAIRY_TOKEN"))
    edit.add_argument("--tls-ca", type=pathlib.Path)
    edit.add_argument("--media-dir", type=pathlib.Path, help="where rendered clips go (default ~/Fairy Renders)")
    settings = edit.add_argument_group("edit settings (default: the server's)")
    add_arguments(settings, REQUEST_SETTING_NAMES, unset_means="the server's")
    edit.add_argument("--handles", type=int, default=0, help="extra frames each side, where the media has them")
    install = sub.add_parser("install-script", help="put fairy_edit.py under Workspace > Scripts")
    install.add_argument("--folder", type=pathlib.Path, help=f"default: {scripts_folder()}")
    return parser


def main(argv: list[str] | None = None, *, resolve: Any = None, stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "install-script":
            err.write(f"installed {install_script(args.folder)}; restart Resolve, then Workspace > Scripts > "
                      "fairy_edit\n")
            return 0
        params = EditParams(args.instruction, **values_from_arguments(args, REQUEST_SETTING_NAMES))
        resolve = resolve if resolve is not None else connect()
        certificates = args.tls_ca.read_bytes() if args.tls_ca else None
        with FairyClient(args.server, token=args.token, root_certificates=certificates) as client:
            summary = edit_timeline(resolve, params, client=client, media_dir=args.media_dir or default_media_dir(),
                                    mode=args.mode or "current", track=args.track, handles=args.handles,
                                    as_take=args.take, finalize_take=args.finalize_take, stream=err)
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    except PluginError as exc:
        err.write(f"fairy resolve: {exc}\n")
        return 1
    for line in summary.lines():
        err.write(line + "\n")
    if summary.cancelled:
        err.write("cancelled; nothing placed\n")
        return 130
    return 0 if summary.placed and not summary.failed and not summary.skipped else 1
