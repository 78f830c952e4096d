"""The optimisation loop ``fairy train`` and the small model's autoencoder share.

A step's randomness comes from (seed, step) alone, and checkpoints hold the
weights, the optimiser and the learning-rate schedule: so a run resumed from a
checkpoint ends with the same weights as one that never stopped. Checkpoints
are written under a temporary name and renamed, so a crash never leaves a torn
one; the two newest are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import re
import sys
from collections.abc import Callable

import numpy as np
import torch
from fairy_proto.files import atomic_path

from ..errors import EditCancelled, InvalidInputError

__all__ = ["LoopConfig", "StepRandom", "run_loop", "latest_checkpoint"]

_CHECKPOINT = re.compile(r"^step-(\d{7})\.pt$")
_KEEP_CHECKPOINTS = 2


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (both after a linear warm-up)
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    mixed_precision: str = "no"  # no | fp16 | bf16 (CUDA only)
    description: str = "train"


@dataclasses.dataclass
class StepRandom:
    """The randomness of one step: a numpy generator (data, augmentation) and a torch one (noise, timesteps)."""

    numpy: np.random.Generator
    torch: torch.Generator

    @classmethod
    def for_step(cls, seed: int, step: int) -> "StepRandom":
        numpy = np.random.default_rng([seed, step, 1])
        generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, step, 2]).integers(2**62)))
        return cls(numpy, generator)


def latest_checkpoint(folder: pathlib.Path) -> pathlib.Path | None:
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if _CHECKPOINT.match(p.name))
    return found[-1] if found else None


def _lr_factor(config: LoopConfig, step: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        span = max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - config.warmup_steps) / span)))
    return 1.0


def run_loop(
    modules: dict[str, torch.nn.Module],
    loss_fn: Callable[[int, StepRandom], torch.Tensor],
    config: LoopConfig,
    checkpoint_dir: pathlib.Path,
    *,
    resume: bool = False,
    device: torch.device = torch.device("cpu"),
    should_cancel: Callable[[], bool] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train the parameters of ``modules`` that require grad for ``config.steps`` steps; returns every step's loss.

    ``loss_fn(step, random)`` computes the loss of one step. With ``resume`` the
    newest checkpoint in ``checkpoint_dir`` is loaded first (refused if it was
    written for other modules).
    """
    if config.lr_schedule not in ("constant", "cosine"):
        raise InvalidInputError(f"lr_schedule must be constant or cosine, got {config.lr_schedule!r}")
    if config.mixed_precision not in ("no", "fp16", "bf16"):
        raise InvalidInputError(f"mixed precision must be no, fp16 or bf16, got {config.mixed_precision!r}")
    if config.mixed_precision != "no" and device.type != "cuda":
        raise InvalidInputError(f"mixed precision {config.mixed_precision} needs a CUDA device; train on the CPU with 'no'")
    parameters = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(config, step))
    scaler = torch.amp.GradScaler("cuda", enabled=config.mixed_precision == "fp16")
    losses: list[float] = []
    start = 0
    checkpoint = latest_checkpoint(checkpoint_dir) if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if sorted(state["modules"]) != sorted(modules):
            raise InvalidInputError(f"checkpoint {checkpoint} holds {sorted(state['modules'])}, not {sorted(modules)}")
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        start, losses = state["step"], list(state["losses"])
    if start >= config.steps:
        return losses

    from tqdm import tqdm

    autocast = (
        torch.autocast("cuda", dtype=torch.float16 if config.mixed_precision == "fp16" else torch.bfloat16)
        if config.mixed_precision != "no"
        else contextlib.nullcontext()
    )
    for module in modules.values():
        module.train(any(p.requires_grad for p in module.parameters()))
    bar = tqdm(total=config.steps, initial=start, desc=config.description, unit="step", disable=not progress,
               file=sys.stderr, mininterval=2.0, dynamic_ncols=True)  # fmt: skip
    try:
        for step in range(start, config.steps):
            if should_cancel is not None and should_cancel():
                raise EditCancelled("training was cancelled; the newest checkpoint is kept for --resume")
            with autocast:
                loss = loss_fn(step, StepRandom.for_step(config.seed, step))
            if not torch.isfinite(loss):
                raise InvalidInputError(f"the loss became {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(float(loss.detach()))
            recent = losses[-50:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
            bar.update(1)
            done = step + 1
            if done % config.checkpoint_every == 0 or done == config.steps:
                _save_checkpoint(checkpoint_dir, done, modules, optimizer, schedule, scaler, losses)
    finally:
        bar.close()
        for module in modules.values():
            module.eval()
    return losses


def _save_checkpoint(folder: pathlib.Path, step: int, modules, optimizer, schedule, scaler, losses) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "losses": losses,
    }
    final = folder / f"step-{step:07d}.pt"
    with atomic_path(final, overwrite=True) as partial:  # a hidden name _CHECKPOINT never matches
        torch.save(state, partial)
    for old in sorted(p for p in folder.iterdir() if _CHECKPOINT.match(p.name))[:-_KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
