"""What a model says about itself, read without torch (the server's parent process and the CLI use it).

A model folder may hold ``fairy_model.json`` beside ``model_index.json``: its
working size (``long_side``, the longer side frames are edited at when the
caller gives none), the edits it was trained and evaluated on, and how it was
made. Fairy's shipped small model lives inside the package and is named
``builtin:small``.
"""

from __future__ import annotations

import json
import pathlib

from fairy_proto.v1.settings import LONG_SIDE_FALLBACK

__all__ = [
    "SMALL_MODEL_ID",
    "MODEL_INFO_FILE",
    "FALLBACK_LONG_SIDE",
    "shipped_model_path",
    "model_folder",
    "read_model_info",
    "write_model_info",
    "working_long_side",
    "recommended_guidance",
]

SMALL_MODEL_ID = "builtin:small"
MODEL_INFO_FILE = "fairy_model.json"
# The paper's working size, for models that do not say theirs.
FALLBACK_LONG_SIDE = LONG_SIDE_FALLBACK


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


def working_long_side(model: str) -> int:
    """The longer side the model edits at when the caller gives none."""
    value = read_model_info(model).get("long_side")
    return value if isinstance(value, int) and value > 0 else FALLBACK_LONG_SIDE


GUIDANCE_SETTINGS = ("guidance_scale", "image_guidance_scale")


def recommended_guidance(model: str) -> dict[str, float]:
    """The guidance scales the model's makers recommend (``fairy_model.json``'s ``recommended``), or none.

    The shipped small model wants less than the paper's text guidance (the
    settings table's default): it knows each of its edits exactly, and
    extrapolating its instruction that far paints saturated blobs into its
    output (see docs/model.md).
    """
    wanted = read_model_info(model).get("recommended")
    if not isinstance(wanted, dict):
        return {}
    return {k: float(v) for k, v in wanted.items() if k in GUIDANCE_SETTINGS and isinstance(v, (int, float))}
