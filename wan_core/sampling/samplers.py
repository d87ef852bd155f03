"""Samplers: short functions over a sigma list, in the style of k-diffusion's sampling.py.

`model(x, sigma)` returns the flow velocity v = noise - x0 for the latents x [B, C, T, H, W].
`callback(step)` is called after every step with a SamplerStep (progress, previews, interrupts): named fields, so
a field added later breaks no caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class SamplerStep:
    i: int  # the step just taken, from 0
    total: int  # steps in this run
    x: torch.Tensor  # latents [B, C, T, H, W] at sigma, before the step
    sigma: float
    denoised: torch.Tensor  # the model's x0 prediction at sigma, shaped like x


Model = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Callable[[SamplerStep], None] | None


def _notify(callback: Callback, i: int, sigmas: list[float], x: torch.Tensor, denoised: torch.Tensor):
    if callback is not None:
        callback(SamplerStep(i=i, total=len(sigmas) - 1, x=x, sigma=sigmas[i], denoised=denoised))


@torch.no_grad()
def sample_euler(model: Model, x: torch.Tensor, sigmas: list[float], callback: Callback = None) -> torch.Tensor:
    """First-order flow ODE steps: x <- x + (sigma_next - sigma) * v."""
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        velocity = model(x, sigma)
        _notify(callback, i, sigmas, x, x - sigma * velocity)
        x = x + (sigma_next - sigma) * velocity
    return x


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma on the flow path."""
    return math.log(1.0 - sigma) - math.log(sigma)


@dataclass(frozen=True)
class _UniPCStep:
    """The coefficients of one UniPC step (B(h) = e^-h - 1, data prediction) from sigma to sigma_next."""

    sigma: float
    sigma_next: float
    h: float  # log-SNR difference
    phi_1: float  # also B(h) for the bh2 variant
    b1: float
    b2: float

    @classmethod
    def between(cls, sigma: float, sigma_next: float) -> _UniPCStep:
        h = _log_snr(sigma_next) - _log_snr(sigma)
        phi_1 = math.expm1(-h)
        phi_2 = phi_1 / -h - 1.0
        phi_3 = phi_2 / -h - 0.5
        return cls(sigma, sigma_next, h, phi_1, phi_2 / phi_1, 2.0 * phi_3 / phi_1)

    def base(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The first-order (DDIM-like) update both the predictor and the corrector start from."""
        return (self.sigma_next / self.sigma) * x - (1.0 - self.sigma_next) * self.phi_1 * x0

    def slope(self, x0: torch.Tensor, previous: tuple[torch.Tensor, float]) -> tuple[torch.Tensor, float]:
        """The first difference of x0 toward the previous step's (x0_prev, sigma_prev), per unit of h; its ratio."""
        x0_prev, sigma_prev = previous
        ratio = (_log_snr(sigma_prev) - _log_snr(self.sigma)) / self.h
        return (x0_prev - x0) / ratio, ratio


def _unipc_predict(x, x0, sigma, sigma_next, previous=None):
    """UniP: x at sigma -> x at sigma_next from x0 (the data prediction at sigma); previous = (x0_prev, sigma_prev)
    adds the second-order term."""
    if sigma_next == 0.0:
        return x0  # the first-order limit; lower-order-final guarantees first order here
    step = _UniPCStep.between(sigma, sigma_next)
    difference = 0.0 if previous is None else 0.5 * step.slope(x0, previous)[0]
    return step.base(x, x0) - (1.0 - sigma_next) * step.phi_1 * difference


def _unipc_correct(x, x0, sigma, sigma_next, x0_next, previous=None):
    """UniC: the point predicted at sigma_next, corrected with the model's x0_next there (x, x0 and previous as for
    the predictor, which made that point)."""
    if sigma_next == 0.0:
        return x0
    step = _UniPCStep.between(sigma, sigma_next)
    if previous is None:
        difference = 0.5 * (x0_next - x0)
    else:  # solve [[1, 1], [ratio, 1]] @ (rho_prev, rho_next) = (b1, b2)
        slope, ratio = step.slope(x0, previous)
        rho_prev = (step.b1 - step.b2) / (1.0 - ratio)
        difference = rho_prev * slope + (step.b1 - rho_prev) * (x0_next - x0)
    return step.base(x, x0) - (1.0 - sigma_next) * step.phi_1 * difference


@torch.no_grad()
def sample_unipc(model: Model, x: torch.Tensor, sigmas: list[float], callback: Callback = None) -> torch.Tensor:
    """UniPC-2 (bh2) with the UniC corrector and lower order at the first and last steps, as Wan's reference."""
    steps = len(sigmas) - 1
    history: list[tuple[torch.Tensor, float]] = []  # (x0, sigma) of earlier steps, newest last
    x_before, last_order = None, 1
    for i in range(steps):
        x0 = x - sigmas[i] * model(x, sigmas[i])
        if history:  # correct the point we stepped to with the model output we just paid for
            x0_prev, sigma_prev = history[-1]
            older = history[-2] if last_order == 2 else None
            x = _unipc_correct(x_before, x0_prev, sigma_prev, sigmas[i], x0, older)
        last_order = min(2, steps - i, i + 1)
        _notify(callback, i, sigmas, x, x0)
        x_before = x
        x = _unipc_predict(x, x0, sigmas[i], sigmas[i + 1], history[-1] if last_order == 2 else None)
        history = history[-1:] + [(x0, sigmas[i])]
    return x


SAMPLERS = {"euler": sample_euler, "unipc": sample_unipc}
