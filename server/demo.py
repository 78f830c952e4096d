"""`fairy demo`: the whole product path on generated media, as an editor would go.

It lives in the server package because it runs the product (a server and the
plugin core) around the model library, which imports neither; the ``fairy``
command finds it through the ``fairy.commands`` entry point.

1. make two sample shots (camera moves over two photographs that ship with
   scikit-image and that the small model never saw in training) and a sample
   OTIO timeline cutting them together;
2. start a ``fairy-server`` on a free loopback port (data in ``OUT/server``);
3. edit every clip of the timeline through the plugin core (``fairy timeline edit``):
   jobs submitted, watched with progress bars, results downloaded and relinked
   on a track above;
4. stop the server; the relinked timeline is ``OUT/sample_edit.otio`` and the
   rendered clips lie in ``OUT/sample_edit_fairy/``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from fractions import Fraction

from fairy.errors import FairyError
from fairy_proto.v1.settings import setting, values_from_arguments

# What `fairy demo` passes on to `fairy timeline` (batch size is the local server's own business).
DEMO_SETTING_NAMES = ("model", "steps", "seed", "anchors", "guidance_scale", "image_guidance_scale", "long_side",
                      "codec", "noise")
_SERVER_START_SECONDS = 600  # a first run downloads the default model


def _make_shot(path: pathlib.Path, number: int, frames: int, size: tuple[int, int], rate: Fraction) -> None:
    from fairy.training.clips import camera_clip
    from fairy.training.data import HELD_OUT_PHOTOS, load_photo
    from fairy.video import VideoWriter

    photo, motion = ((HELD_OUT_PHOTOS[1], "pan"), (HELD_OUT_PHOTOS[0], "zoom"))[number % 2]
    with VideoWriter(path, fps=rate, width=size[0], height=size[1], expected_frames=frames) as writer:
        for frame in camera_clip(load_photo(photo), motion, frames=frames, size=size):
            writer.write(frame)


def make_sample_timeline(folder: pathlib.Path, *, frames: int = 48, size: tuple[int, int] = (256, 192)) -> pathlib.Path:
    """Two 29.97 fps shots and a timeline using a range of each (``folder/sample.otio``)."""
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime, TimeRange

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    rate = 30000 / 1001
    timeline = otio.schema.Timeline(name="Fairy sample", global_start_time=RationalTime(0, rate))
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for n in range(2):
        shot = media / f"shot{n + 1}.mp4"
        if not shot.exists():
            _make_shot(shot, n, frames, size, Fraction(30000, 1001))
        track.append(
            otio.schema.Clip(
                name=f"shot{n + 1}",
                media_reference=otio.schema.ExternalReference(
                    target_url=shot.resolve().as_uri(),
                    available_range=TimeRange(RationalTime(0, rate), RationalTime(frames, rate)),
                ),
                source_range=TimeRange(RationalTime((frames // 8) * (1 + 2 * n), rate), RationalTime(frames // 2, rate)),
            )
        )
    timeline.tracks.append(track)
    path = folder / "sample.otio"
    otio.adapters.write_to_file(timeline, str(path))
    return path


def describe_model(model: str) -> str:
    """What the user is about to run, said plainly (the small model is no real editor)."""
    from fairy.model_info import SMALL_MODEL_ID, read_model_info

    if model != SMALL_MODEL_ID:
        return f"model: {model}"
    info = read_model_info(model)
    edits = "; ".join(f'"{e["instruction"]}"' for e in info.get("edits", ())) or "none"
    return (
        f"model: {SMALL_MODEL_ID}, the small model built into Fairy ({info.get('long_side', '?')} px, trained on this "
        f"project's procedural colour edits; it knows no other instructions).\n"
        f"  instructions it knows: {edits}\n"
        "  for real edits (\"turn him into a robot\") use the real model on a CUDA GPU: "
        "--model timbrooks/instruct-pix2pix"
    )


def build_parser() -> argparse.ArgumentParser:
    from fairy.cli import add_edit_options
    from fairy.model_info import SMALL_MODEL_ID

    parser = argparse.ArgumentParser(prog="fairy demo", description=main.__doc__)
    parser.add_argument("--out-dir", type=pathlib.Path, default=pathlib.Path("fairy-demo"))
    parser.add_argument("--sample-frames", type=int, default=48, help="length of each generated sample shot")
    add_edit_options(parser, SMALL_MODEL_ID, unset_means="the local server's", names=DEMO_SETTING_NAMES)
    parser.set_defaults(instruction="make it night")
    for action in parser._actions:
        if action.dest == "instruction":
            action.required = False
    return parser


def main(argv: list[str]) -> int:
    """the whole path: sample timeline -> fairy-server -> plugin core -> relinked timeline"""
    return run_demo(build_parser().parse_args(argv))


def run_demo(args) -> int:
    from fairy_plugin.timeline import main as timeline_main

    from .local import LocalServerError, local_server

    out_dir: pathlib.Path = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = make_sample_timeline(out_dir, frames=args.sample_frames)
    edited = out_dir / "sample_edit.otio"
    print(describe_model(args.model), file=sys.stderr)
    print(f"starting fairy-server with {args.model} (log: {out_dir / 'server' / 'local-server.log'}) ...", file=sys.stderr)
    try:
        with local_server(
            out_dir / "server", model=args.model, media_roots=[out_dir / "media"], devices=args.device,
            start_timeout=_SERVER_START_SECONDS,
        ) as address:  # fmt: skip
            argv = ["edit", str(sample), "-i", args.instruction, "-o", str(edited), "--server", address,
                    "--connect-timeout", str(_SERVER_START_SECONDS)]
            for name, value in values_from_arguments(args, DEMO_SETTING_NAMES[1:]).items():
                argv += [setting(name).flag, str(value)]  # the rest: the local server's (and model's) defaults
            if args.overwrite or edited.exists():
                argv.append("--overwrite")
            code = timeline_main(argv)
    except LocalServerError as exc:
        raise FairyError(str(exc)) from None
    if code == 0:
        print(f"relinked timeline: {edited}\nrendered clips:    {edited.with_name(edited.stem + '_fairy')}", file=sys.stderr)
    return code
