"""One hosted Wan 2.1 job in WanFlow's words, the checks every provider shares, and payload helpers:
parameter fields, LoRAs, and the image or video encoded for upload."""

from __future__ import annotations

import base64
import io
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping

import torch
from PIL import Image

from ..errors import WanInputError, check_choice, check_range
from ..lora.stack import LoraEntry, LoraStack
from ..video_io import DEFAULT_FPS, frames_to_uint8, write_video
from .errors import RemoteInputError


@dataclass
class RemoteRequest:
    """One hosted Wan 2.1 job in WanFlow's words.

    A parameter set to None keeps the provider's own default. The defaults below are every provider's, so a
    parameter a provider lacks is fine while it keeps its default here, and an error once set away from it.
    """

    task: str = "i2v"  # "i2v" or "v2v"
    prompt: str = ""
    image: torch.Tensor | None = None  # ComfyUI IMAGE [N, H, W, 3] in 0..1; i2v uses the first one
    image_url: str | None = None
    video: torch.Tensor | None = None  # frames [T, H, W, 3] in 0..1 for v2v
    video_url: str | None = None
    video_fps: float = DEFAULT_FPS  # frame rate used when the frames are encoded for upload
    negative_prompt: str = ""
    size: str | None = None  # "W*H" such as "832*480"; it also picks 480p or 720p
    duration: int = 5  # seconds
    steps: int = 30
    guidance_scale: float = 5.0
    flow_shift: float | None = None  # providers default to 3 or 5 depending on resolution
    seed: int = -1  # -1: random
    strength: float = 0.9  # v2v: how far the result may move from the source video
    loras: LoraStack = ()
    fast: bool = False
    safety_checker: bool = True
    prompt_extend: bool = False

    def __post_init__(self):
        self.loras = tuple(self.loras or ())
        # A blank URL (an empty text widget) means no URL.
        self.image_url = (self.image_url or "").strip() or None
        self.video_url = (self.video_url or "").strip() or None


MEDIA_FIELDS = ("task", "image", "image_url", "video", "video_url", "video_fps")
PARAMETER_DEFAULTS = {spec.name: spec.default for spec in fields(RemoteRequest) if spec.name not in MEDIA_FIELDS}
# Media each task takes: (tensor field, URL field).
TASK_MEDIA = {"i2v": ("image", "image_url"), "v2v": ("video", "video_url")}
SIZE_RESOLUTIONS = {"832*480": "480p", "480*832": "480p", "1280*720": "720p", "720*1280": "720p"}


def hosted_size(task: str, resolution: str, frames: torch.Tensor | None) -> str | None:
    """The provider size for a resolution ('480p' or '720p'), in the orientation of the input frames [N, H, W, 3]:
    portrait for a taller picture, landscape otherwise (also for media given by URL, unseen here). The providers
    keep the picture's own aspect ratio at that size's area, so the orientation only matters to WaveSpeedAI's
    size field. V2V takes no size: WaveSpeedAI's V2V is 480p, and 720p is refused here."""
    check_choice("resolution", resolution, tuple(sorted(set(SIZE_RESOLUTIONS.values()))))
    if task == "v2v":
        if resolution != "480p":
            raise RemoteInputError(f"resolution={resolution!r} is not offered for v2v: the hosted V2V is 480p only")
        return None
    portrait = frames is not None and frames.shape[1] > frames.shape[2]
    sizes = [size for size, name in SIZE_RESOLUTIONS.items() if name == resolution]
    return next(size for size in sizes if portrait == (int(size.split("*")[1]) > int(size.split("*")[0])))


def resolution_of(size: str | None) -> str:
    """'480p' or '720p'; no size means 480p, every provider's default."""
    return SIZE_RESOLUTIONS.get(size, "480p")


# ---------------------------------------------------------------------------------------------------- parameters


def _identity(value):
    return value


@dataclass(frozen=True)
class Param:
    """How one provider takes one WanFlow parameter: its field name and the values it allows."""

    field: str | None = None  # None: the adapter encodes it some other way (model variant, model id)
    range: tuple[float, float] | None = None
    choices: tuple | None = None
    length: tuple[int, int] | None = None  # allowed number of characters (text) or items (LoRAs)
    encode: Callable = _identity  # WanFlow value -> the provider's JSON value

    def check(self, name: str, value) -> None:
        try:
            if self.range:
                check_range(name, value, *self.range)
            if self.choices:
                check_choice(name, value, self.choices)
            if self.length:
                check_range(f"length of {name}", len(value), *self.length)
        except WanInputError as error:
            raise RemoteInputError(str(error)) from None
        # Encoding raises RemoteInputError for values the provider cannot take at all (a local LoRA file).
        self.encode(value)


def check_parameters(request: RemoteRequest, params: Mapping[str, Param], where: str) -> None:
    """Every parameter within the provider's ranges; one the provider lacks must keep its default."""
    for name, default in PARAMETER_DEFAULTS.items():
        value = getattr(request, name)
        param = params.get(name)
        if value is None:
            continue
        if param is not None:
            param.check(f"{where} {name}", value)
        elif value != default:
            raise RemoteInputError(
                f"{where} has no {name} parameter: got {name}={value!r}, allowed only the default {default!r}"
            )


def payload_fields(request: RemoteRequest, params: Mapping[str, Param]) -> dict:
    """The provider's JSON fields for every parameter that has one; unset values are left to the provider."""
    payload = {}
    for name, param in params.items():
        value = getattr(request, name)
        encoded = None if value is None or not param.field else param.encode(value)
        if encoded is not None:
            payload[param.field] = encoded
    return payload


def lora_payload(loras: LoraStack) -> list[dict] | None:
    """[{path, scale}] as WaveSpeedAI and Novita take them; None for no LoRAs so the field is left out."""
    return [{"path": hosted_lora_path(entry), "scale": entry.scale} for entry in loras] or None


def hosted_lora_path(entry: LoraEntry) -> str:
    """A hosted API fetches LoRAs itself, so only URLs and hub repo ids work; a file on this machine does not."""
    source = entry.source.strip()
    if entry.is_url:
        return source
    if not entry.is_hub_repo:
        raise RemoteInputError(
            f"LoRA source={source!r} is not a hub repo id (owner/name) or an http(s) URL: a hosted API fetches "
            "LoRAs itself, so it cannot use a file on this machine"
        )
    if entry.weight_name:
        return f"https://huggingface.co/{source}/resolve/main/{entry.weight_name}"
    return source


def check_media(request: RemoteRequest, where: str, url_only: bool) -> None:
    """Exactly one source for the task's media (tensor or URL), none for the other task's."""
    tensor_name, url_name = TASK_MEDIA[request.task]
    for other_task, other_names in TASK_MEDIA.items():
        if other_task != request.task and any(getattr(request, name) is not None for name in other_names):
            raise RemoteInputError(f"{where} takes {tensor_name} or {url_name}, not {' or '.join(other_names)}")
    tensor, url = getattr(request, tensor_name), getattr(request, url_name)
    if (tensor is None) == (not url):
        raise RemoteInputError(f"{where} needs exactly one of {tensor_name} or {url_name}: got {'both' if url else 'neither'}")
    if url and not url.startswith(("http://", "https://")):
        raise RemoteInputError(f"{url_name}={url!r} is not an http(s) URL")
    if tensor is not None and url_only:
        raise RemoteInputError(
            f"{where} takes the {tensor_name} only as a URL ({url_name}): it has no upload endpoint, "
            f"so put the {tensor_name} online and give its URL"
        )
    if tensor is not None:
        check_frames(tensor_name, tensor, even_size=tensor_name == "video")


def check_frames(name: str, frames, even_size: bool) -> None:
    """Frames [N, H, W, 3]; a video is encoded as H.264 for upload, which needs even width and height."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise RemoteInputError(f"{name} has shape {shape}: expected frames [N, H, W, 3] with N >= 1")
    height, width = frames.shape[1:3]
    if even_size and (height % 2 or width % 2):
        raise RemoteInputError(f"{name} size {width}x{height}: uploading it as H.264 needs even width and height")


# ---------------------------------------------------------------------------------------------------- media


def png_bytes(image: torch.Tensor) -> bytes:
    """The first frame of an IMAGE as PNG, the lossless format the APIs take."""
    buffer = io.BytesIO()
    Image.fromarray(frames_to_uint8(image[:1])[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4_bytes(frames: torch.Tensor, fps: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="wanflow-") as folder:
        return write_video(Path(folder) / "video.mp4", frames, fps=fps).read_bytes()


def png_data_uri(image: torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
