"""Flow-matching noise schedule with shift, spaced as diffusers' flow UniPC or as Wan's reference solvers do.

A sigma is the noise fraction of the flow path x_sigma = (1 - sigma) * x0 + sigma * noise. Both spacings are even
in unshifted time before the shift: diffusers 0.42 (UniPCMultistepScheduler with use_flow_sigmas) from 1 toward
1/1000, Wan's reference (wan/utils/fm_solvers_unipc.py) from its sigma_max 0.999 toward 0.
"""

from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000
# sigma = 1 would make log(1 - sigma) infinite in multistep solvers; the reference nudges it the same way.
FIRST_SIGMA_NUDGE = 1e-6


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma' = shift * sigma / (1 + (shift - 1) * sigma): more steps at high noise as shift grows."""
    return shift * sigma / (1 + (shift - 1) * sigma)


# unshifted (first, end) of the even spacing; the end itself is dropped, and the list closes with sigma 0
SPACINGS = {"diffusers": (1.0, 1.0 / NUM_TRAIN_TIMESTEPS), "wan": (1.0 - 1.0 / NUM_TRAIN_TIMESTEPS, 0.0)}


def flow_sigmas(steps: int, shift: float, spacing: str = "diffusers") -> torch.Tensor:
    """[steps + 1] float64 sigmas from ~1 down to 0, evenly spaced in unshifted time (SPACINGS), then shifted."""
    first, end = SPACINGS[spacing]
    unshifted = torch.linspace(first, end, steps + 1, dtype=torch.float64)[:-1]
    sigmas = shift_sigma(unshifted, shift)
    sigmas[0] = min(sigmas[0].item(), 1.0 - FIRST_SIGMA_NUDGE)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def model_timestep(sigma: float, whole: bool = True) -> float:
    """The time the transformer is conditioned on. Wan's reference solvers pass whole timesteps, so we truncate too;
    the step-distill publishers pass the exact time (whole=False)."""
    return float(int(sigma * NUM_TRAIN_TIMESTEPS)) if whole else sigma * NUM_TRAIN_TIMESTEPS


DISTILL_TIMESTEPS = (1000, 750, 500, 250)  # lightx2v's denoising_step_list for its 4-step distill


def distill_sigmas(timesteps: tuple[int, ...], shift: float) -> torch.Tensor:
    """The step-distill publishers' sigmas, closed by 0: the 1000-step grid 1, 0.999, ..., 0.001 (unshifted), shifted,
    read at index 1000 - t for each of their timesteps t; [1000, 750, 500, 250] at shift 5 gives
    [1.0, 0.9375, 0.8333, 0.625, 0]."""
    grid = shift_sigma(torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float64)[:-1], shift)
    sigmas = grid[[NUM_TRAIN_TIMESTEPS - t for t in timesteps]]
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def strength_start(steps: int, strength: float) -> int:
    """Index of the first sigma of a video-to-video run: the last `strength` part of the schedule is sampled."""
    return steps - max(1, min(int(steps * strength), steps))


def default_flow_shift(width: int, height: int) -> float:
    """3.0 at 480p and below, 5.0 above: the values Wan 2.1 and the hosted APIs use."""
    return 3.0 if width * height <= 832 * 480 else 5.0
