"""RemoteWanAPI: the same I2V / V2V job on a hosted Wan 2.1 API, with frames back for the rest of the graph.

API keys never pass through the graph: they come from WAVESPEED_API_KEY and the like, or the keys file
(~/.config/wanflow/keys.json), so a saved workflow can never carry one.
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
from comfy_api.v0_0_2 import io

from ..wan_core.sampling.params import FLOW_SHIFT_AUTO, FLOW_SHIFT_HELP, SEED_RANGE, WAN_NEGATIVE_PROMPT
from ..wan_core.remote import PROVIDERS, RemoteCancelled, RemoteRequest, WaitSettings, run_remote
from ..wan_core.remote.request import SIZE_RESOLUTIONS, TASK_MEDIA, hosted_size
from ..wan_core.video_io import DEFAULT_FPS
from .comfy_bridge import CATEGORY, WanLorasType

PROVIDER_DEFAULT = "provider default"
AUTO_SIZES = ("auto 480p", "auto 720p")  # the resolution's size in the picture's orientation (hosted_size)


def _request(task, prompt, negative_prompt, size, duration, steps, guidance, flow_shift, seed, strength, fast_mode,
             safety_checker, prompt_extend, image=None, image_url="", video=None, video_url="", video_fps=DEFAULT_FPS,
             loras=None) -> RemoteRequest:
    """Widget values in RemoteRequest's words: the 'provider default' choices become None (left to the provider)."""
    if size in AUTO_SIZES:
        size = hosted_size(task, size.split()[-1], image if task == "i2v" else video)
    return RemoteRequest(
        task=task, prompt=prompt, negative_prompt=negative_prompt, size=None if size == PROVIDER_DEFAULT else size,
        duration=duration, steps=steps, guidance_scale=guidance, seed=seed,
        flow_shift=None if flow_shift == FLOW_SHIFT_AUTO else flow_shift,  # None: the provider's rule, the same one
        strength=strength, fast=fast_mode, safety_checker=safety_checker, prompt_extend=prompt_extend,
        image=image, image_url=image_url, video=video, video_url=video_url, video_fps=video_fps, loras=loras or (),
    )


class RemoteWanAPI(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RemoteWanAPI",
            display_name="Remote Wan 2.1 API",
            category=CATEGORY,
            description="Runs Wan 2.1 image-to-video or video-to-video on WaveSpeedAI, Novita AI, GMI Cloud or "
                        "HighwayAPI. The key comes from the provider's environment variable (WAVESPEED_API_KEY, "
                        "NOVITA_API_KEY, GMI_API_KEY, HIGHWAY_API_KEY) or ~/.config/wanflow/keys.json.",
            inputs=[
                io.Combo.Input("provider", options=list(PROVIDERS), tooltip="The hosted API to run on."),
                io.Combo.Input("task", options=list(TASK_MEDIA), tooltip="i2v: all four providers; v2v: WaveSpeedAI."),
                io.String.Input("prompt", multiline=True, default="", tooltip="What the video shows and how it moves."),
                io.String.Input("negative_prompt", multiline=True, default="",
                                tooltip=f"What to avoid; empty uses the provider's default. Wan's own is: "
                                        f"{WAN_NEGATIVE_PROMPT[:40]}..."),
                io.Combo.Input("size", options=[PROVIDER_DEFAULT, *AUTO_SIZES, *SIZE_RESOLUTIONS],
                               default=PROVIDER_DEFAULT,
                               tooltip="Output size; it also picks the 480p or 720p model. The provider's default "
                                       "is 480p. auto: that resolution's size in the picture's orientation; the "
                                       "providers keep the picture's aspect ratio at its area."),
                io.Int.Input("duration", default=5, min=5, max=10, step=5, tooltip="Seconds of video: 5 or 10."),
                io.Int.Input("steps", default=30, min=1, max=40, tooltip="Sampling steps (not on GMI)."),
                io.Float.Input("guidance", default=5.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Guidance scale (not on GMI; at most 10 on Novita and HighwayAPI)."),
                io.Float.Input("flow_shift", default=FLOW_SHIFT_AUTO, min=FLOW_SHIFT_AUTO, max=10.0, step=0.1,
                               tooltip=f"Schedule shift, 1 to 10 on the hosted APIs; {FLOW_SHIFT_HELP} (the "
                                       "provider applies that rule)."),
                io.Int.Input("seed", default=-1, min=SEED_RANGE[0], max=SEED_RANGE[1], control_after_generate=True,
                             tooltip="-1 lets the provider draw one; the seed used is in the info output."),
                io.Float.Input("strength", default=0.9, min=0.1, max=1.0, step=0.05,
                               tooltip="v2v: how far the result may move from the source video."),
                io.Boolean.Input("fast_mode", default=False,
                                 tooltip="Fast mode, as on the local samplers: fewer model passes at a small loss of "
                                         "quality, here the provider's own (WaveSpeedAI's ultra-fast variant, Novita "
                                         "and HighwayAPI fast_mode)."),
                io.Boolean.Input("safety_checker", default=True, tooltip="The provider's NSFW check."),
                io.Boolean.Input("prompt_extend", default=False, tooltip="GMI: let the provider rewrite the prompt."),
                io.Image.Input("image", optional=True, tooltip="i2v: the first frame (or give image_url)."),
                io.String.Input("image_url", default="", optional=True, tooltip="i2v: a public image URL instead."),
                io.Image.Input("video", optional=True, tooltip="v2v: source frames, sent as an mp4 (or video_url)."),
                io.String.Input("video_url", default="", optional=True, tooltip="v2v: a public video URL instead."),
                io.Float.Input("video_fps", default=float(DEFAULT_FPS), min=1.0, max=60.0, optional=True,
                               tooltip="v2v: frame rate of the source frames when they are encoded for upload."),
                WanLorasType.Input("loras", optional=True,
                                   tooltip="Up to 3 LoRAs as hub repo ids or URLs (WaveSpeedAI, Novita, HighwayAPI)."),
                io.Float.Input("timeout_minutes", default=30.0, min=1.0, max=240.0, optional=True,
                               tooltip="Give up after this long, submit to the last downloaded byte; the error names the "
                                       "job id and how to fetch its video later."),
            ],
            outputs=[
                io.Image.Output(display_name="frames"),
                io.Float.Output(display_name="fps"),
                io.String.Output(display_name="info", tooltip="Provider, job id, seed, timings and video URL."),
            ],
        )

    @classmethod
    def execute(cls, provider, timeout_minutes=30.0, **inputs) -> io.NodeOutput:
        # run_remote checks every parameter against the provider's ranges before anything is sent
        bar = comfy.utils.ProgressBar(100)

        def on_progress(progress):
            bar.update_absolute(int(progress.percent or 0), 100)

        try:
            result = run_remote(provider, _request(**inputs), settings=WaitSettings(total_timeout=timeout_minutes * 60),
                                on_progress=on_progress, should_stop=comfy.model_management.processing_interrupted)
        except RemoteCancelled as error:
            # ComfyUI shows an interrupt without a message: the log keeps the job id and how to fetch its video
            logging.warning("Remote Wan 2.1 API: %s", error)
            raise comfy.model_management.InterruptProcessingException() from None
        return io.NodeOutput(result.frames, result.fps, result.info)
