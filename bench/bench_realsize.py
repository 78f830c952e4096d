"""The real-size check: an SD1.5-shaped InstructPix2Pix (random weights, public shapes) edits 2 frames at 512x384.

    python bench/bench_realsize.py [--steps 10] [--device cpu]

One anchor (frame 1) and one frame-pass frame (frame 0). Reports the time of
each pass, the peak resident memory, the anchor cache size (both stores) and
what it comes to per anchor, step and branch in fp16 and for the paper's
setting (3 anchors x 10 steps x 3 branches); then the time of one frame-pass
UNet call with anchors over one without (the anchor overhead at real size).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from fairy.pipeline import FairyParams, FairyPipeline
from fairy.tiny import build_sd15_shaped_components


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    began = time.perf_counter()
    pipe = FairyPipeline(**build_sd15_shaped_components()).to(args.device)
    built = time.perf_counter() - began
    y, x = np.mgrid[0:384, 0:512]
    clip = np.asarray([np.stack([x % 256, y % 256, (x + y + 40 * t) % 256], -1) for t in range(2)], np.uint8)
    params = FairyParams(steps=args.steps)
    embeds = pipe.encode_instruction("make it a watercolor painting", params)

    sizes = {}
    timings = {}
    for store in ("hidden", "kv"):
        pipe.use_cache_store(store)
        t0 = time.perf_counter()
        _, cache = pipe.edit_anchors(clip[1:2], [1], embeds, params)
        t1 = time.perf_counter()
        pipe.edit_frames(clip[0:1], [0], embeds, params, cache)
        t2 = time.perf_counter()
        sizes[store] = cache.nbytes
        timings[store] = (t1 - t0, t2 - t1)
        del cache
    t0 = time.perf_counter()
    pipe.edit_frames(clip[0:1], [0], embeds, params, None)
    per_frame_only = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    branches, steps = params.num_branches, args.steps
    print(f"SD1.5-shaped InstructPix2Pix (random weights), 2 frames 512x384, {steps} steps, {branches} branches, "
          f"device {args.device}, {torch.get_num_threads()} threads; built in {built:.0f} s")
    print(f"peak resident memory {peak:.0f} MiB")
    for store in ("hidden", "kv"):
        unit = sizes[store] / (steps * branches) / 2  # one anchor: per step and branch, fp32 -> fp16
        print(f"cache '{store}': {sizes[store] / 2**20:.0f} MiB fp32 for 1 anchor; {unit / 2**20:.1f} MiB fp16 per anchor, "
              f"step and branch; 3 anchors x 10 steps x 3 branches fp16 = {unit * 90 / 2**30:.2f} GiB; "
              f"anchor pass {timings[store][0]:.1f} s, frame pass {timings[store][1]:.1f} s")
    for store in ("hidden", "kv"):
        print(f"frame with 1 anchor ({store}) over frame alone: {timings[store][1] / per_frame_only:.3f} "
              f"({per_frame_only:.1f} s alone)")
    unet_call_ratios(pipe, clip, embeds)


@torch.no_grad()
def unet_call_ratios(pipe: FairyPipeline, clip: np.ndarray, embeds: torch.Tensor, anchors: int = 3) -> None:
    """One UNet call for one frame (3 branches) reading K = 3 anchors, over the same call without anchors."""
    latents = pipe._encode_frames(clip[:1])
    branches = embeds.shape[0]
    sample = torch.cat([torch.randn_like(latents).repeat(branches, 1, 1, 1), latents.repeat(branches, 1, 1, 1)], 1)
    t = pipe.scheduler.timesteps[0] if len(pipe.scheduler.timesteps) else torch.tensor(999)
    for store in ("hidden", "kv"):
        pipe.use_cache_store(store)
        cache = pipe.anchor_cache
        cache.set_pass("write", step=0, num_branches=branches)
        anchor_sample = torch.cat([sample[b:b + 1].repeat(anchors, 1, 1, 1) for b in range(branches)])
        pipe.unet(anchor_sample, t, encoder_hidden_states=embeds.repeat_interleave(anchors, 0))
        timings = {}
        for mode in ("off", "read", "off", "read"):
            cache.set_pass(mode, step=0, num_branches=branches)
            began = time.perf_counter()
            pipe.unet(sample, t, encoder_hidden_states=embeds)
            timings[mode] = min(timings.get(mode, float("inf")), time.perf_counter() - began)
        cache.set_pass("off")
        print(f"one UNet call, 1 frame x {branches} branches, reading K={anchors} anchors ({store}) over none: "
              f"{timings['read'] / timings['off']:.3f} ({timings['off']:.1f} s without)")


if __name__ == "__main__":
    main()
