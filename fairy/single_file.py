"""InstructPix2Pix models as one checkpoint file in the original Stable Diffusion ("LDM") layout.

Published InstructPix2Pix weights (timbrooks' ``instruct-pix2pix-00-22000``)
and most community fine-tunes ship as a single ``.safetensors`` or ``.ckpt``
whose keys follow the original CompVis code: ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE) and ``cond_stage_model.transformer.*`` (CLIP text
encoder). Loading goes through diffusers' own single-file loader; the weights
never need a network, only the component *configs* do, and those come from a
local diffusers-format folder when ``config`` names one.

Exporting is the reverse: diffusers modules -> one LDM-layout file that
diffusers (and other Stable Diffusion tools) read back. The key mapping is
derived from the block structure, so it holds for any ``UNet2DConditionModel``
the LDM layout can express (any number of levels and layers), not only SD 1.5.
"""

from __future__ import annotations

import os
import pathlib
import re
import zipfile

from fairy_proto.files import atomic_path

from .errors import InvalidInputError, ModelLoadError, OutputExistsError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_CONFIG_REPO",
    "ldm_state_dict",
    "save_single_file",
    "load_components_from_single_file",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")

# The diffusers-format twin of timbrooks' checkpoint: the repo diffusers itself
# picks for a config-less checkpoint whose UNet takes 8 input channels
# (infer_diffusers_model_type -> "instruct-pix2pix"). It is resolved here, before
# the weights are read, so a missing network fails at once, not after gigabytes.
DEFAULT_CONFIG_REPO = "timbrooks/instruct-pix2pix"

# The same file patterns diffusers fetches for a single-file load: configs,
# tokenizer vocabularies, never weights.
_CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]

_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
_TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."
_CONV_IN_KEY = _UNET_PREFIX + "input_blocks.0.0.weight"
_INSTRUCT_PIX2PIX_IN_CHANNELS = 8  # 4 noisy latents + 4 source-image latents
_MIN_EMA_KEYS = 100  # diffusers' own threshold for "this checkpoint has EMA weights"


# --------------------------------------------------------------------------
# diffusers -> LDM key mapping
# --------------------------------------------------------------------------

# UNet modules outside the down/mid/up blocks.
_UNET_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # class-conditioned and SDXL-style UNets keep their extra embedding in label_emb.
    "class_embedding": "label_emb",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}

# ResnetBlock2D children: diffusers name -> LDM ResBlock name.
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}

_VAE_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}

# The VAE's mid-block attention is a 1x1-conv AttnBlock in LDM, Linear layers in diffusers.
_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}

_VAE_TOP_LEVEL = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.conv_norm_out": "decoder.norm_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def _renamed_child(rest: str, parts: dict[str, str]) -> str | None:
    """``rest`` with its leading child module renamed by ``parts``; None when the child is unknown."""
    for old, new in parts.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return None


def _uniform_layers_per_block(unet) -> int:
    layers = unet.config.layers_per_block
    if isinstance(layers, int):
        return layers
    if len(set(layers)) == 1:
        return int(layers[0])
    # The LDM layout numbers input/output blocks with one stride for every level.
    raise InvalidInputError(
        f"a UNet with a different layers_per_block per level ({list(layers)}) has no original LDM layout"
    )


def _unet_key_to_ldm(key: str, stride: int, layers: int, up_levels_with_attention: set[int]) -> str | None:
    # LDM numbers the UNet as flat lists: input_blocks[0] is conv_in, then each
    # level contributes `layers` (resnet [+ attention]) entries and one
    # downsampler; output_blocks get `layers + 1` entries per level, the
    # upsampler riding on the last one. `stride` = layers + 1.
    module, param = _split_param(key)
    if module in _UNET_TOP_LEVEL:
        return f"{_UNET_TOP_LEVEL[module]}.{param}"

    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level, layer, rest = int(m[1]), int(m[2]), m[3]
        inner = _renamed_child(rest, _UNET_RESNET_PARTS)
        return inner and f"input_blocks.{1 + level * stride + layer}.0.{inner}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        level, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + level * stride + layer}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        level, param = int(m[1]), m[2]
        return f"input_blocks.{1 + level * stride + layers}.0.op.{param}"

    # middle_block alternates resnet, attention, resnet.
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        inner = _renamed_child(m[2], _UNET_RESNET_PARTS)
        return inner and f"middle_block.{2 * int(m[1])}.{inner}"
    if m := re.fullmatch(r"mid_block\.attentions\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1]) + 1}.{m[2]}"

    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level, layer, rest = int(m[1]), int(m[2]), m[3]
        inner = _renamed_child(rest, _UNET_RESNET_PARTS)
        return inner and f"output_blocks.{level * stride + layer}.0.{inner}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        level, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{level * stride + layer}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        level, param = int(m[1]), m[2]
        # The upsampler follows the attention when the level has one.
        slot = 2 if level in up_levels_with_attention else 1
        return f"output_blocks.{level * stride + layers}.{slot}.conv.{param}"
    return None


def _unet_to_ldm(unet) -> dict:
    layers = _uniform_layers_per_block(unet)
    state = unet.state_dict()
    mid_resnets = {k.split(".")[2] for k in state if k.startswith("mid_block.resnets.")}
    if len(mid_resnets) > 2:
        # diffusers reads middle_block back as exactly resnet, attention, resnet.
        raise InvalidInputError(
            f"a UNet mid block with {len(mid_resnets) - 1} layers has no original LDM layout (it has 1)"
        )
    up_with_attention = {int(k.split(".")[1]) for k in state if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    converted, unmapped = {}, []
    for key, tensor in state.items():
        ldm_key = _unet_key_to_ldm(key, layers + 1, layers, up_with_attention)
        if ldm_key is None:
            unmapped.append(key)
        else:
            converted[_UNET_PREFIX + ldm_key] = tensor
    _refuse_unmapped("UNet", unmapped)
    return converted


def _vae_key_to_ldm(key: str, num_up_levels: int) -> tuple[str, bool] | None:
    """The LDM key, and whether the tensor is an attention projection stored as a 1x1 conv there."""
    module, param = _split_param(key)
    if module in _VAE_TOP_LEVEL:
        return f"{_VAE_TOP_LEVEL[module]}.{param}", False

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        inner = _renamed_child(m[3], _VAE_RESNET_PARTS)
        return inner and (f"encoder.down.{m[1]}.block.{m[2]}.{inner}", False)
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    # LDM's decoder counts its levels from the lowest resolution up; diffusers' the other way.
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        inner = _renamed_child(m[3], _VAE_RESNET_PARTS)
        level = num_up_levels - 1 - int(m[1])
        return inner and (f"decoder.up.{level}.block.{m[2]}.{inner}", False)
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        level = num_up_levels - 1 - int(m[1])
        return f"decoder.up.{level}.upsample.conv.{m[2]}", False

    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        inner = _renamed_child(m[3], _VAE_RESNET_PARTS)
        return inner and (f"{m[1]}.mid.block_{int(m[2]) + 1}.{inner}", False)
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        inner = _renamed_child(m[2], _VAE_ATTENTION_PARTS)
        is_projection = inner is not None and not inner.startswith("norm.") and param == "weight"
        return inner and (f"{m[1]}.mid.attn_1.{inner}", is_projection)
    return None


def _vae_to_ldm(vae) -> dict:
    state = vae.state_dict()
    num_up_levels = len({k.split(".")[2] for k in state if k.startswith("decoder.up_blocks.")})
    converted, unmapped = {}, []
    for key, tensor in state.items():
        mapped = _vae_key_to_ldm(key, num_up_levels)
        if mapped is None:
            unmapped.append(key)
            continue
        ldm_key, is_conv_projection = mapped
        converted[_VAE_PREFIX + ldm_key] = tensor[:, :, None, None] if is_conv_projection else tensor
    _refuse_unmapped("VAE", unmapped)
    return converted


def _text_encoder_to_ldm(text_encoder) -> dict:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level);
    # the LDM layout always has it.
    converted = {}
    for key, tensor in text_encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue  # a non-trainable index buffer, rebuilt on load
        inner = key if key.startswith("text_model.") else "text_model." + key
        converted[_TEXT_ENCODER_PREFIX + inner] = tensor
    return converted


def _refuse_unmapped(component: str, unmapped: list[str]) -> None:
    if unmapped:
        shown = ", ".join(unmapped[:3]) + (f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else "")
        raise InvalidInputError(f"the {component} has weights with no original LDM name: {shown}")


def ldm_state_dict(components: dict) -> dict:
    """The UNet, VAE and text encoder of ``components`` as one state dict in the original LDM layout."""
    missing = [name for name in ("unet", "vae", "text_encoder") if components.get(name) is None]
    if missing:
        raise InvalidInputError(
            f"components lack {', '.join(missing)}; a single-file model needs unet, vae and text_encoder"
        )
    state = {}
    state.update(_unet_to_ldm(components["unet"]))
    state.update(_vae_to_ldm(components["vae"]))
    state.update(_text_encoder_to_ldm(components["text_encoder"]))
    # Contiguous CPU tensors (safetensors refuses strided views). Like state_dict(), they may
    # share memory with the modules: no second copy of a multi-GB model just to write it.
    return {key: tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def save_single_file(components: dict, path, *, overwrite: bool = False) -> pathlib.Path:
    """Write ``components`` (unet, vae, text_encoder; others ignored) as one LDM-layout checkpoint.

    ``.safetensors`` is written with safetensors, ``.ckpt`` as ``{"state_dict": ...}``
    with ``torch.save``. The file appears complete or not at all (temporary file in
    the same folder, then ``os.replace``). Returns the path written.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise InvalidInputError(f"cannot write {path.name}: a single-file model ends in .safetensors or .ckpt")
    if path.is_dir():
        raise OutputExistsError(f"output path {path} is a folder")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output file {path} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise InvalidInputError(f"output folder {path.parent} does not exist")

    state = ldm_state_dict(components)

    # overwrite was checked above with this module's own message; flushed to the disk before the rename.
    with atomic_path(path, overwrite=True, fsync=True) as temp:
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(temp), metadata={"format": "pt"})
        else:
            import torch

            torch.save({"state_dict": state}, temp)
    return path


# --------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _checkpoint_shapes(path: pathlib.Path) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of the checkpoint, read cheaply (header or memory map); None for legacy pickles.

    Raises ModelLoadError for a file that is not a readable checkpoint.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as reader:
                return {key: tuple(reader.get_slice(key).get_shape()) for key in reader.keys()}
        except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
            raise ModelLoadError(f"{path} is not a readable .safetensors file: {_first_line(error)}") from error

    if not zipfile.is_zipfile(path):
        # torch.save's pre-1.6 format is a bare pickle stream (protocol 2 opcode first);
        # diffusers reads it, only not memory-mapped, so it is left to diffusers.
        with open(path, "rb") as stream:
            if stream.read(2) == b"\x80\x02":
                return None
        raise ModelLoadError(
            f"{path} is not a readable .ckpt file: neither a complete zip archive nor a legacy pickle"
        )
    import torch

    try:
        # mmap: only the pickle is parsed here; tensor data stays on disk.
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        if "weights only load failed" in str(error).lower():
            # Training checkpoints can pickle arbitrary Python objects (optimizer
            # hooks, configs); unpickling those could run code, so they are refused.
            raise ModelLoadError(
                f"{path} holds pickled Python objects besides weights, which are not loaded for safety; "
                "use a .safetensors version of the model"
            ) from error
        raise ModelLoadError(f"{path} is not a readable .ckpt file: {_first_line(error)}") from error
    while isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ModelLoadError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return {key: tuple(value.shape) for key, value in checkpoint.items() if hasattr(value, "shape")}


def _check_instruct_pix2pix_layout(path: pathlib.Path, shapes: dict[str, tuple[int, ...]]) -> None:
    if _CONV_IN_KEY not in shapes:
        raise ModelLoadError(
            f"{path} is not a Stable Diffusion checkpoint in the original (LDM) layout: it has no {_CONV_IN_KEY}"
        )
    in_channels = shapes[_CONV_IN_KEY][1]
    if in_channels != _INSTRUCT_PIX2PIX_IN_CHANNELS:
        raise ModelLoadError(
            f"{path} has a UNet with {in_channels} input channels; an InstructPix2Pix model has "
            f"{_INSTRUCT_PIX2PIX_IN_CHANNELS} (noisy latents + source-image latents)"
        )
    if not any(key.startswith((_VAE_PREFIX, "vae.")) for key in shapes):
        raise ModelLoadError(f"{path} has no VAE weights ({_VAE_PREFIX}*)")
    if not any(key.startswith("cond_stage_model.") for key in shapes):
        raise ModelLoadError(f"{path} has no text encoder weights (cond_stage_model.*)")


def _is_offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; honour a later setting too.
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _config_folder(config, checkpoint: pathlib.Path) -> pathlib.Path:
    """A local diffusers-format folder with the component configs (fetched when ``config`` is a Hub repo id)."""
    if config is None:
        config = DEFAULT_CONFIG_REPO
    folder = pathlib.Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(f"config folder {folder} is not a diffusers model folder (it has no model_index.json)")
        return folder
    text = str(config)
    looks_like_repo_id = (
        isinstance(config, str)
        and re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None
        and not text.startswith(".")
        and not folder.parent.is_dir()  # "configs/ip2p" next to a local configs/ is a mistyped folder
    )
    if not looks_like_repo_id:
        raise ModelLoadError(f"config folder {folder} does not exist")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        fetched = snapshot_download(text, allow_patterns=_CONFIG_PATTERNS, local_files_only=_is_offline())
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ModelLoadError(
            f"config repo {text} cannot be read on the Hugging Face Hub: {_first_line(error)}"
        ) from error
    except Exception as error:  # offline, no route to the Hub, not cached: all end here
        raise ModelLoadError(
            f"cannot load {checkpoint.name} without a network: its component configs ({text}) are not in the "
            f"Hugging Face cache and the Hub cannot be reached; pass --config LOCAL_DIFFUSERS_FOLDER "
            f"(a diffusers-format InstructPix2Pix folder) to load it offline"
        ) from error
    return pathlib.Path(fetched)


def _refuse_unloaded_weights(path: pathlib.Path, components: dict) -> None:
    # diffusers builds models on the meta device and fills them from the file;
    # a weight the file lacks stays on meta and would fail only at the first step.
    for name in ("unet", "vae", "text_encoder"):
        empty = [param for param, tensor in components[name].named_parameters() if tensor.is_meta]
        if empty:
            raise ModelLoadError(f"{path} lacks {len(empty)} {name} weights for its config (first: {empty[0]})")


def load_components_from_single_file(path, *, config: str | pathlib.Path | None = None, torch_dtype=None) -> dict:
    """Load an InstructPix2Pix checkpoint in the original LDM layout into diffusers components.

    ``config`` gives the component configs (layer sizes, scheduler, tokenizer):
    a local diffusers-format folder (nothing is downloaded) or a Hub repo id
    (only its configs are fetched). None uses ``DEFAULT_CONFIG_REPO``.
    A checkpoint that carries EMA weights (``model_ema.*``) loads its EMA UNet,
    as the InstructPix2Pix authors sample with.

    Returns ``dict(unet, vae, text_encoder, tokenizer, scheduler)``.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(f"{path} is not a single-file model: expected a .safetensors or .ckpt file")

    shapes = _checkpoint_shapes(path)
    if shapes is not None:
        _check_instruct_pix2pix_layout(path, shapes)
    folder = _config_folder(config, path)
    # Training checkpoints may carry EMA weights (model_ema.*) next to the raw ones; the
    # InstructPix2Pix authors sample with the EMA ones (configs/generate.yaml sets use_ema
    # and load_ema, edit_cli.py samples inside model.ema_scope()). diffusers defaults to raw.
    extract_ema = shapes is not None and sum(key.startswith("model_ema.") for key in shapes) > _MIN_EMA_KEYS

    from diffusers import StableDiffusionInstructPix2PixPipeline

    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_single_file(
            str(path),
            config=str(folder),
            torch_dtype=torch_dtype,
            local_files_only=True,  # the configs are local by now; weights come from the file
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            extract_ema=extract_ema,  # forwarded to the UNet's checkpoint conversion
        )
    except Exception as error:
        # diffusers' messages run on with advice that does not apply here; keep the first sentence.
        reason = _first_line(error).split(". ")[0].replace("Cannot load  because ", "")[:300]
        mismatch = re.search(r"size mismatch for [^\n]*", str(error))
        if reason.startswith("Error(s) in loading state_dict") and mismatch:
            # torch's own load_state_dict (diffusers without accelerate) names the mismatch on a later line.
            reason = mismatch.group(0).strip()[:300]
        if "expected shape" in reason or "size mismatch" in reason:
            reason += " (the file and the config folder describe different models)"
        raise ModelLoadError(f"cannot load {path} with the configs in {folder}: {reason}") from error

    components = {
        "unet": pipe.unet,
        "vae": pipe.vae,
        "text_encoder": pipe.text_encoder,
        "tokenizer": pipe.tokenizer,
        "scheduler": pipe.scheduler,
    }
    _refuse_unloaded_weights(path, components)
    return components
