"""The two frame-pass anchor attention kernels ("concat": a per-frame copy of the anchors, one call;
"merged": two calls merged by log-sum-exp, no copy) compute the same attention, and bench/gpu_fairy.py runs
on the CPU and reports what it says it does."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from fairy.attention import AnchorAttnProcessor, AnchorCache
from fairy.pipeline import FairyParams


@pytest.mark.parametrize("branches, frames, anchors", [(3, 2, 3), (1, 3, 1), (3, 1, 2)])
def test_merged_equals_concat_on_one_layer(branches, frames, anchors):
    torch.manual_seed(branches * 10 + frames)
    attn = Attention(32, heads=4, dim_head=8).eval()
    tokens = 48
    anchor_states = torch.randn(branches, anchors * tokens, 32)
    hidden = torch.randn(branches * frames, tokens, 32)
    outputs = {}
    for kernel in ("concat", "merged"):
        cache = AnchorCache(store="hidden")
        cache.entries[("layer", 0)] = anchor_states
        cache.set_pass("read", step=0, num_branches=branches)
        with torch.no_grad():
            outputs[kernel] = AnchorAttnProcessor(cache, "layer", kernel)(attn, hidden)
    assert torch.allclose(outputs["concat"], outputs["merged"], atol=1e-5, rtol=1e-4)
    # Each frame really reads its own branch's anchors: other anchors give another answer.
    cache.entries[("layer", 0)] = anchor_states.flip(0) if branches > 1 else anchor_states * 2
    with torch.no_grad():
        changed = AnchorAttnProcessor(cache, "layer", "merged")(attn, hidden)
    assert not torch.allclose(changed, outputs["merged"], atol=1e-3)


def test_an_unknown_kernel_is_named():
    with pytest.raises(ValueError, match="kernel must be one of"):
        AnchorAttnProcessor(AnchorCache(), "layer", "fast")


def test_the_pipeline_edits_the_same_frames_with_either_kernel(tiny_pipe):
    params = FairyParams(steps=2)
    embeds = tiny_pipe.encode_instruction("make it red", params)
    y, x = np.mgrid[0:64, 0:96]
    frames = np.asarray([np.stack([x * 2 % 256, y * 3 % 256, (x + y + 40 * t) % 256], -1) for t in range(5)], np.uint8)
    _, cache = tiny_pipe.edit_anchors(frames[:2], [0, 1], embeds, params)
    try:
        concat = tiny_pipe.edit_frames(frames[2:], [2, 3, 4], embeds, params, cache, output_type="pt")
        tiny_pipe.use_anchor_kernel("merged")
        assert tiny_pipe.anchor_kernel == "merged"
        merged = tiny_pipe.edit_frames(frames[2:], [2, 3, 4], embeds, params, cache, output_type="pt")
    finally:
        tiny_pipe.use_anchor_kernel("concat")
    assert (concat - merged).abs().max().item() < 1e-4
    assert not torch.equal(concat, tiny_pipe.edit_frames(frames[2:], [2, 3, 4], embeds, params, None, output_type="pt"))


@pytest.mark.slow
@pytest.mark.parametrize("options", [[], ["--kernel", "merged", "--channels-last", "--reduced-anchors", "finest",
                                          "--no-overlap-io", "--vae-tiling"]])
def test_gpu_bench_runs_on_the_cpu(tmp_path, monkeypatch, options):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import gpu_fairy

    out = tmp_path / "results.json"
    assert gpu_fairy.main(["--device", "cpu", "--frames", "3", "--width", "64", "--height", "64", "--steps", "1",
                           "--anchors", "1", "--batch-size", "2", "--json", str(out), *options]) == 0
    results = json.loads(out.read_text())
    assert results["options"]["reduced_anchors"] == ("finest" if options else None)
    assert results["options"]["overlap_io"] == (not options)
    fairy_run, baseline = results["runs"]["K=1"], results["runs"]["K=0"]
    for run in (fairy_run, baseline):
        assert run["seconds"] > 0 and run["tflop"] > 0
        assert run["phases"]["vae encode"] > 0 and run["phases"]["anchor pass + frame pass (UNet)"] > 0
    assert fairy_run["phases"]["anchor pass (with its VAE)"] > 0 and baseline["phases"]["anchor pass (with its VAE)"] == 0
    # The anchors' attention is counted: a frame reading one anchor costs more than a frame alone.
    assert fairy_run["flops_by_part_tflop"]["frame, per step"] > baseline["flops_by_part_tflop"]["frame, per step"]
    assert results["fairy_over_per_frame"] == pytest.approx(fairy_run["seconds"] / baseline["seconds"], rel=1e-2)


def test_the_anchor_attention_bench_measures_what_frames_take_from_the_anchors(tmp_path, monkeypatch):
    """bench/bench_anchor_attention.py: per layer, the share of frame-pass attention on the anchors (taken
    from the merged kernel's log-sum-exps, so it must match the kernel's own output), and how far anchors and
    noise move a frame."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import bench_anchor_attention

    from fairy import attention

    kernel = attention._merged_anchor_attention
    result = bench_anchor_attention.main(["--model", "builtin:tiny", "--size", "32x32", "--frames", "3", "--anchors", "1",
                                          "--device", "cpu", "--out", str(tmp_path / "shares.json")])
    assert attention._merged_anchor_attention is kernel  # the recorder is taken out again
    assert result["uniform_share"] == 0.5
    shares = result["anchor_share_by_tokens"]
    assert set(shares) == {"16", "4"}  # the tiny UNet's two attention levels at 32x32 (1/8 and 1/16 of the side)
    assert all(0.0 < s < 1.0 for s in shares.values())
    assert result["anchor_change"] > 0 and result["noise_change"] > 0
