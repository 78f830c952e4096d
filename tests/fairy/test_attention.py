"""AnchorAttnProcessor against attention computed by hand, and the cache's life cycle."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from fairy.attention import AnchorAttnProcessor, AnchorCache, set_anchor_attention
from fairy.tiny import build_tiny_components

TOKENS, CHANNELS, HEADS = 6, 16, 2


def _attention_layer(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    layer = Attention(query_dim=CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS)
    return layer.eval()


def _by_hand(layer: Attention, queries_from: torch.Tensor, keys_from: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head, then the output projection; one sequence, no batch."""
    q, k, v = layer.to_q(queries_from), layer.to_k(keys_from), layer.to_v(keys_from)
    d = CHANNELS // HEADS
    heads = []
    for h in range(HEADS):
        qh, kh, vh = (x[:, h * d : (h + 1) * d] for x in (q, k, v))
        heads.append(torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1) @ vh)
    return layer.to_out[0](torch.cat(heads, dim=-1))


@torch.no_grad()
def test_off_mode_is_standard_self_attention():
    layer = _attention_layer()
    x = torch.randn(3, TOKENS, CHANNELS)
    cache = AnchorCache()
    ours = AnchorAttnProcessor(cache, "layer")(layer, x)
    reference = AttnProcessor2_0()(layer, x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    for b in range(3):
        torch.testing.assert_close(ours[b], _by_hand(layer, x[b], x[b]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("store", ["hidden", "kv"])
@torch.no_grad()
def test_anchor_and_frame_passes_match_the_concatenated_formula(store):
    layer = _attention_layer(1)
    branches, anchors, frames = 2, 3, 2
    anchor_x = torch.randn(branches * anchors, TOKENS, CHANNELS)
    frame_x = torch.randn(branches * frames, TOKENS, CHANNELS)
    cache = AnchorCache(store=store)
    processor = AnchorAttnProcessor(cache, "layer")

    cache.set_pass("write", step=4, num_branches=branches)
    anchor_out = processor(layer, anchor_x)
    cache.set_pass("read", step=4, num_branches=branches)
    frame_out = processor(layer, frame_x)

    for b in range(branches):
        branch_anchors = anchor_x[b * anchors : (b + 1) * anchors].reshape(-1, CHANNELS)
        for a in range(anchors):
            # Each anchor attends to the tokens of all K anchors of its branch.
            expected = _by_hand(layer, anchor_x[b * anchors + a], branch_anchors)
            torch.testing.assert_close(anchor_out[b * anchors + a], expected, rtol=0, atol=1e-5)
        for f in range(frames):
            own = frame_x[b * frames + f]
            # A frame attends to [its own tokens ; the anchors of its branch, same layer and step].
            expected = _by_hand(layer, own, torch.cat([own, branch_anchors]))
            torch.testing.assert_close(frame_out[b * frames + f], expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_frame_pass_reads_the_step_it_is_told():
    layer = _attention_layer(2)
    cache = AnchorCache()
    processor = AnchorAttnProcessor(cache, "layer")
    anchors_step0, anchors_step1 = torch.randn(2, 1, TOKENS, CHANNELS)
    cache.set_pass("write", step=0)
    processor(layer, anchors_step0)
    cache.set_pass("write", step=1)
    processor(layer, anchors_step1)
    frame = torch.randn(1, TOKENS, CHANNELS)
    cache.set_pass("read", step=0)
    at_step0 = processor(layer, frame)
    expected = _by_hand(layer, frame[0], torch.cat([frame[0], anchors_step0[0]]))
    torch.testing.assert_close(at_step0[0], expected, rtol=0, atol=1e-5)
    cache.set_pass("read", step=2)
    with pytest.raises(RuntimeError, match="step 2"):
        processor(layer, frame)


def test_hidden_store_takes_half_the_memory_of_kv():
    layer = _attention_layer()
    sizes = {}
    for store in ("hidden", "kv"):
        cache = AnchorCache(store=store)
        cache.set_pass("write", step=0, num_branches=3)
        with torch.no_grad():
            AnchorAttnProcessor(cache, "layer")(layer, torch.randn(9, TOKENS, CHANNELS))
        sizes[store] = cache.nbytes
    assert sizes["kv"] == 2 * sizes["hidden"] == 2 * 9 * TOKENS * CHANNELS * 4


@pytest.mark.parametrize("store", ["hidden", "kv"])
def test_cache_saves_and_loads(tmp_path, store):
    layer = _attention_layer()
    cache = AnchorCache(store=store, meta={"anchor_indices": [1, 5], "seed": 3})
    cache.set_pass("write", step=2, num_branches=1)
    with torch.no_grad():
        AnchorAttnProcessor(cache, "down.0.attn1")(layer, torch.randn(2, TOKENS, CHANNELS))
    cache.save(tmp_path / "cache.safetensors")
    loaded = AnchorCache.load(tmp_path / "cache.safetensors")
    assert loaded.store == store and loaded.meta == cache.meta
    assert loaded.entries.keys() == cache.entries.keys()
    for key, value in cache.entries.items():
        for a, b in zip(value if isinstance(value, tuple) else (value,), loaded.entries[key] if isinstance(loaded.entries[key], tuple) else (loaded.entries[key],)):
            assert torch.equal(a, b)


def test_every_self_attention_layer_is_replaced_and_cross_attention_kept():
    unet = build_tiny_components()["unet"]
    before = dict(unet.attn_processors)
    layers = set_anchor_attention(unet, AnchorCache())
    after = unet.attn_processors
    self_layers = [n for n in after if n.endswith("attn1.processor")]
    assert sorted(layers) == sorted(self_layers)
    assert any(n.startswith("down_blocks") for n in layers)
    assert any(n.startswith("mid_block") for n in layers)
    assert any(n.startswith("up_blocks") for n in layers)
    for name, processor in after.items():
        if name.endswith("attn1.processor"):
            assert isinstance(processor, AnchorAttnProcessor)
        else:
            assert type(processor) is type(before[name])


def test_bad_cache_settings_are_refused():
    with pytest.raises(ValueError, match="store"):
        AnchorCache(store="everything")
    with pytest.raises(ValueError, match="mode"):
        AnchorCache().set_pass("sideways")
