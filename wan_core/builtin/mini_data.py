"""What the mini model learns from and is judged on: still pictures, camera moves over them, and prompts.

Pictures are drawn procedurally (gradients, shapes, gratings, smooth noise) or cut from the photographs that ship
inside scikit-image (BSD-3-Clause; a training-only extra). Some photos, some procedural seeds and some prompt
sentences are held out: training never sees them, the quality benchmark and test use only them.

Camera convention: "the camera pans to the left" moves the window over the picture to the left, so the content
moves to the right in the frame (a positive x shift between the first and the last frame).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

FRAME_W, FRAME_H = 160, 96  # the demo size: latents 20x12, 1260 transformer tokens at 81 frames
SOURCE_W, SOURCE_H = 224, 144  # pictures are drawn larger so a pan or zoom out stays inside them; /8 whole
PAN_PX_PER_FRAME = 0.4  # 32 px between the first and the 81st frame at 160x96
ZOOM_PER_FRAME = math.log(1.25) / 80  # zoom in: the content grows 1.25x over 81 frames
MOTIONS = ("pan_left", "pan_right", "zoom_in", "zoom_out", "still")

PHOTOS_TRAIN = ("astronaut", "ihc", "retina", "motorcycle_left", "motorcycle_right", "color", "logo", "camera",
                "moon", "coins", "page", "text", "grass", "gravel", "brick", "cell", "clock_motion",
                "microaneurysms", "horse", "hubble_deep_field", "chessboard_RGB", "phantom")
PHOTOS_HELD_OUT = ("coffee", "chelsea", "rocket")
PROCEDURAL_HELD_OUT_SEEDS = (1_000_001, 1_000_002, 1_000_003)  # training draws seeds below 1_000_000

TRAIN_PROMPTS = {
    "pan_left": ["the camera pans slowly to the left", "camera pans left", "a slow pan to the left",
                 "the camera moves to the left", "pan left across the scene", "the view slides to the left"],
    "pan_right": ["the camera pans slowly to the right", "camera pans right", "a slow pan to the right",
                  "the camera moves to the right", "pan right across the scene", "the view slides to the right"],
    "zoom_in": ["the camera zooms in slowly", "camera zooms in", "a slow zoom in", "zoom in on the scene",
                "the camera moves closer", "the view zooms in"],
    "zoom_out": ["the camera zooms out slowly", "camera zooms out", "a slow zoom out", "zoom out from the scene",
                 "the camera pulls back", "the view zooms out"],
    "still": ["the camera holds still", "a static camera", "a still shot, no camera motion",
              "the camera does not move", "a still picture", "the view stays still"],
}
TRAIN_FILLERS = ("{}", "a photo, {}", "a landscape, {}", "{}, high quality", "{}, smooth motion", "{} over the picture")
HELD_OUT_PROMPTS = {
    "pan_left": ["a video, the camera slowly pans to the left over the scene", "panning left, cinematic"],
    "pan_right": ["a video, the camera slowly pans to the right over the scene", "panning right, cinematic"],
    "zoom_in": ["a video, the camera slowly zooms in on the picture", "zooming in, cinematic"],
    "zoom_out": ["a video, the camera slowly zooms out from the picture", "zooming out, cinematic"],
    "still": ["a video, the camera stays completely still", "no motion at all, cinematic"],
}


def training_prompts() -> dict[str, list[str]]:
    """{motion: every training sentence}: each base phrase in every filler template."""
    return {motion: [filler.format(phrase) for phrase in phrases for filler in TRAIN_FILLERS]
            for motion, phrases in TRAIN_PROMPTS.items()}


# ---- pictures ----------------------------------------------------------------------------------------------------


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """[h, w, 3] float 0..1 -> [height, width, 3]: scaled to cover, centre-cropped (antialiased bicubic)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    scale = max(width / image.shape[1], height / image.shape[0])
    size = (max(height, round(image.shape[0] * scale)), max(width, round(image.shape[1] * scale)))
    tensor = F.interpolate(tensor, size=size, mode="bicubic", antialias=True).clamp(0, 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return tensor[0, :, top:top + height, left:left + width].permute(1, 2, 0).numpy()


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as [h, w, 3] float 0..1 (grey ones repeated to RGB, alpha dropped)."""
    try:
        from skimage import data
    except ImportError as error:  # only training and the quality benchmark need the photos
        raise RuntimeError("the mini model's photos come from scikit-image: pip install -e '.[train]'") from error
    folder = Path(data.data_dir)
    path = next(p for p in sorted(folder.iterdir()) if p.stem == name and p.suffix in (".png", ".jpg"))
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return array


def photo_crop(name: str, rng: np.random.Generator, width=SOURCE_W, height=SOURCE_H) -> np.ndarray:
    """A random crop of a photo at the source aspect, 45-100% of the largest such crop, maybe tinted if grey."""
    image = photo(name)
    h, w = image.shape[:2]
    largest = min(w / width, h / height)
    scale = largest * rng.uniform(0.45, 1.0)
    cw, ch = int(width * scale), int(height * scale)
    left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    crop = _fit(np.ascontiguousarray(image[top:top + ch, left:left + cw]), width, height)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    grey = np.ptp(crop - crop.mean(axis=2, keepdims=True)) < 0.02
    if grey and rng.random() < 0.7:  # colour variety for the grey photos: a random two-colour tint
        dark, light = rng.uniform(0, 0.4, 3), rng.uniform(0.6, 1.0, 3)
        crop = dark + crop[..., :1] * (light - dark)
    return np.ascontiguousarray(crop, dtype=np.float32)


def photo_picture(name: str, width=FRAME_W, height=FRAME_H) -> np.ndarray:
    """A whole photo scaled to cover the frame and centre-cropped: how the engine frames an input picture."""
    return _fit(photo(name), width, height)


def procedural_picture(seed: int, width=SOURCE_W, height=SOURCE_H) -> np.ndarray:
    """[height, width, 3] float 0..1: a gradient background, maybe a texture, then 3-9 flat or soft shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (u - 0.5) + np.sin(angle) * (v - 0.5)) + 0.5
    if rng.random() < 0.3:  # radial instead of linear
        ramp = np.hypot(u - rng.uniform(0.2, 0.8), v - rng.uniform(0.2, 0.8)) * 1.4
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    image = c0 + np.clip(ramp, 0, 1)[..., None] * (c1 - c0)
    texture = rng.random()
    if texture < 0.35:  # gratings: a few sinusoids
        for _ in range(rng.integers(1, 4)):
            k = rng.uniform(4, 30) * np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)])
            image += rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * (k[0] * u + k[1] * v * height / width)
                                                      + rng.uniform(0, 6))[..., None] * rng.uniform(-1, 1, 3)
    elif texture < 0.7:  # smooth noise: white noise low-passed in the Fourier domain
        noise = rng.standard_normal((height, width, 3))
        fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
        cutoff = rng.uniform(0.02, 0.12)
        lowpass = np.exp(-(fx ** 2 + fy ** 2) / (2 * cutoff ** 2))[..., None]
        smooth = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * lowpass, axes=(0, 1)))
        image += rng.uniform(0.1, 0.3) * smooth / (smooth.std() + 1e-6)
    for _ in range(rng.integers(3, 10)):
        colour = rng.uniform(0, 1, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(8, 50)
        kind = rng.integers(0, 3)
        if kind == 0:  # ellipse
            ratio = rng.uniform(0.5, 2)
            distance = np.hypot((x - cx) / size, (y - cy) / (size * ratio)) - 1
        elif kind == 1:  # rotated rectangle
            a = rng.uniform(0, np.pi)
            dx, dy = (x - cx) * np.cos(a) + (y - cy) * np.sin(a), -(x - cx) * np.sin(a) + (y - cy) * np.cos(a)
            distance = np.maximum(np.abs(dx) / size, np.abs(dy) / (size * rng.uniform(0.3, 1.5))) - 1
        else:  # triangle: the largest of three half-plane distances
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2])
            distance = np.max([((x - cx) * np.cos(t) + (y - cy) * np.sin(t)) / size - 0.5 for t in angles], axis=0)
        softness = rng.choice([0.02, 0.08, 0.3])
        alpha = np.clip(0.5 - distance / softness, 0, 1)[..., None]
        image = image * (1 - alpha) + colour * alpha
    return np.clip(image, 0, 1).astype(np.float32)


def sepia(image: torch.Tensor) -> torch.Tensor:
    """[..., 3] 0..1 -> the classic sepia grade (the mini LoRA's look)."""
    matrix = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return (image @ matrix.T).clamp(0, 1)


# ---- the camera --------------------------------------------------------------------------------------------------


def camera(motion: str, frame: float) -> tuple[float, float]:
    """(x offset of the window centre in frame pixels, zoom factor) at a frame index from 0."""
    if motion == "pan_left":
        return -PAN_PX_PER_FRAME * frame, 1.0
    if motion == "pan_right":
        return PAN_PX_PER_FRAME * frame, 1.0
    if motion == "zoom_in":
        return 0.0, math.exp(ZOOM_PER_FRAME * frame)
    if motion == "zoom_out":
        return 0.0, math.exp(-ZOOM_PER_FRAME * frame)
    return 0.0, 1.0


def latent_frame_time(t: int) -> float:
    """The video frame a latent frame stands for: 0 alone, then the middle of frames 4t-3..4t."""
    return 0.0 if t == 0 else 4 * t - 1.5


def camera_grid(motion: str, frames: list[float], source_w: int, source_h: int, out_w: int, out_h: int,
                scale: int = 1) -> torch.Tensor:
    """grid_sample grids [len(frames), out_h, out_w, 2] reading the camera window out of a source of size
    source_w x source_h (pixels / scale: scale 8 works on latents, whose pixels are 8 frame pixels wide)."""
    grids = []
    for frame in frames:
        dx, zoom = camera(motion, frame)
        # centres of the output pixels in frame pixels, relative to the frame centre
        xs = ((torch.arange(out_w) + 0.5) * scale - FRAME_W / 2) / zoom
        ys = ((torch.arange(out_h) + 0.5) * scale - FRAME_H / 2) / zoom
        src_x = (source_w * scale / 2 + dx + xs) / (source_w * scale) * 2 - 1  # align_corners=False coordinates
        src_y = (source_h * scale / 2 + ys) / (source_h * scale) * 2 - 1
        grids.append(torch.stack(torch.meshgrid(src_y, src_x, indexing="ij")[::-1], dim=-1))
    return torch.stack(grids)


def camera_frames(source: torch.Tensor, motion: str, num_frames: int, speed: float = 1.0) -> torch.Tensor:
    """source [3, SOURCE_H, SOURCE_W] -> video [3, num_frames, FRAME_H, FRAME_W]: the camera's frames, the move
    `speed` times the demo's."""
    return camera_frames_at(source, motion, [speed * f for f in range(num_frames)])


def camera_frames_at(source: torch.Tensor, motion: str, times: list[float]) -> torch.Tensor:
    """source [3, SOURCE_H, SOURCE_W] -> [3, len(times), FRAME_H, FRAME_W]: what the camera sees at those frame
    times (fractions too)."""
    grid = camera_grid(motion, times, SOURCE_W, SOURCE_H, FRAME_W, FRAME_H)
    frames = F.grid_sample(source[None].expand(len(times), -1, -1, -1), grid, mode="bicubic",
                           padding_mode="border", align_corners=False)
    return frames.permute(1, 0, 2, 3).clamp(0, 1)


def camera_latents(source_latent: torch.Tensor, motion: str, latent_frames: int) -> torch.Tensor:
    """source latent [C, SOURCE_H/8, SOURCE_W/8] -> [C, latent_frames, FRAME_H/8, FRAME_W/8]: the camera move
    applied in latent space, one window per latent frame at the time it stands for: the targets of the
    transformer's first phase (train_mini.latent_moves); bench/bench_mini_vae_motion.py shows why they step."""
    channels, height, width = source_latent.shape
    times = [latent_frame_time(t) for t in range(latent_frames)]
    grid = camera_grid(motion, times, width, height, FRAME_W // 8, FRAME_H // 8, scale=8)
    out = F.grid_sample(source_latent[None].expand(latent_frames, -1, -1, -1), grid, mode="bicubic",
                        padding_mode="border", align_corners=False)
    return out.permute(1, 0, 2, 3)
