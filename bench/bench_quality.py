"""The paper's ablation in miniature: per-frame editing vs anchors vs anchors + equivariant finetuning.

    python bench/bench_quality.py [--work-dir build/train-small] [--frames 12] [--edits night,sepia,palette]

Moving clips over the held-out photographs (``fairy.training.clips``: camera
pan, zoom, small rotation, and a pan with objects crossing it), edited with
the small model's edits, whose exact result is known frame by frame, at the
guidance the small model's recipe recommends. Two models from one recipe run
(``fairy train-small``), both given anchored training (``fairy train
--anchors 3``): ``WORK/anchored-plain`` (finetuned without the equivariant
augmentation: the control) and ``WORK/anchored`` (with it: the shipped
model), each with K = 0 (per-frame editing) and K = 3 (Fairy), under both
noise policies: per-frame initial noise (each frame's own, from the seed and
its index: what editing frame by frame does) and shared initial noise (the
library's default).

Columns: warp error (Lai et al. 2018; OpenCV Farneback flow on the input clip,
``fairy.metrics.warp_error``; x 1e-3, images in [0, 1]) over all edits, under
camera motion alone (pan, zoom, rotate), and for the ambiguous edit alone;
PSNR against the exact edited clip (deterministic edits); for the ambiguous
edit (a hue rotation by a random angle) the circular standard deviation
across a clip's frames of the angle each frame took (degrees), averaged over
clips; and what the anchors change: the mean absolute difference (x 1e-3, on
[0, 1]) between a K = 3 row's frames and the same model's K = 0 frames. The
exact edit's own warp error is printed as the floor, and the issue's targets
are checked at the end.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from fairy.loading import load_pipeline
from fairy.metrics import circular_std_degrees, warp_error
from fairy.training.clips import camera_clip
from fairy.training.data import HELD_OUT_PHOTOS, load_photo
from fairy.training.edits import edit_by_name, hue_rotation_angle
from fairy.training.evaluate import psnr
from fairy.training.recipe import RECOMMENDED_GUIDANCE

_CLIPS = (("pan", HELD_OUT_PHOTOS[1]), ("zoom", HELD_OUT_PHOTOS[0]), ("rotate", HELD_OUT_PHOTOS[1]), ("objects", HELD_OUT_PHOTOS[0]))
_CAMERA_ONLY = {"pan", "zoom", "rotate"}
_MODELS = {"plain": "no equivariant finetuning", "equivariant": "equivariant finetuning"}


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def measure(pipes: dict, clips: dict, edits: list, *, anchors: int, noise: str, model: str, seed: int, frames: int,
            per_frame_outputs: dict | None = None) -> tuple[dict, dict]:
    """One row: its numbers, and the frames it made (keyed by edit and clip) for the anchor-effect column."""
    warps, camera_warps, ambiguous_warps, psnrs, spreads, changes = [], [], [], [], [], []
    outputs = {}
    for edit in edits:
        for (motion, photo), clip in clips.items():
            out = pipes[model](clip, edit.instruction, anchors=anchors, batch_size=frames, seed=seed, noise=noise,
                               **RECOMMENDED_GUIDANCE)  # fmt: skip
            edited = np.asarray(out.frames, dtype=np.float32)  # in [0, 1]
            outputs[edit.name, motion, photo] = edited
            w = warp_error(clip, _to_uint8(edited))
            warps.append(w)
            if motion in _CAMERA_ONLY:
                camera_warps.append(w)
            if per_frame_outputs is not None:
                changes.append(float(np.abs(edited - per_frame_outputs[edit.name, motion, photo]).mean()))
            if edit.ambiguous:
                ambiguous_warps.append(w)
                spreads.append(circular_std_degrees([hue_rotation_angle(s, e) for s, e in zip(clip, edited)]))
            else:
                exact = np.stack([edit.apply(f.astype(np.float32) / 255.0) for f in clip])
                psnrs.append(float(np.mean([psnr(e, x) for e, x in zip(edited, exact)])))
    row = {
        "model": model, "anchors": anchors, "noise": noise,
        "warp_error_e3": 1e3 * float(np.mean(warps)), "camera_warp_error_e3": 1e3 * float(np.mean(camera_warps)),
        "ambiguous_warp_error_e3": 1e3 * _mean(ambiguous_warps) if ambiguous_warps else None,
        "psnr": _mean(psnrs), "hue_angle_std": _mean(spreads),
        "anchor_change_e3": 1e3 * _mean(changes) if changes else None,
    }  # fmt: skip
    return row, outputs


def label(row: dict) -> str:
    kind = "per-frame editing (K = 0)" if row["anchors"] == 0 else f"Fairy (K = {row['anchors']})"
    noise = "per-frame noise" if row["noise"] == "per_frame" else "shared noise"
    return f"{kind}, {_MODELS[row['model']]}, {noise}"


def _shown(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def check_targets(rows: list[dict], noise: str) -> list[str]:
    """The issue's targets, for one noise policy: lines saying each ratio and whether it is met."""
    find = {(r["model"], r["anchors"]): r for r in rows if r["noise"] == noise}
    per_frame, fairy, finetuned = find["plain", 0], find["plain", 3], find["equivariant", 3]
    lines = []

    def ratio(name: str, a: dict, b: dict, key: str, limit: float) -> None:
        if a[key] is None or b[key] is None or not b[key]:
            return
        value = a[key] / b[key]
        lines.append(f"{name}: {value:.2f} (target at most {limit}) {'met' if value <= limit else 'NOT met'}")

    ratio("warp error, Fairy over per-frame editing", fairy, per_frame, "warp_error_e3", 0.5)
    ratio("warp error, Fairy + equivariant finetuning over per-frame editing", finetuned, per_frame, "warp_error_e3", 0.5)
    lower = finetuned["camera_warp_error_e3"] < fairy["camera_warp_error_e3"]
    lines.append(f"camera-motion warp error, finetuned {finetuned['camera_warp_error_e3']:.2f} against "
                 f"{fairy['camera_warp_error_e3']:.2f} without (target: lower) {'met' if lower else 'NOT met'}")
    ratio("ambiguous edit's answer spread, Fairy over per-frame editing", fairy, per_frame, "hue_angle_std", 0.2)
    ratio("ambiguous edit's answer spread, Fairy + finetuning over per-frame editing", finetuned, per_frame,
          "hue_angle_std", 0.2)
    if finetuned["psnr"] is not None and per_frame["psnr"] is not None:
        gap = finetuned["psnr"] - per_frame["psnr"]
        lines.append(f"PSNR, Fairy + finetuning minus per-frame editing: {gap:+.2f} dB (target at least -0.5) "
                     f"{'met' if gap >= -0.5 else 'NOT met'}")
    return lines


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the clips and edits (shared with bench_consistency)."""
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--edits", default="night,sepia,palette")
    parser.add_argument("--motions", default=",".join(m for m, _ in _CLIPS), help="which of the four clips to edit")
    parser.add_argument("--seed", type=int, default=0)


def clips_and_edits(args: argparse.Namespace) -> tuple[dict, list, list[str], tuple[int, int]]:
    """The clips (keyed by motion and photo), the edits, the motions and the size the options ask for."""
    width, height = map(int, args.size.split("x"))
    edits = [edit_by_name(n) for n in args.edits.split(",")]
    wanted = args.motions.split(",")
    clips = {(m, p): camera_clip(load_photo(p), m, frames=args.frames, size=(width, height)) for m, p in _CLIPS if m in wanted}
    return clips, edits, wanted, (width, height)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=pathlib.Path, default=pathlib.Path("build/train-small"))
    parser.add_argument("--plain", help="the control model (default WORK/anchored-plain)")
    parser.add_argument("--equivariant", help="the equivariant-finetuned model (default WORK/anchored)")
    add_clip_arguments(parser)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/quality.json"))
    args = parser.parse_args(argv)
    clips, edits, wanted, (width, height) = clips_and_edits(args)
    models = {"plain": args.plain or str(args.work_dir / "anchored-plain"),
              "equivariant": args.equivariant or str(args.work_dir / "anchored")}
    pipes = {name: load_pipeline(path, device="cpu") for name, path in models.items()}
    exact_edit = next(e for e in edits if not e.ambiguous)  # an ambiguous edit's exact result flickers by design
    floor = np.mean([warp_error(c, _to_uint8(np.stack([exact_edit.apply(f / 255.0) for f in c]))) for c in clips.values()])
    rows = []
    began = time.perf_counter()
    for noise in ("per_frame", "shared"):
        for model in models:
            per_frame_outputs = None
            for anchors in (0, 3):
                row, outputs = measure(pipes, clips, edits, anchors=anchors, noise=noise, model=model, seed=args.seed,
                                       frames=args.frames, per_frame_outputs=per_frame_outputs)  # fmt: skip
                per_frame_outputs = outputs
                row["row"] = label(row)
                rows.append(row)
                print(f"{row['row']:70s} warp {row['warp_error_e3']:6.2f}  camera {row['camera_warp_error_e3']:6.2f}  "
                      f"PSNR {_shown(row['psnr'])}  hue std {_shown(row['hue_angle_std'], 1)}  "
                      f"anchor change {_shown(row['anchor_change_e3'], 1)}  ({time.perf_counter() - began:.0f} s)",
                      flush=True)  # fmt: skip
    targets = {noise: check_targets(rows, noise) for noise in ("per_frame", "shared")}
    result = {"rows": rows, "floor_warp_error_e3": 1e3 * float(floor), "frames": args.frames, "size": [width, height],
              "edits": [e.name for e in edits], "motions": wanted, "models": models, "guidance": RECOMMENDED_GUIDANCE,
              "targets": targets, "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"exact edit ({exact_edit.name}) warp error floor: {1e3 * floor:.2f} x 1e-3")
    print("| row | warp error x1e-3 (all) | (camera motion) | (ambiguous edit) | PSNR dB | hue angle std (deg) | "
          "anchor change x1e-3 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['warp_error_e3']:.2f} | {r['camera_warp_error_e3']:.2f} | "
              f"{_shown(r['ambiguous_warp_error_e3'])} | {_shown(r['psnr'])} | {_shown(r['hue_angle_std'], 1)} | "
              f"{_shown(r['anchor_change_e3'], 1)} |")
    for noise, lines in targets.items():
        print(f"targets ({noise.replace('_', '-')} noise):")
        for line in lines:
            print(f"  {line}")
    return result


if __name__ == "__main__":
    main()
