"""The frame pass's anchor attention, kernel against kernel: "concat" (a per-frame copy of the anchors' keys
and values, one attention call) and "merged" (two calls merged by log-sum-exp, no copy).

    python bench/bench_anchor_kernel.py [--device cpu] [--dtype fp32] [--frames 4] [--repeats 5]

Times (the best of ``--repeats``) one self-attention layer at the outermost level of an SD1.5-shaped UNet
at 512x384 (64x48 latents: 3072 tokens, 320 channels, 8 heads) reading K = 3 anchors with the three guidance
branches, then one whole frame-pass UNet call at 256x192; prints the largest difference between the two.
"""

from __future__ import annotations

import argparse
import time


def _best(fn, repeats, device) -> float:
    import torch

    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--anchors", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from diffusers.models.attention_processor import Attention

    from fairy.attention import AnchorAttnProcessor, AnchorCache
    from fairy.pipeline import FairyParams, FairyPipeline
    from fairy.tiny import build_sd15_shaped_components

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    branches, tokens, channels = 3, 64 * 48, 320
    attn = Attention(channels, heads=8, dim_head=40).to(device, dtype).eval()
    anchors = torch.randn(branches, args.anchors * tokens, channels, device=device, dtype=dtype)
    frames = torch.randn(branches * args.frames, tokens, channels, device=device, dtype=dtype)
    outputs, layer_times = {}, {}
    for kernel in ("concat", "merged"):
        cache = AnchorCache(store="kv")
        cache.entries[("layer", 0)] = (attn.to_k(anchors), attn.to_v(anchors))
        cache.set_pass("read", step=0, num_branches=branches)
        processor = AnchorAttnProcessor(cache, "layer", kernel)
        with torch.no_grad():
            outputs[kernel] = processor(attn, frames)
            layer_times[kernel] = _best(lambda: processor(attn, frames), args.repeats, device)
    layer_diff = (outputs["concat"].float() - outputs["merged"].float()).abs().max().item()

    pipe = FairyPipeline(**build_sd15_shaped_components()).to(device, dtype=dtype)
    params = FairyParams(steps=1)
    embeds = pipe.encode_instruction("make it a watercolor painting", params)
    y, x = np.mgrid[0:192, 0:256]
    clip = np.asarray([np.stack([x % 256, y % 256, (x + y + 40 * t) % 256], -1) for t in range(args.anchors + args.frames)],
                      np.uint8)
    _, cache = pipe.edit_anchors(clip[: args.anchors], list(range(args.anchors)), embeds, params)
    unet_out, unet_times = {}, {}
    for kernel in ("concat", "merged"):
        pipe.use_anchor_kernel(kernel)
        run = lambda: pipe.edit_frames(clip[args.anchors :], list(range(args.anchors, len(clip))), embeds, params,  # noqa: E731
                                       cache, output_type="pt")
        unet_out[kernel] = run()
        unet_times[kernel] = _best(run, max(1, args.repeats // 2), device)
    unet_diff = (unet_out["concat"].float() - unet_out["merged"].float()).abs().max().item()

    print(f"{device.type}, {args.dtype}, K = {args.anchors}, {args.frames} frames x {branches} branches")
    print(f"one self-attention layer (3072 tokens, 320 ch): concat {layer_times['concat'] * 1000:.1f} ms, "
          f"merged {layer_times['merged'] * 1000:.1f} ms, concat / merged {layer_times['concat'] / layer_times['merged']:.2f}; "
          f"max difference {layer_diff:.2e}")
    print(f"frame pass, 1 step at 256x192 (VAE included): concat {unet_times['concat']:.2f} s, merged "
          f"{unet_times['merged']:.2f} s, concat / merged {unet_times['concat'] / unet_times['merged']:.2f}; "
          f"max pixel difference {unet_diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
