"""What an edited clip records about its edit: the one ``metadata["fairy"]`` layout.

Written alike by the server's OTIO sidecar, `fairy timeline` (a result clip, or a result media reference),
the Blender extension (``strip["fairy"]``) and the Resolve script (the result's marker, as JSON in its
custom data); read back by `fairy timeline info` and `fairy timeline redo`. Pure Python, no protobuf::

    {
      "version": 1,
      "instruction": "make it snowy",
      "settings": {"steps": 20, "anchors": 5, "guidance_scale": 9.0, "image_guidance_scale": 1.2,
                   "long_side": 640, "codec": "prores", "noise": "per_frame"},
      "model": "builtin:small",
      "seed": 7,
      "source": {"name": "Clip-001", "media": "/media/shot.mov",
                 "start_frame": 100, "frame_count": 48, "rate": "24000/1001"},
      "handles": {"before": 0, "after": 0},
      "job_id": "5f0c...",
      "server": "127.0.0.1:50151"
    }

``settings`` holds what the job rendered with (the server's defaults filled in) under the names of
``fairy_proto.v1.settings``; ``source`` is the range of the original media, in its own frames, that the
result replaces; ``handles`` the extra frames rendered each side. Hosts that cannot store 64-bit integers
(Blender's ID properties) store a large seed as its decimal text; :func:`read` accepts both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .settings import REQUEST_SETTINGS, SettingError, check_settings, setting

__all__ = ["METADATA_KEY", "LAYOUT_VERSION", "EditRecord", "SourceRange", "read"]

METADATA_KEY = "fairy"
LAYOUT_VERSION = 1
# model and seed have their own keys; the rest of the request's settings go under "settings".
_SETTING_NAMES = tuple(s.name for s in REQUEST_SETTINGS if s.name not in ("model", "seed"))


@dataclasses.dataclass(frozen=True)
class SourceRange:
    """The frames of the original media an edit replaces, at the media's own rate."""

    name: str  # the clip, strip or timeline item it was made from
    media: str  # path or URL of the original media
    start_frame: int
    frame_count: int
    rate: Fraction


@dataclasses.dataclass(frozen=True)
class EditRecord:
    instruction: str
    settings: dict[str, Any]
    model: str
    seed: int
    source: SourceRange
    job_id: str
    server: str = ""
    handles_before: int = 0
    handles_after: int = 0

    def to_metadata(self) -> dict:
        """The layout above, as plain dicts, strings and numbers."""
        rate = self.source.rate
        return {
            "version": LAYOUT_VERSION,
            "instruction": self.instruction,
            "settings": {name: self.settings[name] for name in _SETTING_NAMES if self.settings.get(name) is not None},
            "model": self.model,
            "seed": self.seed,
            "source": {"name": self.source.name, "media": self.source.media, "start_frame": self.source.start_frame,
                       "frame_count": self.source.frame_count, "rate": f"{rate.numerator}/{rate.denominator}"},
            "handles": {"before": self.handles_before, "after": self.handles_after},
            "job_id": self.job_id,
            "server": self.server,
        }


def read(metadata: Mapping | None) -> EditRecord | None:
    """The record under ``metadata["fairy"]`` (an OTIO metadata dict, or a Blender strip's properties);
    None when there is none. A record that does not follow the layout raises ValueError saying what is
    wrong."""
    if metadata is None or METADATA_KEY not in metadata:
        return None
    data = metadata[METADATA_KEY]
    if not isinstance(data, Mapping) or "instruction" not in data:
        return None  # e.g. a result track's marker, not an edit
    try:
        version = int(data.get("version", 0))
        if version != LAYOUT_VERSION:
            raise ValueError(f"layout version {version}, this version reads {LAYOUT_VERSION}")
        source = data["source"]
        handles = data.get("handles", {})
        settings = check_settings({str(k): _plain(v) for k, v in dict(data.get("settings", {})).items()})
        return EditRecord(
            instruction=str(data["instruction"]),
            settings=settings,
            model=str(data.get("model", "")),
            seed=int(data.get("seed", setting("seed").default)),
            source=SourceRange(name=str(source.get("name", "")), media=str(source["media"]),
                               start_frame=int(source["start_frame"]), frame_count=int(source["frame_count"]),
                               rate=Fraction(str(source["rate"]))),
            job_id=str(data.get("job_id", "")),
            server=str(data.get("server", "")),
            handles_before=int(handles.get("before", 0)),
            handles_after=int(handles.get("after", 0)),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError, SettingError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"metadata[{METADATA_KEY!r}] does not follow the Fairy layout: {what}") from None


def _plain(value: Any) -> Any:
    # OTIO hands back its own int/float wrappers in some builds, Blender IDProperty values: plain Python.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value) if not isinstance(value, (int, float)) else value
