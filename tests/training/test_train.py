"""`fairy train` on the tiny model: the loss falls, a folder is written, resume is exact, bad input is refused."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fairy.cli import main
from fairy.errors import EditCancelled
from fairy.training.trainer import TrainConfig, checkpoint_dir_for, train
from fairy.video import make_test_clip, probe

FAST = dict(steps=6, batch_size=2, resolution=32, learning_rate=2e-3, checkpoint_every=3, device="cpu")


def _config(base, output, **changes) -> TrainConfig:
    return TrainConfig(**({"data": "builtin:procedural", "base": str(base), "output": output} | FAST | changes))


def test_training_lowers_the_loss_and_writes_a_folder_that_fairy_edit_loads(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "trained"
    result = train(_config(tiny_model_dir, out, steps=24), progress=False)
    assert np.mean(result.losses[:6]) > 1.1 * np.mean(result.losses[-6:])
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / part).is_dir(), part
    info = json.loads((out / "fairy_model.json").read_text())
    assert info["training"]["steps"] == 24 and info["training"]["equivariant"] is True
    # The UNet's weights changed; the VAE's (frozen) did not.
    before = load_file(tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    vae_before = load_file(tiny_model_dir / "vae" / "diffusion_pytorch_model.safetensors")
    vae_after = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(vae_before[k], vae_after[k]) for k in vae_before)

    clip = make_test_clip(tmp_path / "clip.mp4", frames=4, width=64, height=48, fps=Fraction(24), audio=False)
    edited = tmp_path / "edited.mp4"
    code = main(["edit", str(clip), "-i", "make it night", "-o", str(edited), "--model", str(out), "--steps", "2",
                 "--long-side", "32", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert probe(edited).frame_count == 4


def test_a_run_resumed_from_a_checkpoint_ends_with_the_weights_of_an_uninterrupted_one(tiny_model_dir, tmp_path):
    whole = tmp_path / "whole"
    train(_config(tiny_model_dir, whole), progress=False)

    resumed = tmp_path / "resumed"
    calls = []

    def cancel_after_three_steps():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(EditCancelled):
        train(_config(tiny_model_dir, resumed), should_cancel=cancel_after_three_steps, progress=False)
    assert not resumed.exists()  # nothing half-written
    assert sorted(p.name for p in checkpoint_dir_for(resumed).iterdir()) == ["step-0000003.pt"]
    train(_config(tiny_model_dir, resumed, resume=True), progress=False)

    for part in ("unet",):
        a = load_file(whole / part / "diffusion_pytorch_model.safetensors")
        b = load_file(resumed / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_a_text_to_image_base_is_widened_to_eight_channels_with_zero_weights(tiny_model_dir, tmp_path):
    from fairy.loading import _components_from_pretrained
    from fairy.training.trainer import load_training_components, save_model_folder

    components = _components_from_pretrained(str(tiny_model_dir), torch.float32, local_files_only=True)
    unet = components["unet"]
    narrow = torch.nn.Conv2d(4, unet.conv_in.out_channels, 3, padding=1)
    unet.conv_in = narrow
    unet.register_to_config(in_channels=4)
    text_to_image = tmp_path / "t2i"
    save_model_folder(components, text_to_image)
    widened = load_training_components(str(text_to_image), torch.device("cpu"))["unet"]
    assert widened.config.in_channels == 8
    assert torch.equal(widened.conv_in.weight[:, :4], narrow.weight) and not widened.conv_in.weight[:, 4:].any()


def _write_pair(folder, name, size_a, size_b):
    from PIL import Image

    Image.fromarray(np.zeros((size_a[1], size_a[0], 3), np.uint8)).save(folder / f"{name}_a.png")
    Image.fromarray(np.zeros((size_b[1], size_b[0], 3), np.uint8)).save(folder / f"{name}_b.png")
    return {"source": f"{name}_a.png", "instruction": "do it", "edited": f"{name}_b.png"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-image", "not found"),
        ("mismatched", "must have the same size"),
        ("unknown-base", "unknown base model"),
        ("offline-hub", "cannot load the base model"),
        ("output-exists", "exists; pick a new one"),
    ],
)
def test_bad_input_gets_one_line_and_leaves_nothing_written(tiny_model_dir, tmp_path, capsys, case, message):
    data = tmp_path / "data"
    data.mkdir()
    records = [_write_pair(data, "one", (40, 30), (20, 30) if case == "mismatched" else (40, 30))]
    if case == "missing-image":
        records[0]["source"] = "nothing.png"
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    base = {"unknown-base": str(tmp_path / "no-such-model"), "offline-hub": "nobody/no-such-model"}.get(case, str(tiny_model_dir))
    out = tmp_path / "out"
    if case == "output-exists":
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["train", "--data", str(data), "--base", base, "-o", str(out), "--steps", "2", "--resolution", "32", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("fairy: error: ") and message in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
