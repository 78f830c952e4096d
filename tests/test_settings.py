"""The settings table (fairy_proto.v1.settings) is the one description of an edit's settings: every layer takes
its names, defaults, ranges and messages from it, and the clip metadata layout is one for every front end."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import pathlib
import re
import subprocess
import sys
from fractions import Fraction

import pytest
from fairy_proto.v1 import clip_metadata, fairy_pb2
from fairy_proto.v1.settings import (REQUEST_SETTINGS, SERVER_DEFAULT_SETTINGS, SETTINGS, SettingError, add_arguments,
                                     check_settings, setting, values_from_environment)

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUEST_NAMES = [s.name for s in REQUEST_SETTINGS]


def test_the_table_and_edit_parameters_name_the_same_settings():
    fields = [f.name for f in fairy_pb2.EditParameters.DESCRIPTOR.fields]
    assert sorted(fields) == sorted(REQUEST_NAMES)
    for s in REQUEST_SETTINGS:
        field = fairy_pb2.EditParameters.DESCRIPTOR.fields_by_name[s.name]
        if s.choices:
            # Every choice maps to an enum value, and every value but UNSPECIFIED (unset) to a choice.
            names = {v.name for v in field.enum_type.values} - {field.enum_type.values[0].name}
            assert field.enum_type.values[0].name.endswith("_UNSPECIFIED")
            assert {s.to_proto_name(c) for c in s.choices} == names
        elif s.server_default:
            assert field.has_presence, f"{s.name}: unset must be distinguishable from a value"


def test_every_layer_uses_the_table_names_and_defaults():
    from fairy.editing import EditSettings
    from fairy.pipeline import FairyPipeline, FairyParams
    from fairy_plugin.requests import EditParams
    from fairy_server.config import Defaults

    library = {f.name: f.default for f in dataclasses.fields(EditSettings) if f.name != "instruction"}
    assert library == {s.name: s.default for s in SETTINGS if s.name != "model"}
    call = inspect.signature(FairyPipeline.__call__).parameters
    for name in ("steps", "anchors", "guidance_scale", "image_guidance_scale", "batch_size", "seed", "noise"):
        assert call[name].default == setting(name).default, name
    # FairyParams holds resolved values: a setting the model chooses defaults to what one that says nothing gets.
    assert {f.name: f.default for f in dataclasses.fields(FairyParams)} == {
        n: setting(n).default if setting(n).default is not None else setting(n).fallback
        for n in ("steps", "guidance_scale", "image_guidance_scale", "seed", "noise")}
    assert {f.name: f.default for f in dataclasses.fields(Defaults())} == {
        s.name: s.default for s in SERVER_DEFAULT_SETTINGS}
    # The plugin leaves every setting the server has a default for unset.
    plugin = {f.name: f.default for f in dataclasses.fields(EditParams) if f.name != "instruction"}
    assert set(plugin) == set(REQUEST_NAMES)
    assert all(plugin[s.name] is None for s in REQUEST_SETTINGS if s.server_default)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    actions = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                actions.update({f"{name} {flag}": a for flag, a in _flags(sub).items()})
        for flag in action.option_strings:
            actions[flag] = action
    return actions


def test_every_front_end_spells_the_flags_as_the_table():
    from fairy.cli import build_parser
    from fairy_plugin.resolve.cli import _parser as resolve_parser
    from fairy_plugin.timeline import _parser as timeline_parser
    from fairy_server.cli import build_parser as server_parser

    edit = _flags(build_parser({}))
    timeline = _flags(timeline_parser())
    resolve = _flags(resolve_parser())
    server = _flags(server_parser())
    for s in SETTINGS:
        assert f"edit {s.flag}" in edit, s.flag
        if s.in_request:
            assert timeline[f"edit {s.flag}"].dest == s.name
            assert f"redo {s.flag}" in timeline and f"edit {s.flag}" in resolve
            # Unset means the server's default, except the seed, which the server has none for.
            assert timeline[f"edit {s.flag}"].default == (None if s.server_default else s.default)
            assert resolve[f"edit {s.flag}"].default == (None if s.server_default else s.default)
            assert timeline[f"redo {s.flag}"].default is None  # unset: as recorded
        if s.server_default:
            assert server[s.flag].default == s.default
    # No second spelling survives.
    for old in ("--guidance", "--image-guidance", "--num-anchors", "--num-inference-steps"):
        assert not any(flag.endswith(" " + old) or flag == old for flag in {**edit, **timeline, **resolve, **server})


def test_the_defaults_are_written_only_in_the_table():
    """A default typed again beside a setting's name (steps = 10, "anchors", 3, guidance_scale=7.5...) or the
    distinctive float and size defaults anywhere in the product's code."""
    table = ROOT / "proto" / "fairy_proto" / "v1" / "settings.py"
    sources = [p for folder in ("fairy", "server", "plugin", "proto") for p in (ROOT / folder).rglob("*.py")
               if p != table and "_pb2" not in p.name]
    # (Not the seed: 0 is every seed's default, the training's included.)
    patterns = [re.compile(rf"\b{s.name}\b[\"']?\s*(?::\s*[\w| ]+)?\s*[=:,]\s*[\"']?{re.escape(str(s.default))}\b[\"']?(?!\.)")
                for s in SETTINGS if s.default is not None and s.name != "seed"]
    patterns += [re.compile(r"(?<![\w.])(?<!SD )(?<!Diffusion )(7\.5|1\.5)(?![\w.])"),
                 re.compile(r"(?<![\w.])512(?![\w.])(?!,)(?! *\))")]  # (not a 512-channel layer list)
    offenders = []
    for path in sources:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in patterns):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "defaults outside the settings table:\n" + "\n".join(offenders)


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, "steps must be 1 to 1000, got 0"),
    ("anchors", -1, "anchors must be 0 to 64, got -1"),
    ("guidance_scale", float("nan"), "guidance_scale must be a finite number"),
    ("noise", "pink", "noise must be shared or per_frame, got 'pink'"),
    ("steps", 2.5, "steps must be a whole number"),
    ("batch_size", True, "batch_size must be a number"),
])
def test_one_message_for_a_value_out_of_range(name, value, message):
    with pytest.raises(SettingError, match=re.escape(message)):
        check_settings({name: value})
    assert check_settings({"anchors": 0, "steps": 1}) == {"anchors": 0, "steps": 1}
    with pytest.raises(SettingError, match="unknown setting num_anchors"):
        check_settings({"num_anchors": 3})


def test_the_same_message_from_each_front_end(tmp_path):
    from fairy.editing import EditSettings
    from fairy.errors import InvalidInputError
    from fairy_plugin.errors import PluginError
    from fairy_plugin.requests import EditParams

    expected = "anchors must be 0 to 64, got 65"
    with pytest.raises(InvalidInputError, match=expected):
        EditSettings("x", anchors=65).check()
    with pytest.raises(PluginError, match=expected):
        EditParams("x", anchors=65).check()
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, ["anchors"])
    with pytest.raises(argparse.ArgumentError, match=expected):
        parser.parse_args(["--anchors", "65"])
    with pytest.raises(SettingError, match=r"\$FAIRY_ANCHORS: " + expected):
        values_from_environment({"FAIRY_ANCHORS": "65"}, ["anchors"])
    assert values_from_environment({"FAIRY_STEPS": "20", "FAIRY_NOISE": ""}, ["steps", "noise"]) == {"steps": 20}


def test_the_settings_table_loads_without_protobuf_or_grpc():
    code = ("import sys, fairy_proto.v1.settings, fairy_proto.v1.clip_metadata; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _record(**changes) -> clip_metadata.EditRecord:
    values = dict(instruction="make it snowy", settings={"steps": 4, "anchors": 0, "noise": "per_frame"},
                  model="builtin:tiny", seed=2**40, job_id="j1", server="127.0.0.1:1",
                  source=clip_metadata.SourceRange("Clip-1", "/m/a.mov", 10, 24, Fraction(24000, 1001)),
                  handles_before=2, handles_after=0)
    return clip_metadata.EditRecord(**(values | changes))


def test_the_metadata_layout_reads_back_what_it_wrote():
    record = _record()
    data = record.to_metadata()
    assert set(data) == {"version", "instruction", "settings", "model", "seed", "source", "handles", "job_id", "server"}
    assert data["source"] == {"name": "Clip-1", "media": "/m/a.mov", "start_frame": 10, "frame_count": 24,
                              "rate": "24000/1001"}
    assert clip_metadata.read({"fairy": data}) == record
    # Blender keeps a seed above 32 bits as text.
    assert clip_metadata.read({"fairy": data | {"seed": str(2**40)}}) == record
    assert clip_metadata.read({}) is None and clip_metadata.read({"fairy": {"result_track": True}}) is None
    with pytest.raises(ValueError, match="missing 'source'"):
        clip_metadata.read({"fairy": {k: v for k, v in data.items() if k != "source"}})
    with pytest.raises(ValueError, match="steps must be 1 to 1000"):
        clip_metadata.read({"fairy": data | {"settings": {"steps": 0}}})
    with pytest.raises(ValueError, match="layout version 2"):
        clip_metadata.read({"fairy": data | {"version": 2}})


def test_the_docs_show_the_table_as_it_is():
    from fairy_proto.v1.settings import markdown_table

    assert markdown_table() in (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
