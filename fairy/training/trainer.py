"""``fairy train``: InstructPix2Pix-style training with Fairy's equivariant finetuning.

The conventions are the ones ``FairyPipeline`` (and diffusers'
``StableDiffusionInstructPix2PixPipeline``) use at inference, so a trained model
edits correctly through ``fairy edit``:

* the source image's latents are the mode of the VAE posterior, unscaled; the
  edited target's latents are a posterior sample times ``scaling_factor``;
* the UNet sees ``[noisy target latents ; source latents]`` (8 channels for
  4-channel latents) and learns the scheduler's ``prediction_type`` (the noise,
  v, or the clean target itself for ``"sample"``) under the usual MSE loss;
* three conditioning dropouts, each with probability ``conditioning_dropout``:
  the text alone (replaced by the empty instruction's embedding), the image
  alone (zeros as the "no image" latents) and both, so that three-branch
  classifier-free guidance works;
* a base with a 4-channel text-to-image UNet (Stable Diffusion) is widened to
  8 input channels, the new weights zero, as InstructPix2Pix was made.

The output is a diffusers folder (InstructPix2Pix layout) that
``fairy edit --model`` and ``fairy-server --model`` load. It is written under a
temporary name and renamed when complete; checkpoints go to
``OUTPUT-checkpoints/`` and ``--resume`` continues from the newest.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable

import numpy as np
import torch
from fairy_proto.files import atomic_path

from ..errors import InvalidInputError, ModelLoadError, OutputExistsError
from .anchored import (AnchoredTraining, anchored_loss, anchored_predictions, anchored_timesteps, clip_views,
                       consistency_loss)
from .augment import RESIZE_RATIO, augment_pair
from .loop import LoopConfig, run_loop

__all__ = ["TrainConfig", "TrainResult", "train", "checkpoint_dir_for", "load_training_components", "save_model_folder"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: str  # a triplet folder or builtin:procedural
    base: str  # hub id or diffusers folder of the model to start from
    output: pathlib.Path
    steps: int = 1000
    batch_size: int = 16
    resolution: int | None = None  # square training crops; default: the base's working size, else 256
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    equivariant: bool = True
    conditioning_dropout: float = 0.05
    train_text_encoder: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    mixed_precision: str | None = None  # None: bf16 on a CUDA GPU that has it, else fp16 on CUDA, none on the CPU
    device: str | None = None
    resume: bool = False
    # Anchored training (fairy.training.anchored): each example as K anchors and a frame through the anchor and
    # frame passes; None: single images, as InstructPix2Pix trains.
    anchored: AnchoredTraining | None = None
    ambiguous_share: float | None = None  # builtin:procedural only: the ambiguous edits' share (None: uniform)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    output: pathlib.Path
    steps: int
    losses: list[float]
    seconds: float


_TARGETS = ("epsilon", "v_prediction", "sample")  # the scheduler prediction types training can learn


def checkpoint_dir_for(output: pathlib.Path) -> pathlib.Path:
    return output.with_name(output.name + "-checkpoints")


def load_training_components(base: str, device: torch.device) -> dict:
    """The base model's components in fp32 (training keeps fp32 master weights), UNet widened to 8 inputs if needed."""
    from ..loading import _components_from_pretrained, _first_line

    path = pathlib.Path(base).expanduser()
    try:
        if path.is_dir():
            if not (path / "unet").is_dir():
                raise ModelLoadError(f"{path} is not a diffusers model folder (it has no unet/ subfolder)")
            components = _components_from_pretrained(str(path), torch.float32, local_files_only=True)
        elif base.count("/") == 1 and not base.startswith((".", "/", "~")):
            components = _components_from_pretrained(base, torch.float32, None)
        else:
            raise ModelLoadError(f"unknown base model {base!r}: give a hub id (owner/name) or a diffusers model folder")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load the base model {base!r}: {_first_line(exc)}") from exc
    unet = components["unet"]
    latent_channels = components["vae"].config.latent_channels
    if unet.config.in_channels == latent_channels:
        components["unet"] = _widen_conv_in(unet, 2 * latent_channels)
    elif unet.config.in_channels != 2 * latent_channels:
        raise ModelLoadError(
            f"the base UNet takes {unet.config.in_channels} input channels; expected {latent_channels} (text-to-image) "
            f"or {2 * latent_channels} (InstructPix2Pix)"
        )
    for name in ("unet", "vae", "text_encoder"):
        components[name].to(device)
    return components


def _widen_conv_in(unet, channels: int):
    """InstructPix2Pix's surgery: conv_in takes the source latents too, their weights starting at zero."""
    old = unet.conv_in
    new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)
    return unet


def _check_config(config: TrainConfig) -> None:
    if config.steps < 1:
        raise InvalidInputError(f"--steps must be at least 1, got {config.steps}")
    if config.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {config.batch_size}")
    if not 0 <= config.conditioning_dropout <= 1 / 3:
        raise InvalidInputError(f"--conditioning-dropout must lie in [0, 1/3], got {config.conditioning_dropout}")
    if config.learning_rate <= 0:
        raise InvalidInputError(f"--learning-rate must be positive, got {config.learning_rate}")
    if config.ambiguous_share is not None and not 0 <= config.ambiguous_share <= 1:
        raise InvalidInputError(f"--ambiguous-share must lie in [0, 1], got {config.ambiguous_share}")
    if config.anchored and config.batch_size % config.anchored.group:
        raise InvalidInputError(
            f"--batch-size {config.batch_size} must be a multiple of {config.anchored.group} with --anchors "
            f"{config.anchored.anchors} (each example takes its anchors and a frame)")
    output = config.output
    if output.exists():
        raise OutputExistsError(f"the output folder {output} exists; pick a new one (nothing was written)")
    if not output.parent.is_dir():
        raise InvalidInputError(f"the folder {output.parent} does not exist")
    if config.resume and not checkpoint_dir_for(output).is_dir():
        raise InvalidInputError(f"--resume: no checkpoints at {checkpoint_dir_for(output)}")


def _pick_precision(config: TrainConfig, device: torch.device) -> str:
    if config.mixed_precision is not None:
        return config.mixed_precision
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def train(config: TrainConfig, *, should_cancel: Callable[[], bool] | None = None, progress: bool = True) -> TrainResult:
    """Train (see the module doc) and write the model folder ``config.output``."""
    from diffusers import DDPMScheduler

    from ..loading import pick_device
    from .data import open_dataset
    from ..model_info import read_model_info

    started = time.monotonic()
    # 1. Check everything that can be checked before loading a model.
    _check_config(config)
    device = pick_device(config.device)
    precision = _pick_precision(config, device)
    base_info = read_model_info(config.base) if pathlib.Path(config.base).is_dir() else {}
    resolution = config.resolution or int(base_info.get("long_side", 256))
    if resolution < 8:
        raise InvalidInputError(f"--resolution must be at least 8 pixels, got {resolution}")
    # Procedural sources are made with the crops' room to move around them (a longer pan: anchored training's travel),
    # so that the views see the scene at the scale the model works at, never zoomed in to make room.
    travel = config.anchored.travel if config.anchored and config.anchored.travel is not None else RESIZE_RATIO - 1
    dataset = open_dataset(config.data, size=round(resolution * (1 + travel)), seed=config.seed, ambiguous_share=config.ambiguous_share)

    # 2. Load the base model.
    components = load_training_components(config.base, device)
    vae, unet, text_encoder, tokenizer = (components[k] for k in ("vae", "unet", "text_encoder", "tokenizer"))
    latent_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # image pixels per latent pixel
    multiple = latent_factor * 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution % multiple:
        raise InvalidInputError(f"--resolution {resolution} must be a multiple of {multiple} for this model")
    noise_schedule = DDPMScheduler.from_config(components["scheduler"].config)
    prediction_type = noise_schedule.config.prediction_type
    if prediction_type not in _TARGETS:
        raise ModelLoadError(f"cannot train a model whose scheduler predicts {prediction_type!r} ({', '.join(_TARGETS)})")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    unet.requires_grad_(True)
    scaling = vae.config.scaling_factor

    def embed(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids.to(device))[0]

    anchored = config.anchored
    examples = config.batch_size // anchored.group if anchored else config.batch_size
    if anchored:
        from ..attention import AnchorCache, set_anchor_attention

        cache = AnchorCache(store="hidden")
        plain_processors = dict(unet.attn_processors)
        set_anchor_attention(unet, cache)

    # 3. One step: a batch, augmented pairs, latents, dropouts, the diffusion loss.
    def batch(step: int, random) -> tuple:
        if not anchored:
            sources, targets, instructions = [], [], []
            for i in range(examples):
                source, target, instruction = dataset[step * examples + i]
                source, target = augment_pair(source, target, resolution, random.numpy, equivariant=config.equivariant)
                sources.append(source)
                targets.append(target)
                instructions.append(instruction)
            return sources, targets, instructions, None, None, None
        # Laid out as every example's anchors, then every example's frame (what anchored_predictions expects).
        # Each view also carries what its noisy input is made from: its target, or for a frame drawn to start
        # from another right answer of its ambiguous edit, that answer.
        clips = [dataset[step * examples + i] for i in range(examples)]
        others = []
        for i in range(examples):
            drawn = random.numpy.random() < anchored.other_answer and hasattr(dataset, "other_answer")
            others.append(dataset.other_answer(step * examples + i, random.numpy) if drawn else None)
        # The grain term compares latents of different views: their offsets must be whole latent pixels.
        aligned = anchored.consistency_weight > 0
        views = [clip_views(source, target, resolution, random.numpy, anchored.group, equivariant=config.equivariant,
                            other=other, travel=anchored.travel, grid=latent_factor if aligned else 1, with_offsets=True)
                 for (source, target, _), other in zip(clips, others)]  # fmt: skip
        order = [(i, v) for i in range(examples) for v in range(anchored.anchors)] + [(i, anchored.anchors) for i in range(examples)]
        noised_from = [views[i][2][v] if (v == anchored.anchors and others[i] is not None) else None for i, v in order]
        switched = torch.tensor([other is not None for other in others])
        return ([views[i][0][v] for i, v in order], [views[i][1][v] for i, v in order], [clips[i][2] for i, _ in order],
                noised_from, switched, [views[i][-1][v] for i, v in order])  # fmt: skip

    def loss_fn(step: int, random) -> torch.Tensor:
        sources, targets, instructions, noised_from, switched, offsets = batch(step, random)
        count = len(sources)
        sources = torch.stack(sources).to(device) * 2 - 1
        targets = torch.stack(targets).to(device) * 2 - 1
        with torch.no_grad():
            source_latents = vae.encode(sources).latent_dist.mode()
            posterior = vae.encode(targets).latent_dist
            target_latents = (posterior.mean + posterior.std * _randn(posterior.mean.shape, random.torch, device)) * scaling
        noise = _randn(target_latents.shape, random.torch, device)
        total = noise_schedule.config.num_train_timesteps
        start_latents = target_latents
        if anchored:
            timesteps = anchored_timesteps(examples, anchored, total, random.torch, switched).to(device)
            if switched.any():  # those frames' noisy inputs are made from their other answers
                rows = examples * anchored.anchors + torch.nonzero(switched).flatten()
                with torch.no_grad():
                    other = vae.encode(torch.stack([noised_from[r] for r in rows.tolist()]).to(device) * 2 - 1).latent_dist
                    start_latents = target_latents.clone()
                    start_latents[rows.to(device)] = (other.mean + other.std * _randn(other.mean.shape, random.torch, device)) * scaling
        else:
            timesteps = torch.randint(0, total, (count,), generator=random.torch).to(device)
        noisy = noise_schedule.add_noise(start_latents, noise, timesteps)

        # InstructPix2Pix's dropouts from one uniform draw per example: [0, p) text, [p, 2p) both, [2p, 3p) image.
        # (An anchored example's anchors and frame drop the same conditioning, as a clip's frames share it.)
        p = config.conditioning_dropout
        draw = torch.rand(examples, generator=random.torch).to(device)
        if anchored:
            draw = torch.cat([draw.repeat_interleave(anchored.anchors), draw])
        drop_text = draw < 2 * p
        drop_image = (draw >= p) & (draw < 3 * p)
        text = embed(instructions)
        if drop_text.any():
            text = torch.where(drop_text[:, None, None], embed([""]).expand_as(text), text)
        source_latents = source_latents * (~drop_image).to(source_latents.dtype)[:, None, None, None]

        model_input = torch.cat([noisy, source_latents], dim=1)
        if anchored:
            prediction = anchored_predictions(unet, cache, model_input, timesteps, text, examples, anchored.anchors)
        else:
            prediction = unet(model_input, timesteps, encoder_hidden_states=text).sample
        if prediction_type == "epsilon":
            goal = noise
        elif prediction_type == "sample":
            goal = target_latents
        else:
            goal = noise_schedule.get_velocity(target_latents, noise, timesteps)
        if anchored:
            loss = anchored_loss(prediction, goal, examples, anchored)
            if anchored.consistency_weight > 0:
                estimates = _clean_estimates(prediction, noisy, timesteps, prediction_type, noise_schedule)
                # An epsilon or v model's estimate of nearly pure noise is its error amplified (divided by a tiny
                # sqrt(alpha_bar)): each frame's term counts alpha_bar times, so those cannot swamp the rest.
                frame_weights = None
                if prediction_type != "sample":
                    frame_weights = noise_schedule.alphas_cumprod.to(device)[timesteps[examples * anchored.anchors :]]
                term = consistency_loss(estimates, offsets, examples, anchored.anchors, latent_factor, frame_weights)
                loss = loss + anchored.consistency_weight * term
            return loss
        return torch.nn.functional.mse_loss(prediction.float(), goal.float())

    trained = {"unet": unet} | ({"text_encoder": text_encoder} if config.train_text_encoder else {})
    loop = LoopConfig(
        steps=config.steps, learning_rate=config.learning_rate, lr_schedule=config.lr_schedule,
        warmup_steps=config.warmup_steps, seed=config.seed, checkpoint_every=config.checkpoint_every,
        mixed_precision=precision, description="train",
    )  # fmt: skip
    try:
        losses = run_loop(trained, loss_fn, loop, checkpoint_dir_for(config.output), resume=config.resume,
                          device=device, should_cancel=should_cancel, progress=progress)  # fmt: skip
    finally:
        if anchored:
            unet.set_attn_processor(plain_processors)  # the saved model is a plain diffusers UNet

    # 4. Write the model folder, whole or not at all.
    info = dict(base_info)
    info["training"] = {
        "base": str(config.base), "data": str(config.data), "steps": config.steps, "batch_size": config.batch_size,
        "resolution": resolution, "learning_rate": config.learning_rate, "lr_schedule": config.lr_schedule,
        "equivariant": config.equivariant, "conditioning_dropout": config.conditioning_dropout,
        "train_text_encoder": config.train_text_encoder, "seed": config.seed, "final_loss": float(np.mean(losses[-50:])),
        "anchored": dataclasses.asdict(config.anchored) if config.anchored else None,
        "ambiguous_share": config.ambiguous_share,
        "previous": base_info.get("training"),
    }  # fmt: skip
    save_model_folder(components, config.output, info)
    return TrainResult(config.output, config.steps, losses, time.monotonic() - started)


def _clean_estimates(prediction: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, prediction_type: str,
                     noise_schedule) -> torch.Tensor:
    """The model's estimate of the clean latents, whatever it predicts (sample, epsilon or v)."""
    if prediction_type == "sample":
        return prediction
    alpha_bar = noise_schedule.alphas_cumprod.to(noisy.device)[timesteps].view(-1, 1, 1, 1).to(noisy.dtype)
    if prediction_type == "epsilon":
        return (noisy - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
    return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * prediction


def _randn(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU from the step's generator, so a run repeats exactly on any device.
    return torch.randn(shape, generator=generator).to(device)


def save_model_folder(components: dict, output: pathlib.Path, info: dict | None = None) -> None:
    """Save components as an InstructPix2Pix diffusers folder (+ ``fairy_model.json``), atomically."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ..model_info import write_model_info

    if output.exists():
        raise OutputExistsError(f"the output folder {output} exists; pick a new one")
    with atomic_path(output) as partial:  # a hidden folder beside output, renamed onto it when complete
        pipe = StableDiffusionInstructPix2PixPipeline(
            vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
            unet=components["unet"], scheduler=components["scheduler"], safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
        pipe.save_pretrained(partial)
        if info:
            write_model_info(partial, info)
