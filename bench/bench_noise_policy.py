"""Warp error of shared vs per-frame initial noise (and of K = 0 vs K = 3) on a moving clip.

    python bench/bench_noise_policy.py [--frames 16] [--size 128x96] [--steps 10] [--seeds 3]

Warp error (Lai et al. 2018) with OpenCV Farneback flow on the input clip,
``fairy.metrics.warp_error``; lower is more temporally consistent. Averaged
over ``--seeds`` seeds. With a random-weight model the absolute numbers mean
little; the comparison between policies is the point.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
from fractions import Fraction

import numpy as np

from fairy.loading import load_pipeline
from fairy.metrics import warp_error
from fairy.video import iter_frames, make_test_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="builtin:tiny")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    folder = pathlib.Path(tempfile.mkdtemp())
    source = make_test_clip(folder / "moving.mp4", frames=args.frames, width=width, height=height, fps=Fraction(24), audio=False)
    clip = np.stack(list(iter_frames(source, 0, args.frames)))
    pipe = load_pipeline(args.model, device="cpu")
    print(f"model {args.model}, {args.frames} frames {width}x{height}, {args.steps} steps, {args.seeds} seeds; "
          f"input clip's own warp error {warp_error(clip, clip):.5f}")
    for anchors in (0, 3):
        scores = {}
        for noise in ("per_frame", "shared"):
            errors = []
            for seed in range(args.seeds):
                out = pipe(clip, "make it a watercolor painting", steps=args.steps, anchors=anchors,
                           seed=seed, noise=noise, output_type="uint8").frames  # fmt: skip
                errors.append(warp_error(clip, out))
            scores[noise] = float(np.mean(errors))
        print(f"K={anchors}: warp error per-frame noise {scores['per_frame']:.5f}, shared initial noise "
              f"{scores['shared']:.5f}, shared / per-frame {scores['shared'] / scores['per_frame']:.3f}")


if __name__ == "__main__":
    main()
