"""Load an InstructPix2Pix-format model as a FairyPipeline.

A model is named by one of:

* a Hugging Face hub id, e.g. ``timbrooks/instruct-pix2pix`` (the default),
  downloaded by diffusers into the user's cache on first use;
* a local diffusers folder (``model_index.json`` with ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/`` and ``scheduler/``);
* a single ``.safetensors`` / ``.ckpt`` checkpoint in the original Stable
  Diffusion layout (``fairy.single_file``), with an optional diffusers-format
  ``config`` folder for the component configs;
* ``builtin:small``: Fairy's own small model, shipped inside the package
  (trained offline on procedural edits, 128 px; ``fairy.training``);
* ``builtin:tiny``: a tiny random-weight model for tests and smoke runs.

A model folder's ``fairy_model.json`` (``fairy.model_info``) gives its working
size and recommended guidance, kept as ``pipe.model_defaults`` (the settings
table's fallbacks for what it does not say): what an edit uses for the settings
its caller leaves unset.

Whatever the model ships as its scheduler, the pipeline samples with Euler
Ancestral (the paper's sampler) configured from the model's scheduler config.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import torch

from . import DEFAULT_MODEL
from .errors import ModelLoadError
from .model_info import SMALL_MODEL_ID, model_defaults, model_folder

__all__ = ["DEFAULT_MODEL", "load_pipeline", "pick_device"]

_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def pick_device(device: str | None = None) -> torch.device:
    """The caller's device, else CUDA when available, else the CPU."""
    if device:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} was asked for, but this PyTorch sees no CUDA GPU")
        return chosen
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _components_from_pretrained(source: str, dtype: torch.dtype, local_files_only: bool | None) -> dict:
    kwargs = {"local_files_only": local_files_only} if local_files_only is not None else {}
    with warnings.catch_warnings():
        # diffusers still passes an argument huggingface_hub deprecated; the user can do nothing about it.
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        return _components(source, dtype, kwargs)


def _components(source: str, dtype: torch.dtype, kwargs: dict) -> dict:
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return {
        "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kwargs),
        "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kwargs),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype, **kwargs),
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs),
        "scheduler": EulerAncestralDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **kwargs),
    }


def sampler_for(scheduler):
    """The sampler a model runs with: Euler Ancestral, as InstructPix2Pix is sampled, on the model's own noise schedule.

    A model trained to predict the clean image (``prediction_type="sample"``,
    as the shipped small model is) runs on plain Euler instead: Euler
    Ancestral in diffusers cannot take that prediction.
    """
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    wanted = EulerDiscreteScheduler if scheduler.config.prediction_type == "sample" else EulerAncestralDiscreteScheduler
    return scheduler if type(scheduler) is wanted else wanted.from_config(scheduler.config)


def load_pipeline(
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    config: str | None = None,
    local_files_only: bool | None = None,
):
    """Load ``model`` (see the module doc) on ``device`` (fp16 on CUDA, fp32 elsewhere unless ``dtype``).

    Raises ModelLoadError with one line naming the problem and the alternatives.
    """
    from .pipeline import FairyPipeline

    target = pick_device(device)
    dtype = dtype or (torch.float16 if target.type == "cuda" else torch.float32)
    if model == SMALL_MODEL_ID:
        if not (model_folder(model) / "unet").is_dir():
            raise ModelLoadError(f"the shipped small model is missing from {model_folder(model)}; reinstall fairy-editor")
        model = str(model_folder(model))
    path = pathlib.Path(model).expanduser()
    if model == "builtin:tiny":
        from .tiny import build_tiny_components

        components = build_tiny_components()
    elif path.suffix.lower() in _SINGLE_FILE_SUFFIXES:
        from .single_file import load_components_from_single_file

        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        components = load_components_from_single_file(path, config=config, torch_dtype=dtype)
    elif path.is_dir():
        if not (path / "unet").is_dir():
            raise ModelLoadError(f"{path} is not a diffusers model folder (it has no unet/ subfolder)")
        try:
            components = _components_from_pretrained(str(path), dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the model folder {path}: {_first_line(exc)}") from exc
    elif model.count("/") == 1 and not model.startswith((".", "/", "~")):
        components = _components_from_hub(model, dtype, local_files_only)
    else:
        raise ModelLoadError(
            f"no model at {model!r}: give a hub id (owner/name), a diffusers folder, a .safetensors/.ckpt file, "
            "builtin:small or builtin:tiny"
        )
    components["scheduler"] = sampler_for(components["scheduler"])
    pipe = FairyPipeline(**components)
    if pipe.unet.dtype != dtype:  # only the built-in model is made in fp32 whatever was asked
        pipe.to(dtype=dtype)
    pipe.to(target)
    pipe.set_progress_bar_config(disable=True)
    pipe.model_defaults = model_defaults(model)
    return pipe


# What a diffusers InstructPix2Pix folder needs; the rest of a hub repository (other weight formats,
# sample images) is not fetched.
_HUB_PATTERNS = ["model_index.json", "*/config.json", "*/*config.json", "*/*.txt", "*/*.json",
                 "*/*.safetensors", "*/*.model"]


def _components_from_hub(model: str, dtype: torch.dtype, local_files_only: bool | None) -> dict:
    """Load a hub id: from the local cache when it is there (no network at all), else, when the hub
    answers, by downloading it; when it is neither cached nor reachable, one line at once."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    instead = ("pass a local diffusers folder, a .safetensors/.ckpt file, or builtin:small "
               "(the small model that ships with Fairy) instead")
    try:
        cached = huggingface_hub.snapshot_download(model, local_files_only=True, allow_patterns=_HUB_PATTERNS)
    except Exception:  # not cached (or only part of it): LocalEntryNotFoundError and kin
        cached = None
    broken = None
    if cached is not None and (pathlib.Path(cached) / "unet").is_dir():
        try:
            return _components_from_pretrained(cached, dtype, local_files_only=True)
        except (OSError, ValueError) as exc:  # an interrupted or damaged download: fetch what is missing
            broken = f"the cached copy of {model!r} ({cached}) is incomplete or corrupt: {_first_line(exc)}"
    if local_files_only or _hub_offline():
        if broken:
            raise ModelLoadError(f"{broken}; delete it, or allow downloads (unset HF_HUB_OFFLINE) to complete it")
        raise ModelLoadError(f"model {model!r} is not in the local Hugging Face cache and downloads are off "
                             f"(HF_HUB_OFFLINE); {instead}")
    try:  # a short, quiet question first, so an offline machine hears in a second, not after retries
        huggingface_hub.model_info(model, timeout=5)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelLoadError(f"the Hugging Face hub has no model {model!r} that this machine may read "
                             f"({_first_line(exc)}); check the name or log in with `hf auth login`") from None
    except Exception as exc:  # connection refused, DNS, timeouts, proxies: the hub is not reachable
        if broken:
            raise ModelLoadError(f"{broken}, and the hub could not be reached to complete it "
                                 f"({type(exc).__name__}: {_first_line(exc)})") from None
        raise ModelLoadError(f"model {model!r} is not in the local Hugging Face cache and the hub could not be "
                             f"reached ({type(exc).__name__}: {_first_line(exc)}); {instead}") from None
    try:
        return _components_from_pretrained(model, dtype, local_files_only=False)
    except Exception as exc:  # the hub answered: whatever failed now is the real cause
        raise ModelLoadError(f"cannot load model {model!r} from the Hugging Face hub: {_first_line(exc)}") from exc


def _hub_offline() -> bool:
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a later change of the variable counts too.
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or (
        os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
