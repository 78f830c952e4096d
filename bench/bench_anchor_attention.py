"""How much a model's frames listen to their anchors: the share of each self-attention layer's attention that
frame-pass queries give the anchor tokens, against the anchors' share of the keys.

    python bench/bench_anchor_attention.py [--model builtin:small] [--frames 6] [--instruction "..."] [--device cuda]

A frame's query attends to ``[its own N tokens ; the K anchors' K N tokens]``. Attention that ignores
content (the same weight on every key) gives the anchors exactly ``K / (K + 1)`` of it: 0.75 for K = 3.
Attention that tracks correspondences, as Stable Diffusion's does, concentrates on the matching tokens of
each frame, so its share says nothing by itself; what matters then is whether the values it fetches carry
the edit's choices, which the second number measures: how far K = 3 moves a frame from its K = 0 (per-frame)
edit, and how far frame-by-frame noise moves it (the same frame, per-frame against shared initial noise).

The shares come from the log-sum-exps of the frame pass's merged kernel (``fairy.attention``): the weight a
query puts on the anchors is ``exp(lse_anchors - logaddexp(lse_own, lse_anchors))``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import torch

from fairy import attention
from fairy.loading import load_pipeline
from fairy.training.clips import camera_clip
from fairy.training.data import HELD_OUT_PHOTOS, load_photo


def _recording_kernel(shares: list[tuple[int, float]]):
    """The merged kernel, also recording (tokens per frame, mean anchor share) of each call."""
    kernel = attention._merged_anchor_attention

    def recorded(query, key, value, anchor_key, anchor_value, branches, anchor_bias=0.0):
        _, own_lse = attention._attention_with_lse(query, key, value)
        batch, heads, tokens, dim = query.shape
        folded = query.view(branches, batch // branches, heads, tokens, dim).transpose(1, 2)
        _, anchor_lse = attention._attention_with_lse(folded.reshape(branches, heads, -1, dim), anchor_key, anchor_value)
        anchor_lse = anchor_lse.view(branches, heads, batch // branches, tokens).transpose(1, 2).reshape(own_lse.shape)
        anchor_lse = anchor_lse + anchor_bias
        shares.append((tokens, float(torch.exp(anchor_lse - torch.logaddexp(own_lse, anchor_lse)).mean())))
        return kernel(query, key, value, anchor_key, anchor_value, branches, anchor_bias)

    return recorded


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:small")
    parser.add_argument("--instruction", default="give it a new color palette")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--anchors", type=int, default=3)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/anchor_attention.json"))
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    clip = camera_clip(load_photo(HELD_OUT_PHOTOS[1]), "pan", frames=args.frames, size=(width, height))
    pipe = load_pipeline(args.model, device=args.device)
    pipe.use_anchor_kernel("merged")

    def edit(anchors: int, noise: str) -> np.ndarray:
        return np.asarray(pipe(clip, args.instruction, anchors=anchors, batch_size=args.frames, noise=noise).frames)

    shares: list[tuple[int, float]] = []
    original, attention._merged_anchor_attention = attention._merged_anchor_attention, _recording_kernel(shares)
    try:
        fairy = edit(args.anchors, "per_frame")
    finally:
        attention._merged_anchor_attention = original
    per_frame = edit(0, "per_frame")
    shared = edit(0, "shared")
    by_layer: dict[int, list[float]] = {}
    for tokens, share in shares:
        by_layer.setdefault(tokens, []).append(share)
    result = {
        "model": args.model, "instruction": args.instruction, "anchors": args.anchors,
        "uniform_share": args.anchors / (args.anchors + 1),
        "anchor_share_by_tokens": {str(t): float(np.mean(s)) for t, s in sorted(by_layer.items(), reverse=True)},
        "anchor_change": float(np.abs(fairy - per_frame).mean()),
        "noise_change": float(np.abs(shared - per_frame).mean()),
    }  # fmt: skip
    print(f"{args.model}, K = {args.anchors}: share of frame-pass attention on the anchors (content-blind: "
          f"{result['uniform_share']:.2f})")
    for tokens, share in result["anchor_share_by_tokens"].items():
        print(f"  layers with {tokens:>5s} tokens a frame: {share:.3f}")
    print(f"mean change of a frame (on [0, 1]): K = {args.anchors} against K = 0 {result['anchor_change']:.4f}; "
          f"shared against per-frame initial noise {result['noise_change']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
