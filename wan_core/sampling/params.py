"""Generation parameters: defaults and ranges shared by the command line, the nodes and Python callers.

They follow the hosted Wan 2.1 APIs where those make sense locally, and are all checked before any model is built.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch

from ..errors import WanInputError, check_choice, check_range
from ..video_io import DEFAULT_FPS
from .schedule import DISTILL_TIMESTEPS, default_flow_shift

SIZE_RANGE, SIZE_MULTIPLE = (64, 1920), 16
STEPS_RANGE = (1, 100)
GUIDANCE_RANGE = (0.0, 20.0)
FLOW_SHIFT_RANGE = (1.0, 20.0)
FLOW_SHIFT_AUTO = 0.0  # the one rule, in the nodes, the command line and the remote APIs: 0 picks it by resolution
FLOW_SHIFT_HELP = "0 (default): auto by resolution, 3.0 at 480p and below, 5.0 above"
SEED_RANGE = (-1, 2**31 - 1)
STRENGTH_RANGE = (0.1, 1.0)
STEP_CACHE_RANGE = (0.0, 1.0)  # First Block Cache threshold (speed.py, WanModels.configured); 0 is off
DURATION_RANGE = (1, 10)
FRAMES_RANGE = (1, 16 * DURATION_RANGE[1] + 1)
SAMPLER_NAMES = ("unipc", "euler")
# The pixel area each resolution stands for; the shape comes from the input picture (auto_size)
RESOLUTION_AREAS = {"480p": 832 * 480, "720p": 1280 * 720}
SIZE_AUTO = "auto"
# How input frames meet the size: "crop" scales to cover it and centre-crops (an explicit W*H); "resize" squashes
# the whole picture onto it, as Wan's reference does after choosing the size from the picture's own aspect ratio
FIT_CHOICES = ("crop", "resize")
TRAINED_FRAMES = 81  # Wan 2.1 was trained on 81-frame clips (21 latent frames)
CONTEXT_FRAMES_RANGE = (17, TRAINED_FRAMES)  # a window, 4n+1 frames
CONTEXT_OVERLAP_DEFAULT = 16  # frames (4 latents) shared by neighbouring windows, as WanVideoWrapper's default
# Whose preprocessing to follow where diffusers 0.42's Wan pipelines and Wan's reference differ: the sigma spacing
# (schedule.SPACINGS) and the CLIP input (resized and centre-cropped, or squashed to its square; conditioning.py).
PARITY_CHOICES = ("diffusers", "wan")
# Step-distilled presets, as their publishers sample (research: LightX2V's WanStepDistillScheduler and its
# configs/distill/wan_i2v_distill_lora_4step_cfg.json): guidance 1 (one conditional pass), shift 5, flow Euler over
# the 1000-step shifted grid at timesteps 1000, 750, 500, 250, the model conditioned on the exact (float) time.
PRESET_NONE = "none"


@dataclass(frozen=True)
class Preset:
    steps: int
    guidance_scale: float
    flow_shift: float
    sampler: str
    timesteps: tuple[int, ...]  # the publisher's denoising steps on the 1000-step grid; sigmas in schedule.py


PRESETS = {"4step": Preset(steps=4, guidance_scale=1.0, flow_shift=5.0, sampler="euler", timesteps=DISTILL_TIMESTEPS)}
PRESET_CHOICES = (PRESET_NONE, *PRESETS)
PRESET_HELP = ("4step: for step-distilled LoRAs such as lightx2v's 4-step I2V distill or CausVid: 4 steps, guidance "
               "1, shift 5, Euler over the publisher's sigmas 1, 0.9375, 0.8333, 0.625")
# what each preset setting is called where a user gives it: SamplingParams field -> its name in messages
PRESET_SETTINGS = {"steps": "steps", "guidance_scale": "guidance", "flow_shift": "flow shift", "sampler": "sampler"}


STANDARD_SETTINGS = {"steps": 30, "guidance_scale": 5.0, "flow_shift": FLOW_SHIFT_AUTO, "sampler": "unipc"}


def preset_settings(preset: str, given: dict) -> dict:
    """Steps, guidance, shift and sampler for a run: `given` holds what the user set ({SamplingParams field: value},
    None or absent for unset). Without a preset unset ones take STANDARD_SETTINGS; with one, the preset's values,
    and a set one that differs is refused, naming both."""
    check_choice("preset", preset, PRESET_CHOICES)
    if preset == PRESET_NONE:
        return {name: default if given.get(name) is None else given[name] for name, default in STANDARD_SETTINGS.items()}
    wanted = PRESETS[preset]
    for name, label in PRESET_SETTINGS.items():
        value = given.get(name)
        if value not in (None, getattr(wanted, name)) and not (name == "flow_shift" and value == FLOW_SHIFT_AUTO):
            raise WanInputError(f"preset={preset!r} samples with {label} {getattr(wanted, name)!r}, and {label} "
                                f"{value!r} was asked for: leave {label} unset with this preset, or choose preset "
                                f"{PRESET_NONE!r}")
    return {name: getattr(wanted, name) for name in PRESET_SETTINGS}


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # compute dtype names
# Wan 2.1's official default negative prompt (shared_config.sample_neg_prompt in the reference release).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def check_step_caches(fast_mode: bool, step_cache: float) -> None:
    """fast_mode (MagCache) and step_cache (First Block Cache) are two caches for the same blocks: one at a time."""
    if not isinstance(fast_mode, bool):
        raise WanInputError(f"fast_mode={fast_mode!r} is not allowed: choose True or False")
    if fast_mode and step_cache:
        raise WanInputError(f"fast_mode=True and step_cache={step_cache!r} are two step caches for the same "
                            "transformer blocks: turn one off (step_cache 0 with fast mode)")


def parse_size(text: str, name: str = "size") -> tuple[int, int]:
    """'832*480' (or 832x480) -> (width, height)."""
    parts = [part.strip() for part in text.lower().replace("x", "*").split("*")]
    # isdigit() alone also takes superscripts and other scripts' digits, which int() then refuses
    if len(parts) != 2 or not all(part.isascii() and part.isdigit() for part in parts):
        raise WanInputError(f"{name}={text!r} is not W*H: write it like 832*480, with the digits 0-9")
    return int(parts[0]), int(parts[1])


def auto_size(width: int, height: int, resolution: str = "480p") -> tuple[int, int]:
    """(W, H) with the picture's aspect ratio at the resolution's pixel area, each side rounded down to a multiple
    of 16 as Wan's reference image2video.py does (latent side = sqrt(area * aspect) // 8 // 2 * 2): a 4:3 picture
    gives 720x544 at 480p and 1104x816 at 720p, never more than the area."""
    check_choice("resolution", resolution, tuple(RESOLUTION_AREAS))
    area = RESOLUTION_AREAS[resolution]
    size = (math.floor(math.sqrt(area * width / height) / SIZE_MULTIPLE) * SIZE_MULTIPLE,
            math.floor(math.sqrt(area * height / width) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    for name, value in zip(("width", "height"), size):
        if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
            raise WanInputError(f"a {width}x{height} picture at {resolution} gives {name} {value}, outside "
                                f"{SIZE_RANGE[0]} to {SIZE_RANGE[1]}: give an explicit size W*H (it crops)")
    return size


def frame_count(duration: float | None = None, frames: int | None = None) -> int:
    """Frames from a duration in seconds at 16 fps (5 s -> 81) or an explicit count of the form 4n+1."""
    if frames is not None:
        check_range("frames", frames, *FRAMES_RANGE)
        if frames % 4 != 1:
            raise WanInputError(f"frames={frames} is not of the form 4n+1 (e.g. 33, 49, 81): the VAE packs 4 frames per latent")
        return frames
    duration = 5 if duration is None else duration
    check_range("duration", duration, *DURATION_RANGE)
    return round(DEFAULT_FPS * duration) // 4 * 4 + 1


def whole_clip_frames(video_frames: int) -> int:
    """The longest 4n+1 clip a source video of this many frames gives."""
    return (video_frames - 1) // 4 * 4 + 1


def source_frame_count(video_frames: int, wanted: int | None = None) -> tuple[int, str | None]:
    """Frames a v2v run takes from a source of this many frames (already at 16 fps): `wanted`, by default 5 s
    (81), or what the source has if it is shorter, rounded down to 4n+1 and said so (the second value)."""
    wanted = frame_count() if wanted is None else wanted
    if video_frames >= wanted:
        return wanted, None
    available = whole_clip_frames(video_frames)
    return available, (f"the source has {video_frames} frames at {DEFAULT_FPS} fps "
                       f"({video_frames / DEFAULT_FPS:.2f} s): using {available} of the {wanted} asked for")


def resolve_seed(seed: int) -> int:
    """-1 draws a seed; any other value in range is used as given."""
    check_range("seed", seed, *SEED_RANGE)
    return secrets.randbelow(SEED_RANGE[1] + 1) if seed == -1 else seed


@dataclass
class SamplingParams:
    """Everything that decides a video besides the models and the input media."""

    prompt: str
    negative_prompt: str | None = None
    width: int = 832
    height: int = 480
    num_frames: int = 81
    steps: int | None = None  # None: the preset's, else STANDARD_SETTINGS (30 steps, guidance 5, auto shift, unipc)
    guidance_scale: float | None = None
    flow_shift: float | None = FLOW_SHIFT_AUTO
    seed: int = -1
    sampler: str | None = None
    strength: float = 0.9
    parity: str = "diffusers"  # PARITY_CHOICES; "wan" follows Wan's reference, as the hosted APIs may
    fit: str = "crop"  # FIT_CHOICES: how input frames meet width x height
    # Past context_frames, sample in overlapping windows of that many frames (long_video.py), unless one_pass;
    # riflex lengthens the temporal RoPE period for a one-pass run beyond the trained length
    context_frames: int = TRAINED_FRAMES
    context_overlap: int = CONTEXT_OVERLAP_DEFAULT
    one_pass: bool = False
    riflex: bool = False

    preset: str = PRESET_NONE  # PRESET_CHOICES; its settings must be the preset's own (preset_settings fills them)

    def latent_shape(self, channels: int = 16) -> tuple[int, ...]:
        """[1, channels, T_lat, H/8, W/8]: the VAE packs 4 frames (after the first) and 8x8 pixels per latent."""
        return (1, channels, (self.num_frames - 1) // 4 + 1, self.height // 8, self.width // 8)

    def __post_init__(self):
        for name, value in preset_settings(self.preset, {name: getattr(self, name) for name in PRESET_SETTINGS}).items():
            setattr(self, name, value)
        if not isinstance(self.prompt, str):
            raise WanInputError(f"prompt={self.prompt!r} must be text")
        for name in ("width", "height"):
            value = getattr(self, name)
            check_range(name, value, *SIZE_RANGE)
            if value % SIZE_MULTIPLE:
                raise WanInputError(f"{name}={value} is not a multiple of {SIZE_MULTIPLE}: allowed 64, 80, ..., 1920")
        frame_count(frames=self.num_frames)
        check_range("steps", self.steps, *STEPS_RANGE)
        check_range("guidance_scale", self.guidance_scale, *GUIDANCE_RANGE)
        if self.flow_shift == FLOW_SHIFT_AUTO:
            self.flow_shift = default_flow_shift(self.width, self.height)
        elif not isinstance(self.flow_shift, (int, float)) or not FLOW_SHIFT_RANGE[0] <= self.flow_shift <= FLOW_SHIFT_RANGE[1]:
            raise WanInputError(f"flow_shift={self.flow_shift!r} is out of range: allowed {FLOW_SHIFT_AUTO} (auto by "
                                f"resolution) or {FLOW_SHIFT_RANGE[0]} to {FLOW_SHIFT_RANGE[1]}")
        check_range("strength", self.strength, *STRENGTH_RANGE)
        check_choice("sampler", self.sampler, SAMPLER_NAMES)
        check_choice("parity", self.parity, PARITY_CHOICES)
        check_choice("fit", self.fit, FIT_CHOICES)
        self._check_long_video()
        if self.negative_prompt is None:
            self.negative_prompt = WAN_NEGATIVE_PROMPT
        self.seed = resolve_seed(self.seed)

    @property
    def windowed(self) -> bool:
        """Whether sampling runs in context windows: longer than a window, and one pass not asked for."""
        return not self.one_pass and self.num_frames > self.context_frames

    def _check_long_video(self) -> None:
        check_range("context_frames", self.context_frames, *CONTEXT_FRAMES_RANGE)
        if self.context_frames % 4 != 1:
            raise WanInputError(f"context_frames={self.context_frames} is not of the form 4n+1 (e.g. 49, 65, 81)")
        window_latents = (self.context_frames - 1) // 4 + 1
        check_range("context_overlap", self.context_overlap, 0, 4 * (window_latents // 2))
        if self.context_overlap % 4:
            raise WanInputError(f"context_overlap={self.context_overlap} is not a multiple of 4 frames (one latent "
                                f"frame): e.g. 8, 16, 24")
        if self.riflex and self.windowed:
            raise WanInputError(f"riflex=True applies to one-pass runs: {self.num_frames} frames run in windows of "
                                f"{self.context_frames}; ask for one pass too (--one-pass)")
