"""Euler Ancestral with every step's noise drawn ahead (fairy.sampling) is diffusers' sampler, bit for bit."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

from fairy.noise import frame_generators
from fairy.sampling import draw_step_noise, draws_ahead, euler_ancestral_step, scale_input


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drawing_ahead_gives_diffusers_steps_bit_for_bit(prediction_type, dtype):
    config = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type)
    ours, theirs = EulerAncestralDiscreteScheduler(**config), EulerAncestralDiscreteScheduler(**config)
    assert draws_ahead(ours)
    steps, shape = 6, (4, 8, 6)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(steps)
    ahead_generators, step_generators = frame_generators(3, [0, 5, 9]), frame_generators(3, [0, 5, 9])
    noise = draw_step_noise(ahead_generators, steps, shape, dtype=dtype, device=torch.device("cpu"))
    assert noise.shape == (steps, 3, *shape)
    torch.manual_seed(0)
    sample = (torch.randn(3, *shape) * ours.init_noise_sigma).to(dtype)
    mine = theirs_sample = sample
    for i, t in enumerate(theirs.timesteps):
        output = torch.randn(3, *shape).to(dtype)  # a stand-in for the UNet's prediction
        assert torch.equal(scale_input(ours, mine, i), theirs.scale_model_input(theirs_sample, t))
        mine = euler_ancestral_step(ours, output, mine, i, noise[i])
        theirs_sample = theirs.step(output, t, theirs_sample, generator=step_generators, return_dict=False)[0]
        assert torch.equal(mine, theirs_sample), f"step {i}"


def test_other_samplers_step_as_diffusers_does():
    assert not draws_ahead(EulerDiscreteScheduler())
    assert not draws_ahead(EulerAncestralDiscreteScheduler(prediction_type="sample"))
