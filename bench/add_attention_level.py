"""Copy a model folder, giving its UNet self- and cross-attention at more levels (an experiment, not the recipe).

    python bench/add_attention_level.py MODEL OUTPUT [--levels 1]

The small model has attention only at 1/4 and 1/8 of the image side, where a
frame's query can carry a global choice from its anchors (which palette) but
not the fine detail at the corresponding place (docs/method.md). The paper
found cross-frame attention tracks correspondences best in the outermost
layers. This adds attention at the given levels of the UNet (0: full
resolution, 1: half; 1 costs 3072 tokens a frame at 128x96, 0 four times
that), keeps every trained weight, and zeroes the new blocks' output
projections, so the copy computes exactly what the original does until it is
trained (``fairy train --anchors 3 --base OUTPUT ...``; docs/method.md has
the commands and what it measured).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

import torch
from fairy_proto.files import atomic_path


def with_attention_at(unet, levels: list[int]):
    """A new UNet like ``unet`` with attention blocks at ``levels`` too, its weights copied, the new blocks' output zero."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    last = len(down) - 1
    for level in levels:
        if not 0 <= level <= last:
            raise ValueError(f"level {level} is not one of the UNet's levels 0 to {last}")
        down[level], up[last - level] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
    config["down_block_types"], config["up_block_types"] = tuple(down), tuple(up)
    widened = UNet2DConditionModel.from_config(config)
    missing, unexpected = widened.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(".attentions." not in key for key in missing):
        raise ValueError(f"the UNet's weights do not carry over: unexpected {unexpected[:3]}, missing {missing[:3]}")
    new_blocks = [f"down_blocks.{level}." for level in levels] + [f"up_blocks.{last - level}." for level in levels]
    for name, module in widened.named_modules():
        if name.endswith("proj_out") and name.startswith(tuple(new_blocks)):
            torch.nn.init.zeros_(module.weight)  # the residual path alone: the original's output
            torch.nn.init.zeros_(module.bias)
    return widened.eval()


def main(argv: list[str] | None = None) -> None:
    from diffusers import UNet2DConditionModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=pathlib.Path, help="a diffusers model folder (a stage of fairy train-small)")
    parser.add_argument("output", type=pathlib.Path, help="the new folder (must not exist)")
    parser.add_argument("--levels", default="1", help="comma-separated UNet levels (0 = full resolution)")
    args = parser.parse_args(argv)
    if args.output.exists():
        parser.error(f"{args.output} exists; give a new folder")
    widened = with_attention_at(UNet2DConditionModel.from_pretrained(args.model / "unet"),
                                [int(level) for level in args.levels.split(",")])  # fmt: skip
    with atomic_path(args.output) as partial:  # renamed onto OUTPUT when complete, removed if anything fails
        shutil.copytree(args.model, partial, ignore=shutil.ignore_patterns("unet"))
        widened.save_pretrained(partial / "unet")
    print(f"wrote {args.output}: attention added at levels {args.levels} "
          f"({sum(p.numel() for p in widened.parameters()) / 1e6:.2f}M parameters)")


if __name__ == "__main__":
    main()
