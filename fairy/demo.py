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

import os
import pathlib
import subprocess
import sys
import time
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

    out_dir: pathlib.Path = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample = make_sample_timeline(out_dir, frames=args.sample_frames)
    edited = out_dir / "sample_edit.otio"
    port_file = out_dir / "server" / "port"
    port_file.parent.mkdir(exist_ok=True)
    port_file.unlink(missing_ok=True)
    log_path = out_dir / "server" / "server.log"
    command = [
        sys.executable, "-m", "fairy_server", "--address", "127.0.0.1:0", "--port-file", str(port_file),
        "--data-dir", str(out_dir / "server"), "--model", args.model, "--media-root", str(out_dir / "media"),
    ]  # fmt: skip
    if args.device:
        command += ["--devices", args.device]
    print(f"starting fairy-server with {args.model} (log: {log_path}) ...", file=sys.stderr)
    with open(log_path, "a") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + _SERVER_START_SECONDS
        while not port_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise FairyError(f"fairy-server did not start: {tail[0]}")
            time.sleep(0.2)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
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
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if code == 0:
        print(f"relinked timeline: {edited}\nrendered clips:    {edited.with_name(edited.stem + '_fairy')}", file=sys.stderr)
    return code
