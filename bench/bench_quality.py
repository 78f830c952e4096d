"""The paper's ablation in miniature: per-frame editing vs anchors vs anchors + equivariant finetuning.

    python bench/bench_quality.py [--work-dir build/train-small] [--frames 12] [--edits night,sepia,palette]

Moving clips over the held-out photographs (``fairy.training.clips``: camera
pan, zoom, small rotation, and a pan with objects crossing it), edited with
the small model's edits, whose exact result is known frame by frame. Rows:

* per-frame editing (K = 0), the plain-finetuned model, per-frame noise (each
  frame on its own, as InstructPix2Pix run frame by frame);
* the same with the library's default shared initial noise;
* Fairy (K = 3), the plain-finetuned model (``WORK/plain``: no equivariant
  augmentation, as many steps as the shipped model's finetuning);
* per-frame editing (K = 0) with the equivariant-finetuned model and shared noise, so that the
  anchors' own effect on one model can be read off against the next row;
* Fairy (K = 3), the equivariant-finetuned model (``WORK/equivariant``, shipped as builtin:small).

Columns: warp error (Lai et al. 2018; OpenCV Farneback flow on the input clip,
``fairy.metrics.warp_error``; x 1e-3, images in [0, 1]) over all edits, and
under camera motion alone (pan, zoom, rotate); PSNR against the exact edited
clip (deterministic edits); and, for the ambiguous edit (a hue rotation by a
random angle), the circular standard deviation across a clip's frames of the
angle each frame took (degrees), averaged over clips. The exact edit's own
warp error is printed as the floor.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from fairy.loading import load_pipeline
from fairy.metrics import warp_error
from fairy.training.clips import camera_clip
from fairy.training.data import HELD_OUT_PHOTOS, load_photo
from fairy.training.edits import edit_by_name, hue_rotation_angle
from fairy.training.evaluate import psnr

_CLIPS = (("pan", HELD_OUT_PHOTOS[1]), ("zoom", HELD_OUT_PHOTOS[0]), ("rotate", HELD_OUT_PHOTOS[1]), ("objects", HELD_OUT_PHOTOS[0]))
_CAMERA_ONLY = {"pan", "zoom", "rotate"}


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def circular_std_degrees(angles: list[float]) -> float:
    """Circular standard deviation (degrees) of the angles; frames with no measurable hue are left out."""
    angles = np.asarray(angles, dtype=np.float64)
    angles = angles[np.isfinite(angles)]
    if angles.size < 2:
        return float("nan")
    z = np.exp(1j * np.deg2rad(angles))
    length = min(1.0, float(np.abs(z.mean())))
    return float(np.rad2deg(np.sqrt(-2 * np.log(max(length, 1e-12)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("build/train-small"))
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--edits", default="night,sepia,palette")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/quality.json"))
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    edits = [edit_by_name(n) for n in args.edits.split(",")]
    clips = {(m, p): camera_clip(load_photo(p), m, frames=args.frames, size=(width, height)) for m, p in _CLIPS}
    rows = [
        ("per-frame editing (K = 0), per-frame noise", "plain", 0, "per_frame"),
        ("per-frame editing (K = 0), shared noise", "plain", 0, "shared"),
        ("Fairy (K = 3), no equivariant finetuning", "plain", 3, "shared"),
        ("per-frame editing (K = 0), equivariant finetuning, shared noise", "equivariant", 0, "shared"),
        ("Fairy (K = 3), equivariant finetuning", "equivariant", 3, "shared"),
    ]
    pipes = {name: load_pipeline(str(args.work_dir / name), device="cpu") for name in ("plain", "equivariant")}
    exact_edit = next(e for e in edits if not e.ambiguous)  # an ambiguous edit's exact result flickers by design
    floor = np.mean([warp_error(c, _to_uint8(np.stack([exact_edit.apply(f / 255.0) for f in c]))) for c in clips.values()])
    results = []
    began = time.perf_counter()
    for label, model, anchors, noise in rows:
        warps, camera_warps, psnrs, spreads = [], [], [], []
        for edit in edits:
            for (motion, _), clip in clips.items():
                out = pipes[model](clip, edit.instruction, anchors=anchors, batch_size=args.frames, seed=args.seed, noise=noise)
                edited = np.asarray(out.frames, dtype=np.float32)  # in [0, 1]
                w = warp_error(clip, _to_uint8(edited))
                warps.append(w)
                if motion in _CAMERA_ONLY:
                    camera_warps.append(w)
                if edit.ambiguous:
                    spreads.append(circular_std_degrees([hue_rotation_angle(s, e) for s, e in zip(clip, edited)]))
                else:
                    exact = np.stack([edit.apply(f.astype(np.float32) / 255.0) for f in clip])
                    psnrs.append(float(np.mean([psnr(e, x) for e, x in zip(edited, exact)])))
        row = {
            "row": label, "model": model, "anchors": anchors, "noise": noise,
            "warp_error_e3": 1e3 * float(np.mean(warps)), "camera_warp_error_e3": 1e3 * float(np.mean(camera_warps)),
            "psnr": float(np.mean(psnrs)) if psnrs else None, "hue_angle_std": float(np.mean(spreads)) if spreads else None,
        }  # fmt: skip
        results.append(row)
        print(f"{label:48s} warp {row['warp_error_e3']:6.2f}  camera {row['camera_warp_error_e3']:6.2f}  "
              f"PSNR {row['psnr'] or float('nan'):5.2f}  hue std {row['hue_angle_std'] or float('nan'):6.2f}  "
              f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
    print(f"exact edit ({exact_edit.name}) warp error floor: {1e3 * floor:.2f} x 1e-3")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": results, "floor_warp_error_e3": 1e3 * float(floor), "frames": args.frames,
                                    "size": [width, height], "edits": [e.name for e in edits]}, indent=2))  # fmt: skip
    print("| | warp error x1e-3 (all) | warp error x1e-3 (camera motion) | PSNR dB | hue angle std (deg) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['warp_error_e3']:.2f} | {r['camera_warp_error_e3']:.2f} | "
              f"{r['psnr']:.2f} | {r['hue_angle_std']:.1f} |")


if __name__ == "__main__":
    main()
