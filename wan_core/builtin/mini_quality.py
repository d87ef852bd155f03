"""Measures of what the mini model does with a picture and a prompt: numpy only, shared by the benchmark
(bench/bench_mini_quality.py) and the test (tests/test_mini.py).

frames are [T, H, W, 3] float in 0..1 (what conditioning.decode_latents returns).
"""

from __future__ import annotations

import numpy as np
import torch

from . import mini_data as data


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in 0..1."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _grey(frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame, np.float64) @ np.array([0.299, 0.587, 0.114])


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dy, dx): how far b's content sits from a's (positive dx: moved right), by phase correlation with a Hann
    window and a parabola through the peak for sub-pixel precision."""
    a, b = _grey(a), _grey(b)
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    spectrum_a = np.fft.fft2((a - a.mean()) * window)
    spectrum_b = np.fft.fft2((b - b.mean()) * window)
    cross = spectrum_b * np.conj(spectrum_a)
    surface = np.real(np.fft.ifft2(cross / (np.abs(cross) + 1e-12)))
    peak = np.unravel_index(np.argmax(surface), surface.shape)
    shift = []
    for axis, size in enumerate(surface.shape):
        index = list(peak)
        around = []
        for step in (-1, 0, 1):
            index[axis] = (peak[axis] + step) % size
            around.append(surface[tuple(index)])
        left, centre, right = around
        denominator = left - 2 * centre + right
        offset = 0.5 * (left - right) / denominator if abs(denominator) > 1e-12 else 0.0
        position = peak[axis] + offset
        shift.append(position - size if position > size / 2 else position)
    return float(shift[0]), float(shift[1])


def shift_track(frames: np.ndarray) -> np.ndarray:
    """[T] horizontal shift of every frame's content against the first frame, in pixels."""
    return np.array([phase_shift(frames[0], frame)[1] for frame in frames])


def steadiness(track: np.ndarray) -> dict:
    """How evenly a shift grows: the largest frame-to-frame jump as a share of the total, and R^2 of a line fit."""
    total = track[-1] - track[0]
    jumps = np.abs(np.diff(track))
    frames = np.arange(len(track))
    fit = np.polyval(np.polyfit(frames, track, 1), frames)
    residual, spread = np.sum((track - fit) ** 2), np.sum((track - track.mean()) ** 2)
    return {"total_px": float(total), "largest_jump_share": float(jumps.max() / max(abs(total), 1e-6)),
            "line_r2": float(1 - residual / spread) if spread > 0 else 0.0}


def zoom_scale(first: np.ndarray, last: np.ndarray, scales=np.arange(0.8, 1.5001, 0.01)) -> float:
    """The magnification s for which the first frame's centre, enlarged s times, best matches the last frame
    (zoom in: s > 1)."""
    first_t = torch.from_numpy(np.ascontiguousarray(first)).permute(2, 0, 1)[None].float()
    last_t = torch.from_numpy(np.ascontiguousarray(last)).permute(2, 0, 1)[None].float()
    height, width = first.shape[:2]
    margin_y, margin_x = height // 5, width // 5  # compare the middle: zoom out leaves the border unknown
    errors = []
    for scale in scales:
        theta = torch.tensor([[[1 / scale, 0, 0], [0, 1 / scale, 0]]], dtype=torch.float32)
        grid = torch.nn.functional.affine_grid(theta, list(first_t.shape), align_corners=False)
        warped = torch.nn.functional.grid_sample(first_t, grid, mode="bilinear", padding_mode="border",
                                                 align_corners=False)
        difference = (warped - last_t)[..., margin_y:height - margin_y, margin_x:width - margin_x]
        errors.append(float(difference.pow(2).mean()))
    return float(scales[int(np.argmin(errors))])


def off_sepia(frames: np.ndarray) -> float:
    """How far the colours are from a sepia grade: the mean distance of each pixel's RGB from the line of colours
    data.sepia gives (its matrix is nearly rank one: grey levels times one brown tint). 0 for a sepia video."""
    tint = data.sepia(torch.full((3,), 0.5)).double().numpy()
    tint /= np.linalg.norm(tint)
    pixels = np.asarray(frames, np.float64).reshape(-1, 3)
    return float(np.linalg.norm(pixels - np.outer(pixels @ tint, tint), axis=1).mean())


def expected_direction(motion: str) -> int:
    """+1: content moves right (the camera pans left), -1: left, 0: no horizontal move."""
    return {"pan_left": 1, "pan_right": -1}.get(motion, 0)


def measure(frames: np.ndarray, picture: np.ndarray, motion: str) -> dict:
    """Every measure for one generated video; picture is the input already fitted to the frame size."""
    result = {"motion": motion, "first_frame_psnr": psnr(frames[0], picture)}
    track = shift_track(frames)
    result.update(steadiness(track))
    result["shift_track_px"] = [round(float(x), 2) for x in track[::8]]
    result["zoom_scale"] = zoom_scale(frames[0], frames[-1])
    direction = expected_direction(motion)
    if direction:
        result["direction_ok"] = bool(direction * result["total_px"] >= 3.0)
    if motion == "zoom_in":
        result["direction_ok"] = result["zoom_scale"] >= 1.05
    if motion == "zoom_out":
        result["direction_ok"] = result["zoom_scale"] <= 0.95
    return result


def expected_total_px(motion: str, num_frames: int) -> float:
    return expected_direction(motion) * data.PAN_PX_PER_FRAME * (num_frames - 1)
