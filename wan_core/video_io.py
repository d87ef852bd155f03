"""Reading images and videos into frames and writing frames to mp4 (PyAV).

Frames everywhere are float32 tensors [T, H, W, 3] in 0..1: ComfyUI's IMAGE layout.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import WanInputError

DEFAULT_FPS = 16


def _existing_file(name: str, path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WanInputError(f"{name}={str(path)!r}: no such file")
    return path


def pil_to_frame(image: Image.Image) -> torch.Tensor:
    """Any PIL image (RGBA, grayscale, palette, 16-bit) -> [H, W, 3] float in 0..1; alpha is dropped as ComfyUI's LoadImage does."""
    if image.mode in ("I;16", "I;16B", "I"):
        array = np.asarray(image, dtype=np.float32) / 65535.0
        return torch.from_numpy(array).clamp(0, 1)[..., None].expand(-1, -1, 3).contiguous()
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def read_image(path, name: str = "image") -> torch.Tensor:
    """Image file -> [1, H, W, 3] float in 0..1."""
    path = _existing_file(name, path)
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_frame(image)[None]
    except (UnidentifiedImageError, OSError) as error:
        raise WanInputError(f"{name}={str(path)!r} is not a readable image: {error}") from None


def read_video(path, name: str = "video") -> tuple[torch.Tensor, float]:
    """Video file -> ([T, H, W, 3] float in 0..1, frames per second)."""
    path = _existing_file(name, path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise WanInputError(f"{name}={str(path)!r} has no frames: it holds no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as error:
        raise WanInputError(f"{name}={str(path)!r} is not a readable video: {error}") from None
    if not frames:
        raise WanInputError(f"{name}={str(path)!r} has no frames")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[T, H, W, 3] float in 0..1 -> uint8 array, rounded."""
    return (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def write_video(path, frames: torch.Tensor, fps: float = DEFAULT_FPS, crf: int = 18) -> Path:
    """[T, H, W, 3] float in 0..1 -> H.264 mp4 (yuv420p, playable everywhere). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = frames_to_uint8(frames)
    _, height, width, _ = pixels.shape
    if height % 2 or width % 2:
        raise WanInputError(f"video size {width}x{height}: H.264 needs even width and height")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # x264's macroblock-tree pass reads uninitialised padding at widths that are not a multiple of 64, so the
        # same frames could encode differently from run to run; without it a seed always gives the same file
        stream.options = {"crf": str(crf), "x264-params": "mbtree=0"}
        for pixel_frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixel_frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
