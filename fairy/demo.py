"""`fairy demo`: the whole product path on generated media, as an editor would go.

1. make two sample shots and a sample OTIO timeline cutting them together;
2. start a ``fairy-server`` on a free loopback port (data in ``OUT/server``);
3. edit every clip of the timeline through the plugin core (``fairy timeline edit``):
   jobs submitted, watched with progress bars, results downloaded and relinked
   on a track above;
4. stop the server; the relinked timeline is ``OUT/sample_edit.otio`` and the
   rendered clips lie in ``OUT/sample_edit_fairy/``.
"""

from __future__ import annotations

import pathlib
import sys
from fractions import Fraction

from .errors import FairyError

_SERVER_START_SECONDS = 600  # a first run downloads the default model


def make_sample_timeline(folder: pathlib.Path, *, frames: int = 48, size: tuple[int, int] = (512, 384)) -> pathlib.Path:
    """Two 29.97 fps shots and a timeline using a range of each (``folder/sample.otio``)."""
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime, TimeRange

    from .video import make_test_clip

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    rate = 30000 / 1001
    timeline = otio.schema.Timeline(name="Fairy sample", global_start_time=RationalTime(0, rate))
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    for n in range(2):
        shot = media / f"shot{n + 1}.mp4"
        if not shot.exists():
            make_test_clip(shot, frames=frames, width=size[0], height=size[1], fps=Fraction(30000, 1001))
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


def run_demo(args) -> int:
    from fairy_plugin.timeline import main as timeline_main
    from fairy_server.local import LocalServerError, local_server

    out_dir: pathlib.Path = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = make_sample_timeline(out_dir, frames=args.sample_frames)
    edited = out_dir / "sample_edit.otio"
    print(f"starting fairy-server with {args.model} (log: {out_dir / 'server' / 'local-server.log'}) ...", file=sys.stderr)
    try:
        with local_server(
            out_dir / "server", model=args.model, media_roots=[out_dir / "media"], devices=args.device,
            start_timeout=_SERVER_START_SECONDS,
        ) as address:  # fmt: skip
            argv = [
                "edit", str(sample), "-i", args.instruction, "-o", str(edited), "--server", address,
                "--seed", str(args.seed), "--steps", str(args.steps), "--anchors", str(args.anchors),
                "--long-side", str(args.long_side), "--guidance-scale", str(args.guidance),
                "--image-guidance-scale", str(args.image_guidance), "--codec", args.codec,
                "--connect-timeout", str(_SERVER_START_SECONDS),
            ]  # fmt: skip
            if args.overwrite or edited.exists():
                argv.append("--overwrite")
            code = timeline_main(argv)
    except LocalServerError as exc:
        raise FairyError(str(exc)) from None
    if code == 0:
        print(f"relinked timeline: {edited}\nrendered clips:    {edited.with_name(edited.stem + '_fairy')}", file=sys.stderr)
    return code
