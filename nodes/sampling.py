"""WanI2VSampler, WanV2VSampler and WanVAEDecode: wan_core's pipelines behind ComfyUI's IMAGE and LATENT."""

from __future__ import annotations

import logging

import torch
from comfy_api.v0_0_2 import io

from ..wan_core.sampling.params import FLOW_SHIFT_AUTO, FLOW_SHIFT_HELP, FLOW_SHIFT_RANGE, FRAMES_RANGE, GUIDANCE_RANGE, SAMPLER_NAMES, SEED_RANGE, SIZE_MULTIPLE, \
    SIZE_RANGE, STEP_CACHE_RANGE, STEPS_RANGE, STRENGTH_RANGE, WAN_NEGATIVE_PROMPT, SamplingParams, source_frame_count, \
    CONTEXT_FRAMES_RANGE, CONTEXT_OVERLAP_DEFAULT, RESOLUTION_AREAS, TRAINED_FRAMES, auto_size, \
    PRESET_CHOICES, PRESET_HELP, PRESET_NONE, STANDARD_SETTINGS, check_step_caches
from ..wan_core.errors import check_choice
from ..wan_core.video_io import DEFAULT_FPS, resample_to_fps
from .comfy_bridge import CATEGORY, WanModelType, log, step_progress


def _sampling_inputs(frames_tooltip: str) -> list[io.Input]:
    """The inputs both samplers share, after the model and the media."""
    return [
        io.String.Input("prompt", multiline=True, default="", tooltip="What the video shows and how it moves."),
        io.String.Input("negative_prompt", multiline=True, default=WAN_NEGATIVE_PROMPT,
                        tooltip="What to steer away from; Wan 2.1's own default is filled in."),
        io.Int.Input("width", default=832, min=SIZE_RANGE[0], max=SIZE_RANGE[1], step=SIZE_MULTIPLE,
                     tooltip="With resolution custom: video width in pixels, a multiple of 16 (832x480 for 480p "
                             "models, 1280x720 for 720p)."),
        io.Int.Input("height", default=480, min=SIZE_RANGE[0], max=SIZE_RANGE[1], step=SIZE_MULTIPLE,
                     tooltip="With resolution custom: video height in pixels, a multiple of 16."),
        io.Int.Input("frames", default=81, min=FRAMES_RANGE[0], max=FRAMES_RANGE[1], step=4,
                     tooltip=frames_tooltip),
        io.Int.Input("steps", default=STANDARD_SETTINGS["steps"], min=STEPS_RANGE[0], max=STEPS_RANGE[1],
                     tooltip="Sampling steps; more is slower and usually cleaner."),
        io.Float.Input("guidance", default=STANDARD_SETTINGS["guidance_scale"], min=GUIDANCE_RANGE[0], max=GUIDANCE_RANGE[1], step=0.1,
                       tooltip="Classifier-free guidance: how closely to follow the prompt; 1 skips the negative "
                               "prompt and runs twice as fast."),
        io.Float.Input("flow_shift", default=STANDARD_SETTINGS["flow_shift"], min=FLOW_SHIFT_AUTO, max=FLOW_SHIFT_RANGE[1], step=0.1,
                       tooltip=f"Shift of the flow-matching schedule, {FLOW_SHIFT_RANGE[0]:g} to "
                               f"{FLOW_SHIFT_RANGE[1]:g}; {FLOW_SHIFT_HELP}."),
        io.Int.Input("seed", default=0, min=0, max=SEED_RANGE[1], control_after_generate=True,
                     tooltip="The same seed and inputs give the same video."),
        io.Combo.Input("sampler", options=list(SAMPLER_NAMES), default=STANDARD_SETTINGS["sampler"],
                       tooltip="unipc: Wan's default, good in few steps; euler: the plain flow-matching step."),
        # optional: prompts saved before these inputs existed still queue, with the cache off and the size custom
        io.Float.Input("step_cache", default=0.0, min=STEP_CACHE_RANGE[0], max=STEP_CACHE_RANGE[1], step=0.01,
                       optional=True,
                       tooltip="Fast mode (first-block cache): where the first transformer block's output changed "
                               "by less than this since the last full pass, the other blocks are skipped and their "
                               "change reused. 0 is off; 0.05-0.1 skip many passes for a little loss of detail."),
        io.Combo.Input("resolution", options=list(RESOLUTIONS), default=RESOLUTIONS[0], optional=True,
                       tooltip="auto 480p / auto 720p: the input's own aspect ratio at 832x480's or 1280x720's pixel "
                               "area (a 4:3 picture gives 720x544 or 1104x816), the picture resized whole, as Wan's "
                               "reference and the hosted APIs do. custom: width x height, the picture scaled and "
                               "centre-cropped."),
        io.Boolean.Input("fast_mode", default=False, optional=True,
                         tooltip="Fast mode: a step cache calibrated for the model (MagCache: the published Wan 2.1 "
                                 "ratios, or measured by the first fast run of a new model and schedule) skips "
                                 "transformer passes at a small loss of quality. Use step_cache 0 with it."),
        io.Combo.Input("preset", options=list(PRESET_CHOICES), default=PRESET_NONE, optional=True,
                       tooltip=f"{PRESET_HELP}. Steps, guidance, flow shift and sampler left at their defaults take "
                               "the preset's values; others that differ are refused."),
    ]


# "auto <resolution>" keeps the input's aspect ratio at that pixel area; "custom" uses the width and height inputs
RESOLUTIONS = (*(f"auto {name}" for name in RESOLUTION_AREAS), "custom")


def _long_video_inputs() -> list[io.Input]:
    """Optional (prompts saved before they existed still queue): how runs longer than a window are sampled."""
    return [
        io.Int.Input("context_frames", default=TRAINED_FRAMES, min=CONTEXT_FRAMES_RANGE[0],
                     max=CONTEXT_FRAMES_RANGE[1], step=4, optional=True,
                     tooltip="Longer videos are sampled in overlapping windows of at most this many frames (4n+1), "
                             "blended at every step; 81 is the length Wan 2.1 was trained on."),
        io.Int.Input("context_overlap", default=CONTEXT_OVERLAP_DEFAULT, min=0, max=40, step=4, optional=True,
                     tooltip="Frames neighbouring windows share at least (a multiple of 4)."),
        io.Boolean.Input("one_pass", default=False, optional=True,
                         tooltip="Sample all frames in one pass instead of windows: memory and time grow with the "
                                 "square of the length, and past ~81 frames motion may loop."),
        io.Boolean.Input("riflex", default=False, optional=True,
                         tooltip="With one pass: RIFLEx lengthens one temporal position frequency so up to ~2x the "
                                 "trained length (161 frames) does not repeat."),
    ]


def _params(media, prompt, negative_prompt, width, height, frames, steps, guidance, flow_shift, seed, sampler,
            resolution="custom", preset=PRESET_NONE, **extra) -> SamplingParams:
    """media [T, H, W, 3]: the picture or source whose aspect ratio an auto resolution keeps. A prompt saved before
    the resolution input existed has none: custom, as those graphs ran. With a preset, a widget left at its default
    is unset (the preset fills it); one set otherwise must agree."""
    check_choice("resolution", resolution, RESOLUTIONS)
    fit = "crop"
    if resolution != "custom":
        (width, height), fit = auto_size(media.shape[2], media.shape[1], resolution.split()[-1]), "resize"
    chosen = {"steps": steps, "guidance_scale": guidance, "flow_shift": flow_shift, "sampler": sampler}
    if preset != PRESET_NONE:
        chosen = {name: None if value == STANDARD_SETTINGS[name] else value for name, value in chosen.items()}
    return SamplingParams(prompt=prompt, negative_prompt=negative_prompt, width=width, height=height, num_frames=frames,
                          seed=seed, preset=preset, fit=fit, **chosen, **extra)


def _sample(generate, model, media: torch.Tensor, params: SamplingParams, step_cache: float,
            fast_mode: bool) -> io.NodeOutput:
    check_step_caches(fast_mode, step_cache)
    with model.configured(step_cache=step_cache, fast_mode=fast_mode) as models:
        generation = generate(models, media, params, step_progress(params.steps))
        log.info("WanFlow: %s", models.passes.line())
    # ComfyUI's Wan 2.1 convention: raw VAE-space latents [B, 16, T, H/8, W/8], so core VAEDecode works on them
    return io.NodeOutput({"samples": generation.latents})


class WanI2VSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanI2VSampler",
            display_name="Wan Image to Video",
            category=CATEGORY,
            description="Samples a Wan 2.1 video that starts from an image.",
            inputs=[
                WanModelType.Input("model", tooltip="From Load Wan 2.1 Model, with an image-to-video model."),
                io.Image.Input("image", tooltip="The first frame; resized to the auto size, or scaled and "
                                                "centre-cropped to a custom one."),
                *_sampling_inputs("Frames, 4n+1: 81 is 5 seconds at 16 fps; above context_frames the video is "
                                  "sampled in overlapping windows."),
                *_long_video_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, image, step_cache=0.0, fast_mode=False, **inputs) -> io.NodeOutput:
        from ..wan_core.sampling.pipeline import generate_i2v

        return _sample(generate_i2v, model, image, _params(image, **inputs), step_cache, fast_mode)


class WanV2VSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanV2VSampler",
            display_name="Wan Video to Video",
            category=CATEGORY,
            description="Re-imagines a video with a prompt, keeping its layout and motion.",
            inputs=[
                WanModelType.Input("model", tooltip="From Load Wan 2.1 Model (T2V or I2V)."),
                io.Image.Input("video", tooltip="Source frames, e.g. from Load Video and Get Video Components."),
                io.Float.Input("strength", default=0.9, min=STRENGTH_RANGE[0], max=STRENGTH_RANGE[1], step=0.05,
                               tooltip="How far the result may move from the source: 1 keeps only its motion "
                                       "hints, low values stay close to it."),
                *_sampling_inputs("Frames at 16 fps, 4n+1 (81 is 5 seconds of the source); a shorter source gives "
                                  "as many as it has (rounded down to 4n+1)."),
                io.Float.Input("fps", default=float(DEFAULT_FPS), min=1.0, max=240.0, step=0.001, optional=True,
                               tooltip="Frame rate of the source frames (connect Get Video Components' fps): the "
                                       "source is resampled to 16 fps by time, so the result keeps its speed."),
                *_long_video_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, video, strength, frames, step_cache=0.0, fast_mode=False, fps=float(DEFAULT_FPS),
                **inputs) -> io.NodeOutput:
        from ..wan_core.sampling.pipeline import generate_v2v

        video = resample_to_fps(video, fps)
        frames, note = source_frame_count(video.shape[0], frames)
        if note:
            logging.warning("Wan Video to Video: %s", note)
        params = _params(video, frames=frames, strength=strength, **inputs)
        return _sample(generate_v2v, model, video, params, step_cache, fast_mode)


class WanVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanVAEDecode",
            display_name="Wan VAE Decode",
            category=CATEGORY,
            description="Decodes Wan latents to frames with the model's VAE.",
            inputs=[
                WanModelType.Input("model", tooltip="The Wan model whose VAE decodes."),
                io.Latent.Input("latent", tooltip="From a Wan sampler (or any Wan 2.1 latent)."),
                io.Boolean.Input("tiled", default=False,
                                 tooltip="Decode in tiles: less memory for large videos, a little slower."),
            ],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, model, latent, tiled) -> io.NodeOutput:
        from ..wan_core.sampling.conditioning import decode_latents

        samples: torch.Tensor = latent["samples"]  # [B, 16, T, h, w]
        # decoding runs the VAE alone: no LoRA or attention setting is named, so none changes
        with model.loaded.models.configured(vae_tiling=tiled) as models:
            return io.NodeOutput(torch.cat([decode_latents(models, video[None]) for video in samples]))
