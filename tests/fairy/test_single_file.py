"""Single-file (original LDM layout) export and import of InstructPix2Pix models.

Everything runs offline on the CPU with the tiny model: the diffusers-format
folder that gives the component configs is written here, and the Hub is
switched off so a test that would reach it fails fast instead of hanging.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from fairy.errors import InvalidInputError, ModelLoadError, OutputExistsError
from fairy.single_file import ldm_state_dict, load_components_from_single_file, save_single_file
from fairy.tiny import build_tiny_components

SUFFIXES = [".safetensors", ".ckpt"]


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once at import, so set the constant too;
    # an empty cache keeps configs cached on this machine from hiding a lookup.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty_hf_cache")))


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components(seed=0)


@pytest.fixture(scope="module")
def config_folder(tiny, tmp_path_factory):
    """The tiny model as a diffusers folder: what ``config=`` points at."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    folder = tmp_path_factory.mktemp("diffusers") / "tiny-ip2p"
    pipe = StableDiffusionInstructPix2PixPipeline(
        **tiny, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """The tiny model exported once per format: {suffix: path}."""
    folder = tmp_path_factory.mktemp("single_file")
    return {suffix: save_single_file(tiny, folder / f"tiny{suffix}") for suffix in SUFFIXES}


def _read_checkpoint(path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _unet_inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 8, 8, 8, generator=generator)
    hidden = torch.randn(2, 5, 32, generator=generator)
    return sample, torch.tensor([10, 500]), hidden


# ----------------------------------------------------------------------- round trip


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_restores_every_weight_and_the_unet_output(tiny, config_folder, exported, suffix):
    loaded = load_components_from_single_file(exported[suffix], config=config_folder)

    assert set(loaded) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    for name in ("unet", "vae", "text_encoder"):
        original, restored = tiny[name].state_dict(), loaded[name].state_dict()
        assert set(restored) == set(original), name
        unequal = [key for key in original if not torch.equal(original[key], restored[key])]
        assert unequal == [], f"{name}: {unequal[:5]}"

    sample, timesteps, hidden = _unet_inputs()
    with torch.no_grad():
        expected = tiny["unet"](sample, timesteps, encoder_hidden_states=hidden).sample
        actual = loaded["unet"](sample, timesteps, encoder_hidden_states=hidden).sample
    assert torch.equal(actual, expected)

    # Tokenizer and scheduler come from the config folder, unchanged.
    assert loaded["tokenizer"]("make it snowy").input_ids == tiny["tokenizer"]("make it snowy").input_ids
    assert type(loaded["scheduler"]) is type(tiny["scheduler"])
    assert loaded["scheduler"].config.beta_schedule == tiny["scheduler"].config.beta_schedule


def test_torch_dtype_is_applied(tiny, config_folder, exported):
    loaded = load_components_from_single_file(exported[".safetensors"], config=config_folder, torch_dtype=torch.float16)

    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in loaded[name].parameters()} == {torch.float16}, name
    original = tiny["unet"].conv_in.weight.detach().half()
    assert torch.equal(loaded["unet"].conv_in.weight.detach(), original)


def test_training_checkpoint_loads_its_ema_unet(tiny, config_folder, tmp_path):
    from safetensors.torch import save_file

    state = ldm_state_dict(tiny)
    unet_keys = [key for key in state if key.startswith("model.diffusion_model.")]
    # LDM's LitEma stores "model.diffusion_model.a.b.weight" as "model_ema.diffusion_modelabweight".
    ema = {"model_ema." + key[len("model.") :].replace(".", ""): state[key] + 1 for key in unet_keys}
    # The other extras of an original training checkpoint, which loading must tolerate.
    extras = {
        "betas": torch.linspace(0.00085, 0.012, 1000),
        "alphas_cumprod": torch.ones(1000),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(22000, dtype=torch.int32),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(32)[None],
    }
    path = tmp_path / "trained.safetensors"
    save_file({**state, **ema, **extras}, path)

    loaded = load_components_from_single_file(path, config=config_folder)

    original = tiny["unet"].state_dict()
    assert all(torch.equal(value, original[key] + 1) for key, value in loaded["unet"].state_dict().items())
    assert torch.equal(loaded["vae"].decoder.conv_out.weight, tiny["vae"].decoder.conv_out.weight)
    text_encoder = tiny["text_encoder"].state_dict()
    assert all(torch.equal(value, text_encoder[key]) for key, value in loaded["text_encoder"].state_dict().items())


def test_ckpt_with_pickled_objects_is_refused(config_folder, tiny, tmp_path):
    path = tmp_path / "lightning.ckpt"
    # A training checkpoint pickling a Python object (here a slice) next to the weights.
    torch.save({"state_dict": ldm_state_dict(tiny), "hyper_parameters": {"crop": slice(0, 8)}}, path)

    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(path, config=config_folder)
    assert "lightning.ckpt" in _one_line(error) and ".safetensors" in str(error.value)


# ----------------------------------------------------------------------- the LDM layout itself


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_export_uses_the_original_ldm_names_and_shapes(tiny, exported, suffix):
    state = _read_checkpoint(exported[suffix])

    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(key.startswith(prefixes) for key in state)
    n_weights = sum(len(tiny[name].state_dict()) for name in ("unet", "vae", "text_encoder"))
    assert len(state) == n_weights
    # 2 levels x 1 layer: input_blocks 1 (resnet+attn), 2 (downsample), 3 (resnet+attn);
    # output_blocks 0-3, level 0's upsampler after its attention on block 1.
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 8
    assert "model.diffusion_model.input_blocks.2.0.op.weight" in state
    assert "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight" in state
    assert "model.diffusion_model.middle_block.2.out_layers.3.weight" in state
    assert "model.diffusion_model.output_blocks.1.2.conv.weight" in state
    assert "model.diffusion_model.output_blocks.3.0.skip_connection.weight" in state
    assert "model.diffusion_model.time_embed.2.bias" in state
    # VAE: LDM numbers decoder levels bottom-up and keeps attention as 1x1 convs.
    q = state["first_stage_model.encoder.mid.attn_1.q.weight"]
    assert q.ndim == 4 and q.shape[2:] == (1, 1)
    assert torch.equal(q[:, :, 0, 0], tiny["vae"].encoder.mid_block.attentions[0].to_q.weight)
    assert torch.equal(
        state["first_stage_model.decoder.up.0.block.0.conv1.weight"],
        tiny["vae"].decoder.up_blocks[-1].resnets[0].conv1.weight,
    )
    assert "first_stage_model.decoder.norm_out.weight" in state
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in state


def _unet(**overrides):
    from diffusers import UNet2DConditionModel

    config = dict(
        sample_size=16,
        in_channels=8,
        out_channels=4,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    config.update(overrides)
    torch.manual_seed(3)
    return UNet2DConditionModel(**config)


# Stable Diffusion 1.5's block structure at toy width, so its key names are SD 1.5's.
SD15_SHAPED = dict(
    layers_per_block=2,
    block_out_channels=(16, 16, 16, 16),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
# Three levels, a plain level in the middle, 2 transformer layers, linear projections (SD 2 style).
MIXED = dict(
    layers_per_block=1,
    block_out_channels=(16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
    transformer_layers_per_block=2,
    use_linear_projection=True,
)


def test_sd15_shaped_unet_gets_the_published_sd15_key_names(tiny):
    state = ldm_state_dict({**tiny, "unet": _unet(**SD15_SHAPED)})

    # Keys of the released SD 1.5 / InstructPix2Pix checkpoints (diffusers sniffs the first one).
    for key in (
        "output_blocks.11.0.skip_connection.weight",
        "input_blocks.3.0.op.weight",
        "input_blocks.9.0.op.weight",
        "input_blocks.11.0.in_layers.0.weight",
        "input_blocks.8.1.proj_in.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "output_blocks.8.2.conv.weight",
        "output_blocks.11.1.transformer_blocks.0.ff.net.2.weight",
        "out.2.weight",
    ):
        assert f"model.diffusion_model.{key}" in state, key
    assert not any(key.startswith("model.diffusion_model.input_blocks.12") for key in state)
    assert not any(key.startswith("model.diffusion_model.output_blocks.12") for key in state)


@pytest.mark.parametrize("unet_config", [SD15_SHAPED, MIXED], ids=["sd15-shaped", "mixed"])
def test_other_unet_configs_round_trip_through_diffusers(tiny, tmp_path, unet_config):
    from diffusers import UNet2DConditionModel

    unet = _unet(**unet_config)
    unet.save_config(tmp_path / "config" / "unet")
    path = save_single_file({**tiny, "unet": unet}, tmp_path / "model.safetensors")

    loaded = UNet2DConditionModel.from_single_file(
        str(path), config=str(tmp_path / "config"), subfolder="unet", local_files_only=True
    )

    original, restored = unet.state_dict(), loaded.state_dict()
    assert set(restored) == set(original)
    assert [key for key in original if not torch.equal(original[key], restored[key])] == []


def test_unet_with_uneven_layers_per_block_is_refused(tiny, tmp_path):
    unet = _unet(
        layers_per_block=(1, 2),
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 2,
        up_block_types=("CrossAttnUpBlock2D",) * 2,
    )
    with pytest.raises(InvalidInputError, match="layers_per_block"):
        save_single_file({**tiny, "unet": unet}, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- writing safely


def test_existing_output_is_refused_and_kept(tiny, tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"someone else's file")

    with pytest.raises(OutputExistsError, match="model.safetensors"):
        save_single_file(tiny, target)
    assert target.read_bytes() == b"someone else's file"

    save_single_file(tiny, target, overwrite=True)
    assert "model.diffusion_model.input_blocks.0.0.weight" in _read_checkpoint(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_failed_write_leaves_no_file(tiny, tmp_path, monkeypatch):
    import safetensors.torch

    def write_half_then_fail(state, filename, metadata=None):
        with open(filename, "wb") as stream:
            stream.write(b"\0" * 1000)
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_single_file(tiny, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "model"])
def test_export_refuses_other_suffixes(tiny, tmp_path, name):
    with pytest.raises(InvalidInputError, match=name):
        save_single_file(tiny, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_missing_folder_and_missing_components(tiny, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        save_single_file(tiny, tmp_path / "nowhere" / "model.ckpt")
    with pytest.raises(InvalidInputError, match="text_encoder"):
        save_single_file({"unet": tiny["unet"], "vae": tiny["vae"]}, tmp_path / "model.ckpt")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- loading errors


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file(config_folder, tmp_path):
    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(tmp_path / "absent.safetensors", config=config_folder)
    assert "absent.safetensors" in _one_line(error)


def test_wrong_extension(config_folder, tmp_path, exported):
    renamed = tmp_path / "tiny.bin"
    shutil.copyfile(exported[".safetensors"], renamed)
    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(renamed, config=config_folder)
    assert "tiny.bin" in _one_line(error)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file(config_folder, exported, tmp_path, suffix, damage):
    good = exported[suffix].read_bytes()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(good[: len(good) // 2] if damage == "truncated" else os.urandom(4096))

    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(broken, config=config_folder)
    assert f"broken{suffix}" in _one_line(error)


def test_checkpoint_that_is_not_instruct_pix2pix(config_folder, tmp_path):
    from safetensors.torch import save_file

    not_sd = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, not_sd)
    with pytest.raises(ModelLoadError, match="LDM"):
        load_components_from_single_file(not_sd, config=config_folder)

    text_to_image = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}, text_to_image)
    with pytest.raises(ModelLoadError, match="4 input channels"):
        load_components_from_single_file(text_to_image, config=config_folder)


def test_config_that_does_not_match_the_file(config_folder, exported, tmp_path):
    wrong = tmp_path / "wrong-config"
    shutil.copytree(config_folder, wrong)
    unet_config = wrong / "unet" / "config.json"
    unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()), "cross_attention_dim": 48}))

    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(exported[".safetensors"], config=wrong)
    message = _one_line(error)
    assert "tiny.safetensors" in message and "different models" in message


def test_config_folder_must_be_a_diffusers_folder(exported, tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_components_from_single_file(exported[".ckpt"], config=tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_components_from_single_file(exported[".ckpt"], config=tmp_path / "no-such-folder")


@pytest.mark.parametrize("config", [None, "timbrooks/instruct-pix2pix"])
def test_offline_without_local_config_says_what_to_do(exported, config):
    with pytest.raises(ModelLoadError) as error:
        load_components_from_single_file(exported[".safetensors"], config=config)
    message = _one_line(error)
    assert "tiny.safetensors" in message
    assert "--config LOCAL_DIFFUSERS_FOLDER" in message


def test_load_pipeline_accepts_a_single_file(tiny, config_folder, exported):
    from fairy.loading import load_pipeline

    pipe = load_pipeline(str(exported[".ckpt"]), device="cpu", config=str(config_folder))

    assert torch.equal(pipe.unet.conv_in.weight, tiny["unet"].conv_in.weight)
    assert torch.equal(pipe.vae.decoder.conv_out.weight, tiny["vae"].decoder.conv_out.weight)
