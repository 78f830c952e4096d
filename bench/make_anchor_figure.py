"""What anchors are for, in one picture: the ambiguous edit frame by frame and with anchors.

    python bench/make_anchor_figure.py [--model builtin:small] [--photo coffee] [--motion pan] [--out bench/figures/anchors.jpg]

A camera move over a held-out photograph, edited with "give it a new color
palette" (a hue rotation by an angle the model picks: many right answers) by
the shipped small model, each frame from its own initial noise (what editing
frame by frame does). Rows: the source; K = 0 (every frame picks its own
answer, so the clip flickers through colours); K = 3 (every frame reads the
anchors and takes their answer). Each edited row is labelled with the hue
angle each frame took (``fairy.training.edits.hue_rotation_angle``) and their
circular standard deviation.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from fairy.loading import load_pipeline
from fairy.metrics import circular_std_degrees
from fairy.training.clips import camera_clip
from fairy.training.data import HELD_OUT_PHOTOS, load_photo
from fairy.training.edits import hue_rotation_angle
from fairy.training.recipe import RECOMMENDED_GUIDANCE

_INSTRUCTION = "give it a new color palette"


def _strip(frames: np.ndarray, gap: int) -> np.ndarray:
    spacer = np.full((frames.shape[1], gap, 3), 255, np.uint8)
    return np.concatenate([x for f in frames for x in (f, spacer)][:-1], axis=1)


def _caption(text: str, width: int, height: int = 18) -> np.ndarray:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((4, 3), text, fill="black")
    return np.asarray(image)


def main(argv: list[str] | None = None) -> dict[int, list[float]]:
    """Draw the figure; returns the hue angle each frame took, by the number of anchors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:small")
    parser.add_argument("--photo", default="coffee", choices=HELD_OUT_PHOTOS)
    parser.add_argument("--motion", default="pan", choices=("pan", "zoom", "rotate", "objects"))
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/figures/anchors.jpg"))
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")

    pipe = load_pipeline(args.model)
    clip = camera_clip(load_photo(args.photo), args.motion, frames=args.frames, size=(128, 96))
    gap = 4
    source = _strip(clip, gap)
    width = source.shape[1]
    rows = [_caption(f"source: a {args.motion} over '{args.photo}' (a photograph held out of training)", width), source]
    angles_by_anchors = {}
    for anchors in (0, 3):
        out = pipe(clip, _INSTRUCTION, anchors=anchors, seed=args.seed, noise="per_frame", **RECOMMENDED_GUIDANCE)
        edited = (np.clip(np.asarray(out.frames), 0, 1) * 255).round().astype(np.uint8)
        angles = [hue_rotation_angle(s, e) for s, e in zip(clip, edited)]
        angles_by_anchors[anchors] = angles
        spread = circular_std_degrees(angles)
        name = "frame by frame (K = 0)" if anchors == 0 else f"Fairy (K = {anchors} anchors)"
        text = f"{name}, each frame its own noise: hue angles {', '.join(f'{a:.0f}' for a in angles)} (std {spread:.1f} deg)"
        rows += [_caption(text, width), _strip(edited, gap)]
        print(text)
    picture = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(args.out, quality=90)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return angles_by_anchors


if __name__ == "__main__":
    main()
