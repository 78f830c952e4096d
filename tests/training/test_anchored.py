"""Anchored training (`fairy train --anchors K`): clips of views, the noise levels, the two passes, the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fairy.attention import AnchorAttnProcessor, AnchorCache, set_anchor_attention
from fairy.cli import main
from fairy.training.anchored import (AnchoredTraining, aligned_anchor_mean, anchored_loss, anchored_predictions, anchored_timesteps,
                                    clip_views, consistency_loss)
from fairy.training.data import ProceduralEdits
from fairy.training.trainer import TrainConfig, load_training_components, train


def _dot(size: int, x: int, y: int, value: float) -> torch.Tensor:
    image = torch.zeros(3, size, size)
    image[:, y - 1 : y + 2, x - 1 : x + 2] = value
    return image


def _where(image: torch.Tensor) -> tuple[int, int]:
    y, x = np.unravel_index(int(image[0].argmax()), image.shape[-2:])
    return int(y), int(x)


@pytest.mark.parametrize("seed", range(4))
def test_clip_views_crop_source_and_target_alike_along_one_straight_path(seed):
    source, target = _dot(40, 21, 17, 1.0), _dot(40, 21, 17, 0.5)
    sources, targets = clip_views(source, target, 32, np.random.default_rng(seed), 5, equivariant=seed % 2 == 1)
    assert len(sources) == len(targets) == 5
    points = []
    for s, t in zip(sources, targets):
        assert s.shape == t.shape == (3, 32, 32)
        assert _where(s) == _where(t)  # the same crop (and flip) for the source and its edit
        assert float(t.max()) == pytest.approx(0.5 * float(s.max()), rel=1e-5)
        points.append(_where(s))
    # The dot moves along a straight line: every view's point lies on the line through the two farthest apart.
    points = np.array(points, dtype=float)
    far = max(((i, j) for i in range(5) for j in range(5)), key=lambda ij: np.linalg.norm(points[ij[0]] - points[ij[1]]))
    a, b = points[far[0]], points[far[1]]
    if np.linalg.norm(b - a) > 0:
        for p in points:
            cross = (b - a)[0] * (p - a)[1] - (b - a)[1] * (p - a)[0]
            assert abs(cross) / np.linalg.norm(b - a) <= 1.0  # rounding of the crop offsets


@pytest.mark.parametrize("seed", range(6))
def test_clip_views_offsets_say_where_each_view_lies(seed):
    # Two dots, so that a flip shows: view a's pixel (y, x) is view b's (y + top_a - top_b, x + left_a - left_b).
    source = _dot(48, 20, 17, 1.0) + _dot(48, 30, 25, 0.6)
    views, targets, offsets = clip_views(source, source * 0.5, 32, np.random.default_rng(seed), 4, travel=0.5, grid=4,
                                         with_offsets=True)  # fmt: skip
    assert len(offsets) == 4
    for (top, left), view in zip(offsets, views):
        assert top % 4 == 0 and left % 4 == 0 and 0 <= top <= 16 and 0 <= left <= 16  # resized to 48 = 32 x 1.5
    for (top_a, left_a), a in zip(offsets, views):
        for (top_b, left_b), b in zip(offsets, views):
            y, x = _where(a)
            assert _where(b) == (y + top_a - top_b, x + left_a - left_b)


def test_clip_views_without_the_new_options_draw_what_they_drew_before():
    # The shipped model's recipe depends on these draws: offsets and a grid of 1 must not change them.
    source, target = torch.rand(3, 40, 52), torch.rand(3, 40, 52)
    plain = clip_views(source, target, 32, np.random.default_rng(7), 4, equivariant=True)
    with_offsets = clip_views(source, target, 32, np.random.default_rng(7), 4, equivariant=True, with_offsets=True)
    assert len(plain) == 2 and len(with_offsets) == 3
    for a, b in zip(plain, with_offsets):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def _scene_crops(scene: torch.Tensor, offsets: list, size: int, factor: int) -> torch.Tensor:
    return torch.stack([scene[:, t // factor : t // factor + size, l // factor : l // factor + size] for t, l in offsets])


def test_aligned_anchor_mean_moves_each_anchor_into_the_frames_place():
    scene = torch.randn(3, 12, 12)
    anchor_offsets, frame_offset = [(0, 0), (8, 8), (0, 16)], (4, 8)  # pixels; factor 4: latent (1, 2)
    anchors = _scene_crops(scene, anchor_offsets, 6, 4)
    mean, mask = aligned_anchor_mean(anchors, anchor_offsets, frame_offset, 4)
    frame = scene[:, 1:7, 2:8]
    assert mask.shape == (1, 6, 6) and bool(mask.all())  # every latent pixel of this frame is seen by an anchor
    assert torch.allclose(mean, frame, atol=1e-6)  # the anchors agree where they overlap: their mean is the scene
    far = aligned_anchor_mean(anchors[:1], anchor_offsets[:1], (20, 20), 4)[1]  # 5 latent pixels away
    assert far[0, :1, :1].all() and not far[0, 1:, :].any() and not far[0, :, 1:].any()


def test_the_consistency_loss_pulls_frames_to_their_anchors_and_leaves_the_anchors_alone():
    scene = torch.randn(3, 12, 12)
    offsets = [(0, 0), (8, 8), (4, 4)]  # one example: 2 anchors, then its frame
    estimates = _scene_crops(scene, offsets, 6, 4).requires_grad_(True)
    assert float(consistency_loss(estimates, offsets, 1, 2, 4).detach()) == pytest.approx(0.0, abs=1e-10)
    moved = estimates.detach().clone()
    moved[2] += 0.5
    moved.requires_grad_(True)
    loss = consistency_loss(moved, offsets, 1, 2, 4)
    assert float(loss.detach()) == pytest.approx(0.25, rel=1e-5)
    loss.backward()
    assert moved.grad[:2].abs().sum() == 0 and moved.grad[2].abs().sum() > 0  # the anchors are the reference
    weighted = consistency_loss(moved.detach(), offsets, 1, 2, 4, frame_weights=torch.tensor([0.1]))
    assert float(weighted) == pytest.approx(0.025, rel=1e-5)


def test_anchored_timesteps_lay_out_the_anchors_then_the_frames():
    settings = AnchoredTraining(anchors=3, noisier_frame=1.0, anchor_max_t=0.5, frame_min_t=0.8)
    t = anchored_timesteps(50, settings, 1000, torch.Generator().manual_seed(0))
    anchors, frames = t[:150].view(50, 3), t[150:]
    assert (anchors == anchors[:, :1]).all()  # one level per example's anchors
    assert (anchors < 500).all() and (frames >= 800).all() and (frames >= anchors[:, 0]).all() and (frames <= 999).all()
    same = anchored_timesteps(50, AnchoredTraining(noisier_frame=0.0), 1000, torch.Generator().manual_seed(0))
    assert torch.equal(same[150:], same[:150:3])  # never noisier: each frame at its anchors' level


def test_bad_anchored_settings_are_refused():
    with pytest.raises(ValueError, match="at least 1 anchor"):
        AnchoredTraining(anchors=0)
    with pytest.raises(ValueError, match="noisier_frame"):
        AnchoredTraining(noisier_frame=1.5)
    with pytest.raises(ValueError, match="consistency_weight"):
        AnchoredTraining(consistency_weight=-1.0)
    with pytest.raises(ValueError, match="travel"):
        AnchoredTraining(travel=2.0)


def test_a_frame_reads_its_own_examples_anchors_and_its_loss_reaches_them(tiny_model_dir):
    torch.manual_seed(0)
    unet = load_training_components(str(tiny_model_dir), torch.device("cpu"))["unet"]
    cache = AnchorCache(store="hidden")
    set_anchor_attention(unet, cache)
    examples, anchors = 2, 2
    x = torch.randn(examples * anchors + examples, unet.config.in_channels, 16, 16, requires_grad=True)
    t = torch.full((len(x),), 500)
    text = torch.randn(len(x), 4, unet.config.cross_attention_dim)

    out = anchored_predictions(unet, cache, x, t, text, examples, anchors)
    assert out.shape[0] == len(x) and cache.entries == {} and cache.mode == "off"
    frames = out[examples * anchors :]
    frames[0].pow(2).mean().backward()
    reached = x.grad.flatten(1).abs().sum(1)
    assert reached[0] > 0 and reached[1] > 0  # example 0's anchors
    assert reached[2] == 0 and reached[3] == 0 and reached[5] == 0  # not example 1's anchors, nor its frame

    changed = x.detach().clone()
    changed[:anchors] = torch.randn(anchors, *x.shape[1:])  # new anchors for example 0 only
    again = anchored_predictions(unet, cache, changed, t, text, examples, anchors)[examples * anchors :]
    assert not torch.allclose(again[0], frames[0].detach()) and torch.allclose(again[1], frames[1].detach(), atol=1e-6)


def test_the_anchored_loss_counts_a_frame_as_its_weight():
    settings = AnchoredTraining(anchors=2, frame_loss_weight=3.0)
    goal = torch.zeros(3, 1, 2, 2)
    prediction = torch.stack([torch.full((1, 2, 2), v) for v in (1.0, 1.0, 2.0)])  # one example: 2 anchors, 1 frame
    assert float(anchored_loss(prediction, goal, 1, settings)) == pytest.approx((1 + 1 + 3 * 4) / 5)


def test_anchored_training_lowers_the_loss_and_saves_a_plain_diffusers_model(tiny_model_dir, tmp_path):
    out = tmp_path / "anchored"
    config = TrainConfig(data="builtin:procedural", base=str(tiny_model_dir), output=out, steps=20, batch_size=4,
                         resolution=32, learning_rate=2e-3, checkpoint_every=10, device="cpu",
                         anchored=AnchoredTraining(anchors=1), ambiguous_share=0.5)  # fmt: skip
    result = train(config, progress=False)
    assert np.mean(result.losses[:5]) > np.mean(result.losses[-5:])
    info = json.loads((out / "fairy_model.json").read_text())
    assert info["training"]["anchored"]["anchors"] == 1 and info["training"]["ambiguous_share"] == 0.5
    unet = load_training_components(str(out), torch.device("cpu"))["unet"]
    assert not any(isinstance(p, AnchorAttnProcessor) for p in unet.attn_processors.values())


def test_the_consistency_term_trains_through_the_cli_and_is_recorded(tiny_model_dir, tmp_path):
    out = tmp_path / "steady"
    code = main(["train", "--data", "builtin:procedural", "--base", str(tiny_model_dir), "-o", str(out), "--steps", "3",
                 "--batch-size", "4", "--resolution", "32", "--device", "cpu", "--anchors", "1",
                 "--consistency-weight", "2", "--travel", "0.5"])  # fmt: skip
    assert code == 0
    anchored = json.loads((out / "fairy_model.json").read_text())["training"]["anchored"]
    assert anchored["consistency_weight"] == 2.0 and anchored["travel"] == 0.5


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_clean_estimates_undo_the_noise_whatever_the_model_predicts(prediction_type):
    from diffusers import DDPMScheduler

    from fairy.training.trainer import _clean_estimates

    schedule = DDPMScheduler(num_train_timesteps=1000)
    clean, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 250, 600, 900])
    noisy = schedule.add_noise(clean, noise, t)
    perfect = {"sample": clean, "epsilon": noise, "v_prediction": schedule.get_velocity(clean, noise, t)}[prediction_type]
    assert torch.allclose(_clean_estimates(perfect, noisy, t, prediction_type, schedule), clean, atol=1e-3)


def test_the_ambiguous_share_draws_the_edits_it_says():
    only = ProceduralEdits(24, ambiguous_share=1.0)
    never = ProceduralEdits(24, ambiguous_share=0.0)
    palette = {"give it a new color palette", "give it a new colour palette", "change the colours"}
    assert all(only[i][2] in palette for i in range(12))
    assert not any(never[i][2] in palette for i in range(40))
    uniform = ProceduralEdits(24)
    assert [uniform[i][2] for i in range(5)] == [ProceduralEdits(24, ambiguous_share=None)[i][2] for i in range(5)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--anchors", "3", "--batch-size", "6"], "must be a multiple of 4"),
        (["--anchors", "-1"], "--anchors must be 0"),
        (["--ambiguous-share", "1.5"], "must lie in [0, 1]"),
        (["--anchors", "1", "--consistency-weight", "-1"], "--consistency-weight must be 0"),
        (["--anchors", "1", "--travel", "3"], "--travel must lie in [0, 1]"),
        (["--consistency-weight", "1"], "give --anchors K too"),
    ],
)
def test_bad_anchored_options_get_one_line_and_write_nothing(tiny_model_dir, tmp_path, capsys, extra, message):
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["train", "--data", "builtin:procedural", "--base", str(tiny_model_dir), "-o", str(tmp_path / "out"),
                 "--steps", "2", "--resolution", "32", "--device", "cpu", *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fairy: error: ") and message in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_ambiguous_share_is_refused_for_a_triplet_folder(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "metadata.jsonl").write_text("")
    code = main(["train", "--data", str(data), "--base", str(tiny_model_dir), "-o", str(tmp_path / "out"),
                 "--steps", "2", "--ambiguous-share", "0.5", "--device", "cpu"])  # fmt: skip
    assert code == 2 and "for builtin:procedural only" in capsys.readouterr().err
