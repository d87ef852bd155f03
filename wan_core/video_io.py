"""Reading images and videos into frames and writing frames to mp4 (PyAV).

Frames everywhere are float32 tensors [T, H, W, 3] in 0..1: ComfyUI's IMAGE layout.
"""

from __future__ import annotations

import math
import os
import secrets
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Mapping

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import WanInputError

DEFAULT_FPS = 16
# PIL's own decompression-bomb limit, applied to video frames too: a header claiming more pixels than this is refused
# before anything is decoded, as it would take tens of gigabytes as float frames.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


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
            _check_pixels(name, path, *image.size)
            image.load()
            return pil_to_frame(image)[None]
    except Image.DecompressionBombError as error:  # PIL refuses twice its limit itself, on opening
        raise WanInputError(f"{name}={str(path)!r} is too large to read: {error}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise WanInputError(f"{name}={str(path)!r} is not a readable image: {error}") from None


def _check_pixels(name: str, path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise WanInputError(
            f"{name}={str(path)!r} claims {width}x{height} pixels per picture: allowed at most {MAX_PIXELS} pixels"
        )


def read_video(path, name: str = "video") -> tuple[torch.Tensor, float]:
    """Video file -> ([T, H, W, 3] float in 0..1, frames per second)."""
    path = _existing_file(name, path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise WanInputError(f"{name}={str(path)!r} has no frames: it holds no video stream")
            stream = container.streams.video[0]
            _check_pixels(name, path, stream.codec_context.width, stream.codec_context.height)
            fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as error:
        raise WanInputError(f"{name}={str(path)!r} is not a readable video: {error}") from None
    if not frames:
        raise WanInputError(f"{name}={str(path)!r} has no frames")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps


def resample_to_fps(frames: torch.Tensor, fps: float, target_fps: float = DEFAULT_FPS) -> torch.Tensor:
    """[T, H, W, 3] at fps -> [T', H, W, 3] at target_fps covering the same time, T' = floor(T * target / fps):
    each output frame is the source frame on screen at its moment (no blending), so 5 s of a 30 fps source become
    5 s at 16 fps and play at the source's speed. A source at target_fps is returned as it is."""
    if not fps > 0:
        raise WanInputError(f"fps={fps!r} is not a frame rate: give a positive number of frames per second")
    if abs(fps - target_fps) < 1e-6:
        return frames
    count = max(1, math.floor(frames.shape[0] * target_fps / fps + 1e-9))
    # frame i is shown at i / target_fps s; the source frame then on screen is floor(i * fps / target_fps)
    picks = (torch.arange(count, dtype=torch.float64) * fps / target_fps + 1e-9).floor().long()
    return frames[picks.clamp(max=frames.shape[0] - 1)]


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[T, H, W, 3] float in 0..1 -> uint8 array, rounded."""
    return (frames.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def write_video(path, frames: torch.Tensor, fps: float = DEFAULT_FPS, crf: int = 18) -> Path:
    """[T, H, W, 3] float in 0..1 -> H.264 mp4 (yuv420p, playable everywhere). Returns the path."""
    pixels = frames_to_uint8(frames)
    _, height, width, _ = pixels.shape
    if height % 2 or width % 2:
        raise WanInputError(f"video size {width}x{height}: H.264 needs even width and height")
    with written_in_place(path) as partial, av.open(str(partial), mode="w") as container:
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
    return Path(path)


def check_output_path(path, name: str, inputs: Mapping[str, object] | None = None) -> Path:
    """Path, once sure it can be written (by a rename from a file beside it) and is none of the run's inputs
    (input name -> path; None for an input not given). Checked before any heavy work, so that a bad path never costs
    a finished run, and never overwrites what the run reads."""
    path = Path(path)
    if path.is_dir():
        raise WanInputError(f"{name}={str(path)!r} is a folder: give a file path, e.g. {str(path / 'out.mp4')!r}")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise WanInputError(f"{name}={str(path)!r} cannot be created: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WanInputError(f"{name}={str(path)!r} cannot be written: no permission to write in {str(folder)!r}")
    for input_name, source in (inputs or {}).items():
        # samefile also sees the same file through a symlink, a hard link or another spelling of the path
        if source is not None and path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise WanInputError(
                f"{name}={str(path)!r} is the same file as {input_name}={str(source)!r}: writing the output would "
                "destroy that input; choose another output path"
            )
    return path


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def written_in_place(path) -> Iterator[Path]:
    """A temporary file beside path for the block to write: renamed onto path when the block succeeds, removed when
    it fails, so path never holds a partial file and an existing one is only ever replaced by a whole one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last, so writers that pick the format by name (PyAV) still pick it
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        yield temporary
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
