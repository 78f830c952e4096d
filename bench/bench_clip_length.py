"""Time per frame and peak memory of a 240-frame clip over a 24-frame clip (streamed through edit_video).

    python bench/bench_clip_length.py [--short 24] [--long 240] [--size 256x192] [--steps 4]

Each length runs in a fresh process so its peak resident memory (ru_maxrss)
is its own; targets: time per frame <= 1.1x, peak memory <= 1.2x.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
from fractions import Fraction


def one_run(frames: int, width: int, height: int, steps: int, model: str) -> dict:
    import time

    from fairy.editing import EditSettings, edit_video
    from fairy.loading import load_pipeline
    from fairy.video import make_test_clip

    folder = pathlib.Path(tempfile.mkdtemp())
    source = make_test_clip(folder / "source.mp4", frames=frames, width=width, height=height, fps=Fraction(24))
    pipe = load_pipeline(model, device="cpu")
    settings = EditSettings("make it a watercolor painting", steps=steps, long_side=max(width, height))
    edit_video(pipe, source, folder / "warmup.mp4", settings, frames=6)  # first-call kernel set-up off the clock
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    edit_video(pipe, source, folder / "edited.mp4", settings)
    seconds = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"frames": frames, "s_per_frame": seconds / frames, "peak_mib": peak_kib / 1024, "before_mib": baseline_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=24)
    parser.add_argument("--long", type=int, default=240)
    parser.add_argument("--size", default="256x192")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    if args.child:
        print(json.dumps(one_run(args.child, width, height, args.steps, args.model)))
        return
    runs = {}
    for frames in (args.short, args.long):
        cmd = [sys.executable, __file__, "--child", str(frames), "--size", args.size, "--steps", str(args.steps), "--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs[frames] = json.loads(out.stdout.strip().splitlines()[-1])
    short, long = runs[args.short], runs[args.long]
    print(f"model {args.model}, {width}x{height}, {args.steps} steps, CPU")
    for r in (short, long):
        print(f"{r['frames']:4d} frames: {r['s_per_frame']:.4f} s/frame, peak RSS {r['peak_mib']:.0f} MiB")
    print(f"time per frame ratio {long['s_per_frame'] / short['s_per_frame']:.3f} (target <= 1.1)")
    print(f"peak memory ratio    {long['peak_mib'] / short['peak_mib']:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
