"""Reduced anchors (opt-in, beyond the paper) against the paper's full anchors: speed at real size, and
what it does to the small model's edits.

    python bench/bench_reduced_anchors.py [--device cpu] [--width 256 --height 192] [--frames 4] [--repeats 3]
                                          [--quality-model builtin:small] [--skip-quality]

Speed: an SD1.5-shaped InstructPix2Pix (random weights, the public shapes) runs one frame-pass step over
``--frames`` frames (three guidance branches) reading K = 3 anchors, for full anchors (both kernels) and
anchors pooled 2x2 at the finest self-attention level (``FairyPipeline.use_reduced_anchors(2, "finest")``)
and at every level (``"all"``); against per-frame editing (K = 0) as the baseline, with the anchor cache's
size for each. Quality: the quality bench's moving clips (``bench_quality``) edited by ``--quality-model``
with full and with reduced anchors: warp error, PSNR against the exact edit, the ambiguous edit's hue spread,
and how far reduced anchors move the frames from full anchors against how far full anchors move them from
none (x 1e-3 on [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

_MODES = {"full, concat": ("concat", 1, "finest"), "full, merged": ("merged", 1, "finest"),
          "reduced 2x2, finest level": ("concat", 2, "finest"), "reduced 2x2, every level": ("concat", 2, "all")}


def _speed(args) -> dict:
    import numpy as np
    import torch

    from fairy.pipeline import FairyParams, FairyPipeline
    from fairy.tiny import build_sd15_shaped_components

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from bench_anchor_kernel import _best

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = FairyPipeline(**build_sd15_shaped_components()).to(device, dtype=dtype)
    params = FairyParams(steps=1)
    embeds = pipe.encode_instruction("make it a watercolor painting", params)
    y, x = np.mgrid[0 : args.height, 0 : args.width]
    clip = np.asarray([np.stack([x % 256, y % 256, (x + y + 40 * t) % 256], -1) for t in range(3 + args.frames)], np.uint8)
    rest, indices = clip[3:], list(range(3, len(clip)))
    results = {"per-frame editing (K = 0)": {
        "seconds": _best(lambda: pipe.edit_frames(rest, indices, embeds, params, None, output_type="pt"), args.repeats, device)}}
    for name, (kernel, factor, levels) in _MODES.items():
        pipe.use_anchor_kernel(kernel)
        pipe.use_reduced_anchors(factor, levels)
        _, cache = pipe.edit_anchors(clip[:3], [0, 1, 2], embeds, params)
        run = lambda: pipe.edit_frames(rest, indices, embeds, params, cache, output_type="pt")  # noqa: E731
        results[name] = {"seconds": _best(run, args.repeats, device), "cache_mib": round(cache.nbytes / 2**20, 2),
                         "pooled_layers": len(cache.meta.get("pooled", {}))}
    pipe.use_reduced_anchors(1)
    pipe.use_anchor_kernel("concat")
    baseline = results["per-frame editing (K = 0)"]["seconds"]
    for row in results.values():
        row["over_per_frame"] = round(row["seconds"] / baseline, 3)
        row["seconds"] = round(row["seconds"], 3)
    return results


def _quality(args) -> dict:
    import numpy as np

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from bench_quality import _CLIPS, measure

    from fairy.loading import load_pipeline
    from fairy.training.clips import camera_clip
    from fairy.training.data import load_photo
    from fairy.training.edits import edit_by_name

    pipe = load_pipeline(args.quality_model, device="cpu")
    clips = {(m, p): camera_clip(load_photo(p), m, frames=args.quality_frames, size=(128, 96)) for m, p in _CLIPS}
    edits = [edit_by_name(n) for n in ("night", "sepia", "palette")]
    common = dict(noise=args.noise, model="m", seed=0, frames=args.quality_frames)
    rows = {}
    _, full = measure({"m": pipe}, clips, edits, anchors=3, **common)
    none_row, _ = measure({"m": pipe}, clips, edits, anchors=0, per_frame_outputs=full, **common)
    rows["no anchors (K = 0)"] = none_row
    try:
        for name, factor, levels in (("full anchors", 1, "finest"), ("reduced 2x2, finest level", 2, "finest"),
                                     ("reduced 2x2, every level", 2, "all")):
            pipe.use_reduced_anchors(factor, levels)
            rows[name], _ = measure({"m": pipe}, clips, edits, anchors=3, per_frame_outputs=full, **common)
    finally:
        pipe.use_reduced_anchors(1)
    for row in rows.values():  # "anchor_change" here is the change against full anchors
        row["change_from_full_e3"] = row.pop("anchor_change_e3")
        for key in ("model", "anchors", "noise"):
            row.pop(key)
    return {k: {n: (round(v, 4) if isinstance(v, float) else v) for n, v in r.items()} for k, r in rows.items()} | {
        "clips": len(clips), "frames": args.quality_frames, "noise": args.noise, "model": args.quality_model,
        "mean_full_frame": float(np.mean([f.mean() for f in full.values()]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality-model", default="builtin:small")
    parser.add_argument("--quality-frames", type=int, default=12)
    parser.add_argument("--noise", choices=["per_frame", "shared"], default="per_frame")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/reduced_anchors.json"))
    args = parser.parse_args(argv)
    result = {}
    if not args.skip_speed:
        result["speed"] = _speed(args)
        print(f"{args.device}, {args.dtype}: one frame-pass step over {args.frames} frames x 3 branches at "
              f"{args.width}x{args.height}, SD1.5 shapes, K = 3")
        for name, row in result["speed"].items():
            cache = f", anchor cache {row['cache_mib']} MiB ({row['pooled_layers']} layers pooled)" if "cache_mib" in row else ""
            print(f"  {name:28s} {row['seconds']:8.3f} s  {row['over_per_frame']:.3f}x per-frame editing{cache}")
    if not args.skip_quality:
        result["quality"] = _quality(args)
        print(f"{args.quality_model}, {args.noise} noise, quality bench clips, K = 3:")
        for name, row in result["quality"].items():
            if isinstance(row, dict):
                print(f"  {name:28s} warp {row['warp_error_e3']:6.2f}  PSNR {row['psnr']:.2f}  hue std "
                      f"{row['hue_angle_std']:.1f}  change from full anchors {row['change_from_full_e3']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
