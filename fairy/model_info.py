"""What a model says about itself, read without torch (the server's parent process and the CLI use it).

A model folder may hold ``fairy_model.json`` beside ``model_index.json``: its
working size (``long_side``, the longer side frames are edited at when the
caller gives none), the guidance its makers recommend (``recommended``), the
edits it was trained and evaluated on, and how it was made. Fairy's shipped
small model lives inside the package and is named ``builtin:small``.
"""

from __future__ import annotations

import json
import pathlib

from fairy_proto.v1.settings import SettingError, fallbacks, setting

__all__ = [
    "SMALL_MODEL_ID",
    "MODEL_INFO_FILE",
    "shipped_model_path",
    "model_folder",
    "read_model_info",
    "write_model_info",
    "model_defaults",
]

SMALL_MODEL_ID = "builtin:small"
MODEL_INFO_FILE = "fairy_model.json"


def shipped_model_path() -> pathlib.Path:
    """The folder of ``builtin:small`` (inside the installed package)."""
    return pathlib.Path(__file__).resolve().parent / "models" / "small"


def model_folder(model: str) -> pathlib.Path | None:
    """The local folder a model name points to (``builtin:small`` included), or None (hub ids, files, builtin:tiny)."""
    if model == SMALL_MODEL_ID:
        return shipped_model_path()
    path = pathlib.Path(model).expanduser()
    return path if path.is_dir() else None


def read_model_info(model: str | pathlib.Path) -> dict:
    """The model's ``fairy_model.json`` as a dict; {} when it has none or it cannot be read."""
    folder = model_folder(str(model))
    if folder is None or not (folder / MODEL_INFO_FILE).is_file():
        return {}
    try:
        info = json.loads((folder / MODEL_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def write_model_info(folder: pathlib.Path, info: dict) -> None:
    (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_defaults(model: str) -> dict:
    """The values the model chooses for the settings a caller leaves unset (the settings table's
    ``MODEL_DEFAULT_SETTINGS``): its working size (``long_side``) and the guidance its makers recommend
    (``recommended``) from its ``fairy_model.json``, the table's fallback for each it does not give.

    The shipped small model wants guidance 1, far below the paper's text guidance: it knows each of its edits
    exactly, and extrapolating its instruction that far paints saturated blobs (see docs/model.md).
    """
    info = read_model_info(model)
    chosen = dict(info.get("recommended")) if isinstance(info.get("recommended"), dict) else {}
    chosen["long_side"] = info.get("long_side")
    values = fallbacks()
    for name in values:
        try:
            value = setting(name).check(chosen.get(name))
        except SettingError:  # a value the table would refuse from a user is ignored from a model too
            value = None
        if value is not None:
            values[name] = value
    return values
