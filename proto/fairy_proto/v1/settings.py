"""The settings of an edit: one table that every layer takes names, defaults, ranges and help from.

Pure Python on purpose: the model library, the server, the plugin core and the Blender extension (which
bundles ``fairy_proto``) all import it, none of them needs protobuf, gRPC or torch for it.

Each setting has one spelling, used alike as the Python keyword (``fairy.editing.EditSettings``,
``FairyPipeline.__call__``), the ``fairy.v1.EditParameters`` field, the command-line flag (``steps`` is
``--steps``), the Blender property and the key under ``metadata["fairy"]["settings"]``.

``in_request`` settings are the fields of ``fairy.v1.EditParameters`` (tests check both ways). A request
that leaves one unset gets the server's default, which is the default here unless the server was started
with another (``fairy-server --steps 20``). ``batch_size`` is not in the request: it changes memory, not
results, and each server picks its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

__all__ = ["Setting", "SettingError", "SETTINGS", "LONG_SIDE_FALLBACK", "REQUEST_SETTINGS", "SERVER_DEFAULT_SETTINGS",
           "MODEL_DEFAULT_SETTINGS", "setting", "defaults", "fallbacks", "check_settings", "add_arguments",
           "values_from_arguments", "values_from_environment"]


class SettingError(ValueError):
    """A setting's value is outside what the table allows; the message names the setting and the range."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    type: type  # int, float or str
    default: Any  # None: decided at run time, as ``default_text`` says
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # For a choice: the fairy.v1 enum value name of each choice (its UNSPECIFIED means unset).
    proto_values: tuple[tuple[str, str], ...] = ()
    in_request: bool = True  # a field of fairy.v1.EditParameters
    server_default: bool = True  # the server's default can be set when it starts (fairy-server --NAME)
    default_text: str = ""  # what a default of None means
    # A setting the model itself may choose (its fairy_model.json; fairy.model_info.model_defaults): the default
    # is None, and this is the value for a model that says nothing.
    fallback: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        if self.choices:
            return " or ".join(self.choices)
        if self.minimum is not None and self.maximum is not None:
            return f"{_number(self.minimum)} to {_number(self.maximum)}"
        return ""

    def check(self, value: Any) -> Any:
        """``value`` when the table allows it (None always is: unset); else SettingError naming the range."""
        if value is None:
            return None
        if self.type is str and not self.choices:
            if not isinstance(value, str):
                raise SettingError(f"{self.name} must be text, got {value!r}")
            return value
        if self.choices:
            if value not in self.choices:
                raise SettingError(f"{self.name} must be {self.range_text}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(f"{self.name} must be a number, got {value!r}")
        if self.type is int and not float(value).is_integer():
            raise SettingError(f"{self.name} must be a whole number, got {value!r}")
        if not math.isfinite(value):
            raise SettingError(f"{self.name} must be a finite number, got {value!r}")
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            raise SettingError(f"{self.name} must be {self.range_text}, got {_number(value)}")
        return self.type(value)

    def parse(self, text: str) -> Any:
        """For argparse's ``type=``: the value, or ArgumentTypeError with the table's message."""
        try:
            value = self.type(text)
        except ValueError:
            kind = "a whole number" if self.type is int else "a number"
            raise argparse.ArgumentTypeError(f"{self.name} must be {kind}, got {text!r}") from None
        try:
            return self.check(value)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def to_proto_name(self, value: str) -> str:
        return dict(self.proto_values)[value]

    def from_proto_name(self, name: str) -> str | None:
        """The choice for an enum value name; None for its UNSPECIFIED (unset)."""
        return {proto: choice for choice, proto in self.proto_values}.get(name)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# The paper's working size: the long side for a model that does not name its own (fairy_model.json).
LONG_SIDE_FALLBACK = 512
# InstructPix2Pix's guidance (the paper gives none), for a model that does not recommend its own.
_TEXT_GUIDANCE_FALLBACK = 7.5
_IMAGE_GUIDANCE_FALLBACK = 1.5


SETTINGS: tuple[Setting, ...] = (
    Setting("model", str, None, "hub id, diffusers folder, .safetensors/.ckpt file, builtin:small or builtin:tiny",
            server_default=False, default_text="the server's model"),
    Setting("steps", int, 10, "denoising steps", 1, 1000),
    Setting("seed", int, 0, "a frame's noise depends only on the seed and the frame's index", 0, 2**63 - 1,
            server_default=False),
    Setting("anchors", int, 3, "anchor frames K, edited together and attended to by every frame "
            "(0: each frame edited on its own)", 0, 64),
    Setting("guidance_scale", float, None, "how strongly the instruction is followed", 0.0, 100.0,
            fallback=_TEXT_GUIDANCE_FALLBACK,
            default_text=f"the model's recommendation, {_TEXT_GUIDANCE_FALLBACK} for models that do not say"),
    Setting("image_guidance_scale", float, None, "how closely the source frames are kept", 0.0, 100.0,
            fallback=_IMAGE_GUIDANCE_FALLBACK,
            default_text=f"the model's recommendation, {_IMAGE_GUIDANCE_FALLBACK} for models that do not say"),
    Setting("long_side", int, None, "the longer side frames are edited at, in pixels", 16, 8192,
            fallback=LONG_SIDE_FALLBACK,
            default_text=f"the model's working size, {LONG_SIDE_FALLBACK} for models that do not say"),
    Setting("codec", str, "h264", "the rendered clip's codec", choices=("h264", "prores"),
            proto_values=(("h264", "OUTPUT_CODEC_H264"), ("prores", "OUTPUT_CODEC_PRORES_422"))),
    Setting("noise", str, "shared", "initial noise: one latent shared by every frame, or one per frame",
            choices=("shared", "per_frame"),
            proto_values=(("shared", "NOISE_POLICY_SHARED"), ("per_frame", "NOISE_POLICY_PER_FRAME"))),
    Setting("batch_size", int, 4, "frames denoised at once (memory, not results; halved on out-of-memory)",
            1, 256, in_request=False),
)

_BY_NAME = {s.name: s for s in SETTINGS}
REQUEST_SETTINGS = tuple(s for s in SETTINGS if s.in_request)
SERVER_DEFAULT_SETTINGS = tuple(s for s in SETTINGS if s.server_default)
# Unset, these are the model's own (fairy.model_info.model_defaults), else the table's fallback.
MODEL_DEFAULT_SETTINGS = tuple(s for s in SETTINGS if s.fallback is not None)


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def defaults() -> dict[str, Any]:
    """Every setting's default by name."""
    return {s.name: s.default for s in SETTINGS}


def fallbacks() -> dict[str, Any]:
    """What the model-chosen settings are for a model that chooses none, by name."""
    return {s.name: s.fallback for s in MODEL_DEFAULT_SETTINGS}


def check_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The same values after each is checked (unknown names are refused too)."""
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise SettingError(f"unknown setting {', '.join(unknown)}; the settings are {', '.join(_BY_NAME)}")
    return {name: _BY_NAME[name].check(value) for name, value in values.items()}


def add_arguments(parser: argparse.ArgumentParser | Any, names: tuple[str, ...] | list[str], *,
                  unset_means: str | None = None, unset_all: bool = False,
                  defaults: dict[str, Any] | None = None) -> None:
    """One ``--flag`` per named setting, with the table's type, range check and help.

    ``unset_means``: the flags default to None (unset) and the help says what unset means (e.g. "the
    server's") when the server has a default for them (the seed has none: it defaults to the table's), or
    all of them with ``unset_all``; otherwise the flags default to the table's values (or ``defaults``) and
    the help shows them.
    """
    for name in names:
        s = _BY_NAME[name]
        if unset_means is not None and unset_all:
            default, shown = None, unset_means
        elif unset_means is not None and s.server_default:
            default = None
            shown = f"{unset_means}, normally {_shown(s.default) if s.default is not None else s.default_text}"
        else:
            default = (defaults or {}).get(name, s.default)
            shown = _shown(default) if default is not None else s.default_text
        limits = f"; {s.range_text}" if s.range_text and not s.choices else ""
        parser.add_argument(s.flag, dest=name, type=s.parse, default=default,
                            metavar=(f"{{{','.join(s.choices)}}}" if s.choices else name.upper()),
                            help=f"{s.help} (default {shown}{limits})")


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else _number(value)


def values_from_arguments(args: argparse.Namespace, names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The named settings from parsed arguments, leaving out those left unset (None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def values_from_environment(environ: dict[str, str], names: tuple[str, ...] | list[str], *,
                            prefix: str = "FAIRY_") -> dict[str, Any]:
    """The named settings set in ``environ`` as ``FAIRY_STEPS=20`` and so on (empty means unset); a bad
    value raises SettingError naming the variable."""
    values = {}
    for name in names:
        variable = prefix + name.upper()
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            values[name] = _BY_NAME[name].parse(text)
        except argparse.ArgumentTypeError as exc:
            raise SettingError(f"${variable}: {exc}") from None
    return values


def markdown_table() -> str:
    """The table as docs/settings.md shows it (``python -m fairy_proto.v1.settings``; a test keeps them equal)."""
    rows = ["| setting | flag | type | default | allowed | in a request | server default | what it does |",
            "|---|---|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{_shown(s.default)}`" if s.default is not None else s.default_text
        rows.append(f"| `{s.name}` | `{s.flag}` | {s.type.__name__} | {default} | {s.range_text or 'any'} | "
                    f"{'yes' if s.in_request else 'no'} | {'yes' if s.server_default else 'no'} | {s.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
