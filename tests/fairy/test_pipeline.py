"""FairyPipeline: parity with diffusers, batch invariance, anchors, noise, progress and cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

from fairy.errors import EditCancelled
from fairy.pipeline import FairyParams, FairyPipeline, anchor_indices_for
from fairy.tiny import build_tiny_components

# Kernels round differently for different batch sizes (measured on this CPU: a
# tiny UNet ~1e-6 between batch 1 and 12, a VAE decode ~2e-4). Frames are
# compared in [0, 1]; this is the documented bound for "same up to rounding".
BATCH_ROUNDING_BOUND = 1e-3
STEPS = 3


def _clip(frames: int = 7, seed: int = 0) -> np.ndarray:
    """A small moving gradient clip, uint8, 32x48."""
    y, x = np.mgrid[0:32, 0:48]
    clip = [((np.stack([x * 5 + 9 * t, y * 7, (x + y) * 3 + 5 * t], -1) + seed * 40) % 256) for t in range(frames)]
    return np.asarray(clip, dtype=np.uint8)


def _edit(pipe, frames, **kwargs):
    kwargs.setdefault("steps", STEPS)
    return pipe(frames, "make it a watercolor painting", **kwargs)


def test_anchor_indices_are_uniform_centres():
    assert anchor_indices_for(120, 3) == (20, 60, 100)
    assert anchor_indices_for(7, 3) == (1, 3, 5)
    assert anchor_indices_for(2, 3) == (0, 1)
    assert anchor_indices_for(10, 0) == ()


def test_per_frame_parity_with_diffusers_instruct_pix2pix():
    """K = 0, a deterministic scheduler, one frame: the same image as diffusers' own pipeline."""
    ours = FairyPipeline(**build_tiny_components(seed=3))
    ours.scheduler = EulerDiscreteScheduler.from_config(ours.scheduler.config)
    theirs = StableDiffusionInstructPix2PixPipeline(
        **build_tiny_components(seed=3), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    theirs.scheduler = EulerDiscreteScheduler.from_config(theirs.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    frame = _clip(1)
    seed = 11
    # Our frame 0 draws its initial noise from the generator of (seed, 0).
    from fairy.noise import frame_seed

    expected = theirs(
        "turn it into a robot", image=frame.astype(np.float32) / 255.0, num_inference_steps=4,
        guidance_scale=7.5, image_guidance_scale=1.5, generator=torch.Generator().manual_seed(frame_seed(seed, 0)),
        output_type="np",
    ).images  # fmt: skip
    got = ours(frame, "turn it into a robot", steps=4, anchors=0, seed=seed, noise="per_frame").frames
    assert got.shape == expected.shape == (1, 32, 48, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("anchors", [0, 3])
def test_batch_size_and_order_do_not_change_frames(tiny_pipe, anchors):
    clip = _clip(7)
    reference = _edit(tiny_pipe, clip, batch_size=2, anchors=anchors).frames
    again = _edit(tiny_pipe, clip, batch_size=2, anchors=anchors).frames
    assert np.array_equal(reference, again), "a repeated run with the same batches must be bitwise identical"
    for kwargs in ({"batch_size": 1}, {"batch_size": 3}, {"batch_size": 7}, {"batch_size": 2, "order": list(range(7))[::-1]}):
        other = _edit(tiny_pipe, clip, anchors=anchors, **kwargs).frames
        assert np.abs(other - reference).max() <= BATCH_ROUNDING_BOUND, kwargs


@pytest.mark.parametrize("noise", ["per_frame", "shared"])
def test_noise_depends_on_frame_index_not_position(tiny_pipe, noise):
    clip = _clip(5)
    full = _edit(tiny_pipe, clip, anchors=0, batch_size=5, noise=noise).frames
    # The same pixels given as one frame with its original index reproduce that frame.
    alone = _edit(tiny_pipe, clip[3:4], anchors=0, frame_indices=[3], noise=noise).frames
    assert np.abs(alone[0] - full[3]).max() <= BATCH_ROUNDING_BOUND
    # ... and with another index they do not (its ancestral noise differs under both policies).
    moved = _edit(tiny_pipe, clip[3:4], anchors=0, frame_indices=[4], noise=noise).frames
    assert np.abs(moved[0] - full[3]).max() > 10 * BATCH_ROUNDING_BOUND


def test_anchor_frames_steer_the_other_frames(tiny_pipe):
    clip = _clip(7)
    changed = clip.copy()
    changed[3] = _clip(1, seed=3)[0]  # frame 3 is an anchor of 7 with K = 3
    assert 3 in anchor_indices_for(7, 3)
    with_anchors = _edit(tiny_pipe, clip, anchors=3).frames
    with_changed_anchor = _edit(tiny_pipe, changed, anchors=3).frames
    assert np.abs(with_anchors[0] - with_changed_anchor[0]).max() > 10 * BATCH_ROUNDING_BOUND
    per_frame = _edit(tiny_pipe, clip, anchors=0).frames
    per_frame_changed = _edit(tiny_pipe, changed, anchors=0).frames
    assert np.array_equal(per_frame[0], per_frame_changed[0])


def test_shared_initial_noise_is_an_option(tiny_pipe):
    clip = np.repeat(_clip(1), 3, axis=0)  # three identical frames
    shared = _edit(tiny_pipe, clip, anchors=0, noise="shared", guidance_scale=1.0).frames
    per_frame = _edit(tiny_pipe, clip, anchors=0, noise="per_frame", guidance_scale=1.0).frames
    # Identical frames from one initial latent differ only by their ancestral noise.
    spread_shared = np.abs(shared[0] - shared[1]).mean()
    spread_own = np.abs(per_frame[0] - per_frame[1]).mean()
    assert spread_shared < spread_own
    other_batches = _edit(tiny_pipe, clip, anchors=0, noise="shared", guidance_scale=1.0, batch_size=1).frames
    assert np.abs(other_batches - shared).max() <= BATCH_ROUNDING_BOUND


def test_cache_shipped_to_another_worker_gives_the_same_frames(tiny_pipe, tmp_path):
    """A frame depends only on the cache, its pixels and (seed, index): save the cache, edit elsewhere."""
    clip = _clip(6)
    whole = _edit(tiny_pipe, clip, anchors=2, batch_size=4)
    whole.cache.save(tmp_path / "anchors.safetensors")

    from fairy.attention import AnchorCache
    from fairy.loading import load_pipeline

    worker = load_pipeline("builtin:tiny", device="cpu")
    params = FairyParams(steps=STEPS)
    embeds = worker.encode_instruction("make it a watercolor painting", params)
    cache = AnchorCache.load(tmp_path / "anchors.safetensors")
    rest = [i for i in range(6) if i not in whole.anchor_indices]
    frames = worker.edit_frames(clip[rest], rest, embeds, params, cache)
    assert np.abs(frames - whole.frames[rest]).max() <= BATCH_ROUNDING_BOUND
    with pytest.raises(ValueError, match="other settings"):
        worker.edit_frames(clip[rest], rest, embeds, FairyParams(steps=STEPS + 1), cache)


def test_progress_reports_both_passes_and_cancel_stops_between_steps(tiny_pipe):
    seen = []
    _edit(tiny_pipe, _clip(5), anchors=2, batch_size=2, callback=seen.append)
    assert [p.phase for p in seen][:STEPS] == ["anchors"] * STEPS
    assert seen[-1].phase == "frames" and seen[-1].frames_done == seen[-1].total_frames == 5
    calls = []

    def cancel_after_two_steps():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(EditCancelled):
        _edit(tiny_pipe, _clip(5), should_cancel=cancel_after_two_steps)
    assert len(calls) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"instruction": "   "}, "instruction is empty"),
        ({"frames": np.zeros((2, 30, 48, 3), np.uint8)}, "divisible by 16"),
        ({"frames": np.zeros((0, 32, 48, 3), np.uint8)}, "no frames"),
        ({"anchors": -1}, "anchors"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"noise": "pink"}, "noise"),
        ({"anchor_indices": [9]}, "anchor positions"),
    ],
)
def test_check_inputs_messages(tiny_pipe, kwargs, message):
    call = {"frames": _clip(3), "instruction": "make it snow", "steps": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        tiny_pipe(call.pop("frames"), call.pop("instruction"), **call)
