"""The sigma schedule and the samplers against the formulas and diffusers' schedulers."""

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from wan_core.sampling.samplers import sample_euler, sample_unipc
from wan_core.sampling.schedule import flow_sigmas, model_timestep, shift_sigma, strength_start


@pytest.mark.parametrize("steps,shift", [(30, 3.0), (10, 5.0), (1, 1.0), (50, 8.0)])
def test_flow_sigmas_follow_the_shift_formula_and_diffusers(steps, shift):
    sigmas = flow_sigmas(steps, shift)
    unshifted = 1.0 - np.arange(steps) * (1.0 - 1 / 1000) / steps
    expected = shift * unshifted / (1 + (shift - 1) * unshifted)
    assert sigmas[-1] == 0.0 and len(sigmas) == steps + 1
    assert np.allclose(sigmas[1:-1].numpy(), expected[1:], atol=1e-12)
    assert math.isclose(sigmas[0].item(), 1.0 - 1e-6)
    reference = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    reference.set_timesteps(steps)
    assert np.allclose(sigmas.numpy(), reference.sigmas.numpy(), atol=1e-6)
    assert [model_timestep(s) for s in sigmas[:-1].tolist()] == reference.timesteps.tolist()


def test_shift_one_is_identity_and_shift_pushes_noise_up():
    sigma = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(shift_sigma(sigma, 1.0), sigma)
    assert (shift_sigma(sigma[1:-1], 5.0) > sigma[1:-1]).all()


def test_strength_keeps_the_last_part_of_the_schedule():
    assert strength_start(30, 0.9) == 3
    assert strength_start(30, 1.0) == 0
    assert strength_start(10, 0.05) == 9  # always at least one step


def linear_velocity(x, sigma):
    """A stand-in velocity field with a closed form, so the samplers can be compared step by step."""
    return 0.3 * x + sigma


def test_euler_matches_diffusers_flow_match_euler_step():
    sigmas = flow_sigmas(8, 3.0)
    x = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    reference = FlowMatchEulerDiscreteScheduler(shift=1.0)
    reference.set_timesteps(sigmas=sigmas[:-1].tolist())
    expected = x.clone()
    for sigma, timestep in zip(sigmas[:-1].tolist(), reference.timesteps):
        expected = reference.step(linear_velocity(expected, sigma), timestep, expected).prev_sample
    assert torch.allclose(sample_euler(linear_velocity, x, sigmas.tolist()), expected, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 3, 12])
def test_unipc_matches_diffusers_unipc_step_by_step(steps):
    shift = 3.0
    x = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    reference = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    reference.set_timesteps(steps)
    expected = x.clone()
    for i, timestep in enumerate(reference.timesteps):
        expected = reference.step(linear_velocity(expected, reference.sigmas[i].item()), timestep, expected).prev_sample
    assert torch.allclose(sample_unipc(linear_velocity, x, flow_sigmas(steps, shift).tolist()), expected, atol=1e-5)


@pytest.mark.parametrize("sampler", [sample_euler, sample_unipc])
def test_callback_sees_every_step_by_name(sampler):
    seen, sigmas = [], flow_sigmas(6, 3.0).tolist()
    sampler(linear_velocity, torch.zeros(1, 1, 1, 1, 1), sigmas, callback=seen.append)
    assert [(step.i, step.total, step.sigma) for step in seen] == [(i, 6, sigmas[i]) for i in range(6)]
    assert all(step.x.shape == step.denoised.shape == (1, 1, 1, 1, 1) for step in seen)
