"""Reduced anchors (opt-in, beyond the paper): anchor tokens averaged over f x f blocks with log(f^2) added
to their scores, at the finest or every self-attention level; exact where the pooled tokens agree, smaller
caches, and a cache that says itself how it was pooled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from fairy.attention import AnchorAttnProcessor, AnchorCache, layer_scale, self_attention_layers
from fairy.pipeline import FairyParams


def _write_then_read(pool: int, anchor_grid: torch.Tensor, frames: torch.Tensor, attn, *, store: str) -> torch.Tensor:
    """One layer: the anchor pass writes ``anchor_grid`` ([K, h, w, C] tokens), then ``frames`` read it."""
    anchors, height, width, channels = anchor_grid.shape
    cache = AnchorCache(store=store, meta={"anchor_indices": list(range(anchors)), "latent_size": [height, width]})
    processor = AnchorAttnProcessor(cache, "layer", "concat", pool)
    with torch.no_grad():
        cache.set_pass("write", step=0, num_branches=1)
        processor(attn, anchor_grid.reshape(anchors, height * width, channels))
        cache.set_pass("read", step=0, num_branches=1)
        return processor(attn, frames), cache


@pytest.mark.parametrize("store", ["kv", "hidden"])
def test_pooled_anchors_equal_full_ones_where_the_pooled_tokens_agree(store):
    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8).eval()
    # Anchor token grids that are constant over 2x2 blocks: pooling loses nothing, the bias accounts for the count.
    blocky = torch.randn(2, 4, 3, 16).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    frames = torch.randn(3, 48, 16)
    full, full_cache = _write_then_read(1, blocky, frames, attn, store=store)
    pooled, pooled_cache = _write_then_read(2, blocky, frames, attn, store=store)
    assert torch.allclose(full, pooled, atol=1e-5)
    assert pooled_cache.nbytes * 4 == full_cache.nbytes and pooled_cache.pool_factor("layer") == 2
    # On tokens that differ inside a block it is an approximation, not the same attention.
    rough = torch.randn(2, 8, 6, 16)
    assert not torch.allclose(_write_then_read(1, rough, frames, attn, store=store)[0],
                              _write_then_read(2, rough, frames, attn, store=store)[0], atol=1e-3)


def test_a_grid_the_factor_does_not_divide_is_kept_whole():
    attn = Attention(16, heads=2, dim_head=8).eval()
    grid, frames = torch.randn(1, 5, 6, 16), torch.randn(1, 30, 16)
    kept, cache = _write_then_read(2, grid, frames, attn, store="kv")
    assert cache.pool_factor("layer") == 1 and "pooled" not in cache.meta
    assert torch.equal(kept, _write_then_read(1, grid, frames, attn, store="kv")[0])


def test_layer_scales_follow_the_unet_blocks(tiny_pipe):
    layers = self_attention_layers(tiny_pipe.unet)
    scales = {name.split(".attentions")[0]: layer_scale(tiny_pipe.unet, name) for name in layers}
    levels = len(tiny_pipe.unet.config.block_out_channels)
    assert scales["mid_block"] == 2 ** (levels - 1)
    for name, scale in scales.items():
        if name.startswith("down_blocks."):
            assert scale == 2 ** int(name.split(".")[1])


def _clip() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return np.asarray([np.stack([x * 3 % 256, y * 2 % 256, (x + y + 30 * t) % 256], -1) for t in range(5)], np.uint8)


@pytest.mark.parametrize("levels", ["finest", "all"])
def test_the_pipeline_edits_with_reduced_anchors_and_a_cache_that_says_so(tiny_pipe, tmp_path, levels):
    params = FairyParams(steps=2)
    embeds = tiny_pipe.encode_instruction("make it red", params)
    frames = _clip()
    edits = {}
    try:
        for mode in ("full", "reduced"):
            tiny_pipe.use_reduced_anchors(2 if mode == "reduced" else 1, levels)
            _, cache = tiny_pipe.edit_anchors(frames[:2], [0, 1], embeds, params)
            edits[mode] = tiny_pipe.edit_frames(frames[2:], [2, 3, 4], embeds, params, cache, output_type="pt")
            if mode == "reduced":
                pooled = cache.meta["pooled"]
                finest = min(layer_scale(tiny_pipe.unet, name) for name in self_attention_layers(tiny_pipe.unet))
                scales = {layer_scale(tiny_pipe.unet, name + ".processor") for name in pooled}
                assert scales == ({finest} if levels == "finest" else scales) and pooled
                if levels == "all":
                    assert len(pooled) == len(self_attention_layers(tiny_pipe.unet))
                cache.save(tmp_path / "cache.safetensors")
        # Another worker whose pipeline has no reduced anchors reads the pooled cache as it was made.
        tiny_pipe.use_reduced_anchors(1)
        loaded = AnchorCache.load(tmp_path / "cache.safetensors")
        again = tiny_pipe.edit_frames(frames[2:], [2, 3, 4], embeds, params, loaded, output_type="pt")
        assert (again - edits["reduced"]).abs().max().item() < 1e-5
    finally:
        tiny_pipe.use_reduced_anchors(1)
    # An approximation (how good, on a trained model: bench/bench_reduced_anchors.py; random weights say nothing).
    assert not torch.equal(edits["full"], edits["reduced"])


def test_reduced_anchor_options_are_checked(tiny_pipe):
    with pytest.raises(ValueError, match="factor must be 1 or more"):
        tiny_pipe.use_reduced_anchors(0)
    with pytest.raises(ValueError, match='levels must be "finest" or "all"'):
        tiny_pipe.use_reduced_anchors(2, "outer")
