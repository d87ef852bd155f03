"""Samplers: short functions over a sigma list, in the style of k-diffusion's sampling.py.

`model(x, sigma)` returns the flow velocity v = noise - x0 for the latents x [B, C, T, H, W].
`callback(step, x, x0)` is called after every step (progress, previews, interrupts).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Model = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None] | None


def _notify(callback: Callback, step: int, x: torch.Tensor, x0: torch.Tensor):
    if callback is not None:
        callback(step, x, x0)


@torch.no_grad()
def sample_euler(model: Model, x: torch.Tensor, sigmas: list[float], callback: Callback = None) -> torch.Tensor:
    """First-order flow ODE steps: x <- x + (sigma_next - sigma) * v."""
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        velocity = model(x, sigma)
        _notify(callback, i, x, x - sigma * velocity)
        x = x + (sigma_next - sigma) * velocity
    return x


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma on the flow path."""
    return math.log(1.0 - sigma) - math.log(sigma)


def _unipc_step(x, x0, sigma, sigma_next, previous=None, x0_next=None):
    """One UniPC update (B(h) = e^-h - 1, data prediction) from sigma to sigma_next.

    x0 is the data prediction at sigma; previous = (x0_prev, sigma_prev) adds the second-order term.
    Predictor when x0_next is None; corrector (UniC) of the point at sigma_next when it is given.
    """
    if sigma_next == 0.0:
        return x0  # the first-order limit; lower-order-final guarantees first order here
    h = _log_snr(sigma_next) - _log_snr(sigma)
    phi_1 = math.expm1(-h)  # also B(h) for the bh2 variant
    phi_2 = phi_1 / -h - 1.0
    phi_3 = phi_2 / -h - 0.5
    b1, b2 = phi_2 / phi_1, 2.0 * phi_3 / phi_1
    alpha_next = 1.0 - sigma_next
    base = (sigma_next / sigma) * x - alpha_next * phi_1 * x0

    if previous is None:
        difference = 0.0
    else:
        x0_prev, sigma_prev = previous
        ratio = (_log_snr(sigma_prev) - _log_snr(sigma)) / h
        slope = (x0_prev - x0) / ratio
        if x0_next is None:
            difference = 0.5 * slope
        else:  # solve [[1, 1], [ratio, 1]] @ (rho_prev, rho_next) = (b1, b2)
            rho_prev = (b1 - b2) / (1.0 - ratio)
            return base - alpha_next * phi_1 * (rho_prev * slope + (b1 - rho_prev) * (x0_next - x0))
    if x0_next is not None:
        difference = difference + 0.5 * (x0_next - x0)
    return base - alpha_next * phi_1 * difference


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
            x = _unipc_step(x_before, x0_prev, sigma_prev, sigmas[i], older, x0_next=x0)
        last_order = min(2, steps - i, i + 1)
        _notify(callback, i, x, x0)
        x_before = x
        x = _unipc_step(x, x0, sigmas[i], sigmas[i + 1], history[-1] if last_order == 2 else None)
        history = history[-1:] + [(x0, sigmas[i])]
    return x


SAMPLERS = {"euler": sample_euler, "unipc": sample_unipc}
