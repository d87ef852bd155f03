"""Videos longer than Wan 2.1's trained 81 frames: context windows, or one pass with RIFLEx.

Context windows (the static schedule of ComfyUI's context windows and WanVideoWrapper's context options): the
latent frames are covered by the fewest overlapping windows of at most the trained length; every step the
guided velocity is predicted per window and the windows are blended with linear ramps across their overlaps, then
the sampler takes one step over the whole latent. Each window sees RoPE positions 0..L-1, the length the model
knows, so memory stays that of one window and time grows about linearly with the length.

RIFLEx (Zhao et al. 2025, "RIFLEx: A Free Lunch for Length Extrapolation in Video Diffusion Transformers"): for
one pass over L' latent frames, the temporal RoPE frequency whose period is nearest the trained length (index 6 of
Wan's 22) is lowered to 0.9 * 2 pi / L', so the video does not repeat within itself.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .params import TRAINED_FRAMES

# velocity(x [1, C, T_window, h, w], sigma, frames: slice of the whole latent's T) -> velocity shaped like x
WindowVelocity = Callable[[torch.Tensor, float, slice], torch.Tensor]

RIFLEX_INDEX = 6  # 1-based temporal frequency; its period (~51 latent frames at head dim 128) is Wan's repetition


def latent_frames(frames: int) -> int:
    """Pixel frames 4n+1 -> latent frames n+1: the VAE keeps the first frame alone and packs 4 per latent after."""
    return (frames - 1) // 4 + 1


@dataclass(frozen=True)
class Window:
    frames: slice  # latent frames of the whole video this window covers
    weights: torch.Tensor  # [length] blend weight of each of its frames, > 0


def plan_windows(total: int, length: int, overlap: int) -> list[Window]:
    """The fewest windows of at most `length` latent frames covering `total`, neighbours sharing at least `overlap`.

    All windows get the same length, spread evenly: with 41 latents (161 frames), length 21 and overlap 4 that is
    3 windows of 17 at 0, 12 and 24, not 3 of 21, so the work per step is 51 latent frames rather than 63."""
    if total <= length:
        return [Window(slice(0, total), torch.ones(total))]
    count = math.ceil((total - overlap) / (length - overlap))
    size = math.ceil((total + (count - 1) * overlap) / count)
    starts = [round(i * (total - size) / (count - 1)) for i in range(count)]
    windows = []
    for i, start in enumerate(starts):
        left = starts[i - 1] + size - start if i > 0 else 0  # frames shared with the previous window
        right = start + size - starts[i + 1] if i < count - 1 else 0
        windows.append(Window(slice(start, start + size), _ramp_weights(size, left, right)))
    return windows


def _ramp_weights(size: int, left: int, right: int) -> torch.Tensor:
    """[size] ones, ramping up over the first `left` frames and down over the last `right`: across an overlap of n
    frames the two windows' weights are k/(n+1) and 1 - k/(n+1), so the blend moves smoothly from one to the next."""
    position = torch.arange(size, dtype=torch.float32)
    up = (position + 1) / (left + 1) if left else torch.ones(size)
    down = (size - position) / (right + 1) if right else torch.ones(size)
    return torch.minimum(torch.minimum(up, down), torch.ones(size))


def windowed(velocity: WindowVelocity, total: int, length: int, overlap: int) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """model(x [1, C, total, h, w], sigma) -> the windows' velocities blended by their weights, for a sampler."""
    windows = plan_windows(total, length, overlap)

    def blended(x: torch.Tensor, sigma: float) -> torch.Tensor:
        out = torch.zeros_like(x, dtype=torch.float32)
        weight_sum = torch.zeros(total, dtype=torch.float32, device=x.device)
        for window in windows:
            weights = window.weights.to(x.device)
            out[:, :, window.frames] += velocity(x[:, :, window.frames], sigma, window.frames) * weights.view(1, 1, -1, 1, 1)
            weight_sum[window.frames] += weights
        return out / weight_sum.view(1, 1, -1, 1, 1)

    return blended


def context_velocity(velocity: WindowVelocity, params, total: int):
    """The sampler's model for a run of `total` latent frames with these SamplingParams: the context windows'
    blend past params.context_frames (unless one pass), else the velocity itself."""
    if not params.windowed:
        return velocity
    return windowed(velocity, total, *_window_shape(params))


def _window_shape(params) -> tuple[int, int]:
    """(window length, overlap) in latent frames."""
    return latent_frames(params.context_frames), params.context_overlap // 4


def pass_lengths(params) -> set[int]:
    """The latent frames one transformer pass sees: each context window's, or the whole video's."""
    total = latent_frames(params.num_frames)
    if not params.windowed:
        return {total}
    return {window.frames.stop - window.frames.start for window in plan_windows(total, *_window_shape(params))}


def riflex_frequency(latent_count: int) -> float:
    """theta_k = 0.9 * 2 pi / L': one period spans the whole video with 10% to spare."""
    return 0.9 * 2.0 * math.pi / latent_count


@contextmanager
def riflex(transformer, latent_count: int, index: int = RIFLEX_INDEX) -> Iterator[None]:
    """Within the block, the transformer's temporal RoPE frequency `index` is riflex_frequency(latent_count).

    diffusers' WanRotaryPosEmbed keeps cos and sin tables [max_seq_len, head_dim] with the temporal part first
    (t_dim columns, each frequency in two adjacent columns); those two columns are rewritten for every position and
    put back on exit, as the model is shared with later runs. Up to the trained length nothing changes: there the
    model's own frequencies already fit."""
    if latent_count <= latent_frames(TRAINED_FRAMES):
        yield
        return
    rope = transformer.rope
    if 2 * index > rope.t_dim:
        raise ValueError(f"RIFLEx index {index} is beyond this model's {rope.t_dim // 2} temporal RoPE frequencies")
    columns = slice(2 * (index - 1), 2 * index)
    saved = rope.freqs_cos[:, columns].clone(), rope.freqs_sin[:, columns].clone()
    positions = torch.arange(rope.freqs_cos.shape[0], dtype=torch.float64, device=rope.freqs_cos.device)
    angle = (positions * riflex_frequency(latent_count))[:, None].expand(-1, 2)
    rope.freqs_cos[:, columns] = angle.cos().to(rope.freqs_cos.dtype)
    rope.freqs_sin[:, columns] = angle.sin().to(rope.freqs_sin.dtype)
    try:
        yield
    finally:
        rope.freqs_cos[:, columns], rope.freqs_sin[:, columns] = saved
