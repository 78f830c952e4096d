"""Anchored training's grain term: what it does to per-frame editing, to Fairy, and to fidelity.

    python bench/bench_consistency.py MODEL [MODEL ...] [--noise per_frame,shared] [--frames 12]

Each MODEL is a model folder (or ``builtin:small``), typically the same
anchored training run with different ``--consistency-weight`` and
``--travel`` (docs/model.md has the commands). For each model and noise
policy it edits the quality benchmark's moving clips (``bench_quality``: pan,
zoom, rotation, pan with objects over the held-out photographs; night, sepia
and the ambiguous palette edit) with K = 0 (per-frame editing) and K = 3
(Fairy), and prints warp error (x 1e-3, OpenCV Farneback flow), K = 3 over
K = 0, PSNR against the exact edit, the ambiguous edit's hue-angle spread
(degrees) and its K = 3 over K = 0 ratio. The numbers are the ones
``bench_quality`` computes, with the same clips, seed and guidance.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from bench_quality import add_clip_arguments, clips_and_edits, measure

from fairy.loading import load_pipeline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders (or builtin:small)")
    parser.add_argument("--noise", default="per_frame,shared", help="noise policies, comma-separated")
    add_clip_arguments(parser)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/consistency.json"))
    args = parser.parse_args(argv)
    clips, edits, wanted, (width, height) = clips_and_edits(args)
    began = time.perf_counter()
    rows = []
    print("| model | noise | warp K = 0 | warp K = 3 | K3 / K0 | PSNR K = 0 | PSNR K = 3 | hue std K = 0 | hue std K = 3 | K3 / K0 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        pipes = {model: load_pipeline(model, device="cpu")}
        for noise in args.noise.split(","):
            per_frame, outputs = measure(pipes, clips, edits, anchors=0, noise=noise, model=model, seed=args.seed, frames=args.frames)
            fairy, _ = measure(pipes, clips, edits, anchors=3, noise=noise, model=model, seed=args.seed, frames=args.frames,
                               per_frame_outputs=outputs)  # fmt: skip
            row = {"model": model, "noise": noise, "per_frame": per_frame, "fairy": fairy,
                   "warp_ratio": fairy["warp_error_e3"] / per_frame["warp_error_e3"],
                   "hue_ratio": (fairy["hue_angle_std"] / per_frame["hue_angle_std"]
                                 if fairy["hue_angle_std"] is not None and per_frame["hue_angle_std"] else None)}  # fmt: skip
            rows.append(row)

            def shown(value, digits=2):
                return "-" if value is None else f"{value:.{digits}f}"

            print(f"| {model} | {noise} | {per_frame['warp_error_e3']:.2f} | {fairy['warp_error_e3']:.2f} | {row['warp_ratio']:.2f} | "
                  f"{shown(per_frame['psnr'])} | {shown(fairy['psnr'])} | {shown(per_frame['hue_angle_std'], 1)} | "
                  f"{shown(fairy['hue_angle_std'], 1)} | {shown(row['hue_ratio'])} |", flush=True)  # fmt: skip
    result = {"rows": rows, "frames": args.frames, "size": [width, height], "edits": [e.name for e in edits],
              "motions": wanted, "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
