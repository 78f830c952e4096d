"""Euler Ancestral, the paper's sampler, with every step's noise drawn before the denoising loop.

diffusers' ``EulerAncestralDiscreteScheduler.step`` draws a step's noise from
the frames' CPU generators (``fairy.noise``: a frame's noise depends only on the
seed and its index) and copies it to the device from pageable memory: on a GPU
that copy waits for all the work queued before it, once a step. Here a batch's
noise for every step is drawn up front, from the same generators in the same
order (so the numbers are the same), and copied once, asynchronously from
pinned memory; the step itself is diffusers' arithmetic, on the scheduler's own
sigmas (tested equal to ``scheduler.step``, bit for bit).
"""

from __future__ import annotations

import torch
from diffusers import EulerAncestralDiscreteScheduler

__all__ = ["draws_ahead", "draw_step_noise", "scale_input", "euler_ancestral_step"]


def draws_ahead(scheduler) -> bool:
    """Whether ``scheduler`` is sampled here with its noise drawn ahead (Euler Ancestral, epsilon or v)."""
    return isinstance(scheduler, EulerAncestralDiscreteScheduler) and scheduler.config.prediction_type in (
        "epsilon", "v_prediction")  # fmt: skip


def draw_step_noise(generators: list[torch.Generator], steps: int, shape: tuple[int, ...], *, dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    """``[steps, frames, *shape]``: what each frame's generator gives for each step, in the order
    ``scheduler.step`` would draw it (after the initial latent), copied to ``device`` once."""
    noise = torch.stack([torch.cat([torch.randn((1, *shape), generator=g, dtype=dtype) for g in generators])
                         for _ in range(steps)])  # fmt: skip
    if device.type == "cuda":
        return noise.pin_memory().to(device, non_blocking=True)
    return noise.to(device)


def scale_input(scheduler, sample: torch.Tensor, index: int) -> torch.Tensor:
    """``scheduler.scale_model_input`` at step ``index``."""
    sigma = scheduler.sigmas[index]
    return sample / ((sigma**2 + 1) ** 0.5)


def euler_ancestral_step(scheduler, model_output: torch.Tensor, sample: torch.Tensor, index: int,
                         noise: torch.Tensor) -> torch.Tensor:
    """``scheduler.step(model_output, timesteps[index], sample).prev_sample`` with the step's ``noise`` given."""
    sigma, sigma_to = scheduler.sigmas[index], scheduler.sigmas[index + 1]
    sample = sample.to(torch.float32)  # diffusers upcasts here too
    if scheduler.config.prediction_type == "epsilon":
        predicted = sample - sigma * model_output
    else:  # v_prediction
        predicted = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    derivative = (sample - predicted) / sigma
    previous = sample + derivative * (sigma_down - sigma)
    previous = previous + noise * sigma_up
    return previous.to(model_output.dtype)
