"""`fairy train-small`'s recipe end to end at toy sizes: every stage, the evaluation, the shipped folder."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fairy.cli import main
from fairy.training.recipe import Recipe, run_recipe

TOY = Recipe(base_steps=2, refine_steps=1, finetune_steps=1, anchored_steps=1, batch_size=1, base_resolution=16, finetune_resolution=16, eval_images_per_photo=1)


def test_the_recipe_runs_every_stage_and_records_its_evaluation(tmp_path):
    out, work = tmp_path / "small", tmp_path / "work"
    scores = run_recipe(out, work, TOY, progress=False)
    assert sorted(p.name for p in work.iterdir() if not p.name.endswith("-checkpoints")) == ["anchored", "anchored-plain", "base", "equivariant", "init", "plain", "recipe.json", "refine"]
    info = json.loads((out / "fairy_model.json").read_text())
    assert info["long_side"] == 128 and info["recipe"]["base_steps"] == 2
    # The shipped folder is the anchored stage, trained on from the equivariant one, itself from the plain base.
    assert info["training"]["equivariant"] is True and info["training"]["anchored"]["anchors"] == 3
    assert info["training"]["previous"]["equivariant"] is True and info["training"]["previous"]["anchored"] is None
    assert info["training"]["previous"]["previous"]["equivariant"] is False
    assert set(info["evaluation"]["edits"]) == set(scores["edits"]) and len(scores["edits"]) == 8
    assert info["evaluation"]["autoencoder_psnr"] > 60  # the pixel-space autoencoder is exact
    # A second run finds every stage done and refuses to replace the output.
    stamp = (work / "base" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    with pytest.raises(Exception, match="exists"):
        run_recipe(out, work, TOY, progress=False)
    assert (work / "base" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    # Another seed (a replicate run) must not resume this run's stages: one line, nothing written.
    with pytest.raises(ValueError, match="seed 0 there, 1 now"):
        run_recipe(tmp_path / "replicate", work, dataclasses.replace(TOY, seed=1), progress=False)
    assert not (tmp_path / "replicate").exists()
    assert json.loads((work / "recipe.json").read_text())["seed"] == 0


def test_train_small_seed_refuses_a_work_folder_of_another_seed(tmp_path, capsys):
    from fairy.training.recipe import SHIPPED_RECIPE

    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.json").write_text(json.dumps(dataclasses.asdict(SHIPPED_RECIPE)))
    assert main(["train-small", "-o", str(tmp_path / "small"), "--work-dir", str(work), "--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert "seed 0 there, 2 now" in err and "--work-dir" in err
    assert sorted(p.name for p in work.iterdir()) == ["recipe.json"] and not (tmp_path / "small").exists()
    # A folder of stages from before recipes were recorded was seed 0's.
    legacy = tmp_path / "legacy"
    (legacy / "init").mkdir(parents=True)
    assert main(["train-small", "-o", str(tmp_path / "small"), "--work-dir", str(legacy), "--seed", "1"]) == 2
    assert "unrecorded recipe (seed 0)" in capsys.readouterr().err
    assert sorted(p.name for p in legacy.iterdir()) == ["init"]


def test_train_small_anchored_steps_is_checked_first_and_recorded_as_a_variant(tmp_path, capsys):
    from fairy.training.recipe import SHIPPED_RECIPE

    # A bad value is refused before the first stage (which takes half an hour), writing nothing.
    assert main(["train-small", "-o", str(tmp_path / "small"), "--work-dir", str(tmp_path / "w0"), "--anchored-steps", "0"]) == 2
    assert "--anchored-steps must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "w0").exists() and not (tmp_path / "small").exists()
    # Another value is another recipe: the shipped recipe's stages are not resumed with it.
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.json").write_text(json.dumps(dataclasses.asdict(SHIPPED_RECIPE)))
    assert main(["train-small", "-o", str(tmp_path / "small"), "--work-dir", str(work), "--anchored-steps", "800"]) == 2
    assert f"anchored_steps {SHIPPED_RECIPE.anchored_steps} there, 800 now" in capsys.readouterr().err
    assert sorted(p.name for p in work.iterdir()) == ["recipe.json"] and not (tmp_path / "small").exists()


def test_train_small_refuses_an_existing_output(tmp_path, capsys):
    (tmp_path / "small").mkdir()
    assert main(["train-small", "-o", str(tmp_path / "small")]) == 2
    assert "exists" in capsys.readouterr().err


def test_the_quality_bench_runs_every_row_and_checks_the_targets(tmp_path, monkeypatch):
    """bench/bench_quality.py (the ablation in miniature) on the shipped model, a few frames: every row, the
    anchors' own effect measured against the same model's per-frame frames, and the targets checked."""
    import json
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import bench_quality

    out = tmp_path / "quality.json"
    result = bench_quality.main(["--plain", "builtin:small", "--equivariant", "builtin:small", "--frames", "4",
                                 "--size", "64x48", "--edits", "night,palette", "--motions", "pan", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    rows = {(r["noise"], r["model"], r["anchors"]): r for r in result["rows"]}
    assert len(rows) == 8
    for (noise, model, anchors), row in rows.items():
        assert (row["anchor_change_e3"] is None) == (anchors == 0)
        assert row["psnr"] is not None and row["hue_angle_std"] is not None and row["warp_error_e3"] > 0
        # The same weights under both names: the same frames (the bench is deterministic).
        assert row["warp_error_e3"] == rows[noise, "plain", anchors]["warp_error_e3"]
    # Anchors are really used: K = 3 frames differ from K = 0 ones (a little, for this model).
    assert rows["per_frame", "plain", 3]["anchor_change_e3"] > 0
    assert any("warp error, Fairy over per-frame editing" in line for line in result["targets"]["per_frame"])


def test_the_consistency_bench_compares_k0_and_k3_for_each_model_and_noise(tmp_path, monkeypatch):
    """bench/bench_consistency.py on the shipped model, a few frames: one row per model and noise policy, whose
    ratios are its own K = 3 and K = 0 numbers, the K = 0 ones what bench_quality measures for the same row."""
    import json
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import bench_consistency

    out = tmp_path / "consistency.json"
    small = ["--frames", "4", "--size", "64x48", "--edits", "night,palette", "--motions", "pan"]
    result = bench_consistency.main(["builtin:small", *small, "--noise", "per_frame,shared", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    assert [(r["model"], r["noise"]) for r in result["rows"]] == [("builtin:small", "per_frame"), ("builtin:small", "shared")]
    for row in result["rows"]:
        assert row["warp_ratio"] == row["fairy"]["warp_error_e3"] / row["per_frame"]["warp_error_e3"]
        assert row["hue_ratio"] == row["fairy"]["hue_angle_std"] / row["per_frame"]["hue_angle_std"]
        assert row["fairy"]["anchor_change_e3"] > 0 and row["per_frame"]["anchor_change_e3"] is None
    per_frame = result["rows"][0]["per_frame"]
    assert per_frame["hue_angle_std"] > result["rows"][0]["fairy"]["hue_angle_std"]  # the anchors pull the answer together


def test_the_anchor_figure_shows_the_source_and_both_edits_with_their_angles(tmp_path, monkeypatch, capsys):
    """bench/make_anchor_figure.py (the README's second picture) on the shipped model: three rows of frames,
    each under a caption, and the angles it prints are the ones it measured."""
    import pathlib

    from PIL import Image

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import make_anchor_figure

    out = tmp_path / "anchors.jpg"
    angles = make_anchor_figure.main(["--frames", "3", "--out", str(out)])
    assert sorted(angles) == [0, 3] and all(len(a) == 3 for a in angles.values())
    with Image.open(out) as picture:
        assert picture.size == (3 * 128 + 2 * 4, 3 * (96 + 18))
    printed = capsys.readouterr().out
    assert ", ".join(f"{a:.0f}" for a in angles[3]) in printed and str(out) in printed


def test_attention_added_at_a_level_keeps_the_model_and_can_learn(tmp_path, monkeypatch):
    """bench/add_attention_level.py on the shipped model: the copy has attention at half resolution, edits a
    frame as the original does (its new blocks' output starts at zero) and those blocks get gradients."""
    import pathlib

    import numpy as np
    import torch
    from diffusers import UNet2DConditionModel

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    import add_attention_level

    from fairy.loading import load_pipeline
    from fairy.model_info import shipped_model_path

    out = tmp_path / "widened"
    add_attention_level.main([str(shipped_model_path()), str(out), "--levels", "1"])
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    assert unet.config.down_block_types[1] == "CrossAttnDownBlock2D" and unet.config.up_block_types[2] == "CrossAttnUpBlock2D"
    clip = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    edits = [np.asarray(load_pipeline(m, device="cpu")(clip, "make it night", steps=2, anchors=2, seed=0, noise="per_frame", output_type="uint8").frames, dtype=np.int16)
             for m in (str(shipped_model_path()), str(out))]  # fmt: skip
    assert np.abs(edits[0] - edits[1]).max() <= 1  # uint8 frames: at most a rounding apart
    sample = torch.randn(1, 6, 48, 64)
    unet(sample, torch.tensor([500]), torch.randn(1, 40, 64)).sample.square().mean().backward()
    new = [p for n, p in unet.named_parameters() if n.startswith("down_blocks.1.attentions.")]
    assert new and all(p.grad is not None for p in new) and any(p.grad.abs().sum() > 0 for p in new)
    with pytest.raises(SystemExit):  # the output exists: refused, nothing changed
        add_attention_level.main([str(shipped_model_path()), str(out)])


def test_the_patchwork_experiment_draws_a_hue_answer_that_varies_across_the_picture(monkeypatch):
    """bench/train_patchwork.py: its edit turns the hue by different angles in different regions (one field a
    pair, fixed to the picture), and while installed builtin:procedural draws it among the ambiguous edits."""
    import pathlib

    import numpy as np

    from fairy.training import data, edits

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[2] / "bench"))
    monkeypatch.setattr(edits, "EDITS", edits.EDITS)  # install() extends these for its process: undo it after
    monkeypatch.setattr(data, "open_dataset", data.open_dataset)
    import train_patchwork

    rng = np.random.default_rng(0)
    scene = data.random_scene(96, rng)
    field = train_patchwork.patchwork_angles(96, 96, np.random.default_rng(1))
    edited = train_patchwork.PATCHWORK.apply(scene, np.random.default_rng(1))
    np.testing.assert_allclose(edited, edits.rotate_hue(scene, field), atol=1e-6)
    assert field.max() - field.min() > 30  # the answer varies across the picture
    # Each region took its own angle: fitted where the field is lowest and highest, they differ as the field does.
    low, high = np.unravel_index(field.argmin(), field.shape), np.unravel_index(field.argmax(), field.shape)
    fitted = [edits.hue_rotation_angle(scene[max(0, y - 4) : y + 4, max(0, x - 4) : x + 4], edited[max(0, y - 4) : y + 4, max(0, x - 4) : x + 4])
              for y, x in (low, high)]  # fmt: skip
    assert abs(((fitted[1] - fitted[0]) - (field[high] - field[low]) + 180) % 360 - 180) < 10
    # A uniform field is the palette's rotation.
    np.testing.assert_allclose(edits.rotate_hue(scene, np.full((96, 96), 100.0)), edits.rotate_hue(scene, 100.0), atol=1e-6)

    train_patchwork.install()
    assert edits.edit_by_name("patchwork") is train_patchwork.PATCHWORK
    examples = data.open_dataset("builtin:procedural", size=32, seed=0, ambiguous_share=1.0)
    drawn = {examples[i][2] for i in range(24)}
    assert drawn & set(train_patchwork.PATCHWORK.instructions) and drawn & set(edits.edit_by_name("palette").instructions)
