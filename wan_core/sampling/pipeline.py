"""Image-to-video and video-to-video generation: the whole job in one readable place.

    frames in -> conditioning -> noise at sigma_0 -> sampler over the sigma list -> raw latents -> frames out

Each stage first says which networks it runs (models.use), so that each can be on the GPU for its stage alone:
prompts (text encoder), v2v's source frames (VAE), image conditioning (CLIP and VAE), sampling (transformer),
decoding (VAE, in conditioning.decode_latents).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from collections.abc import Callable

import torch

from . import conditioning, speed
from ..errors import WanInputError
from .long_video import context_velocity, riflex
from .models import WanModels
from .params import PRESET_NONE, PRESETS, SamplingParams
from .samplers import SAMPLERS, SamplerStep
from .schedule import distill_sigmas, flow_sigmas, model_timestep, strength_start

# progress(SamplerStep) after every step (its denoised: normalised latents [1, 16, T_lat, h, w]); may raise to stop
Progress = Callable[[SamplerStep], None] | None


@dataclass
class Generation:
    latents: torch.Tensor  # raw VAE latents [1, 16, T_lat, H/8, W/8]: ComfyUI's Wan 2.1 LATENT
    seed: int  # the seed actually used; the same seed and inputs give the same video


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Gaussian noise drawn on the CPU, so a seed means the same noise on every device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def encode_prompts(models: WanModels, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt's and the negative prompt's embeddings; no negative when guidance 1 skips its pass. The text
    encoder's stage runs only for a prompt not cached (prompt_cache.py): ComfyUI then loads no text encoder."""
    texts = [params.prompt] + ([] if params.guidance_scale == 1.0 else [params.negative_prompt])
    if not all(conditioning.is_prompt_cached(models, text) for text in texts):
        models.use("text_encoder")
    positive = conditioning.encode_prompt(models, params.prompt)
    negative = None if params.guidance_scale == 1.0 else conditioning.encode_prompt(models, params.negative_prompt)
    return positive, negative


def guided_velocity(models: WanModels, params: SamplingParams, prompts, image_tokens=None, condition=None):
    """model(x, sigma) -> velocity with classifier-free guidance; guidance 1 skips the negative pass.

    With frames (a slice of the latent frames) x is that context window alone: the I2V condition is sliced the
    same way, so the first frame's conditioning goes with the window holding it, and each window keeps its own
    step cache."""
    transformer, dtype = models.transformer, models.dtype
    positive, negative = prompts
    condition = None if condition is None else condition.to(models.device, dtype)

    def predict(x_in, timestep, text, branch):
        with speed.cache_branch(transformer, branch):
            return transformer(hidden_states=x_in, timestep=timestep, encoder_hidden_states=text,
                               encoder_hidden_states_image=image_tokens, return_dict=False)[0].float()

    @torch.inference_mode()
    def velocity(x: torch.Tensor, sigma: float, frames: slice = slice(None)) -> torch.Tensor:
        x_in = x.to(dtype) if condition is None else torch.cat([x.to(dtype), condition[:, :, frames]], dim=1)
        timestep = torch.full((x.shape[0],), model_timestep(sigma, whole=params.preset == PRESET_NONE), device=x.device)
        window = "" if frames == slice(None) else f"@{frames.start}"
        if negative is None:
            return predict(x_in, timestep, positive, "cond" + window)
        passes = (lambda: predict(x_in, timestep, positive, "cond" + window),
                  lambda: predict(x_in, timestep, negative, "uncond" + window))
        if models.parallel is not None and models.parallel.plan.guidance == 2:
            v_positive, v_negative = models.parallel.guidance_pair(*passes)  # one pass here, one on the paired rank
        else:
            v_positive, v_negative = passes[0](), passes[1]()
        return v_negative + params.guidance_scale * (v_positive - v_negative)

    return velocity


def schedule_sigmas(params: SamplingParams) -> torch.Tensor:
    """The run's sigma list, closed by 0: a preset's publisher's list, else the flow schedule."""
    if params.preset != PRESET_NONE:
        return distill_sigmas(PRESETS[params.preset].timesteps, params.flow_shift)
    return flow_sigmas(params.steps, params.flow_shift, params.parity)


def _sample(models, params, velocity, x, sigmas, progress: Progress) -> torch.Tensor:
    """x [1, 16, T_lat, h, w]; past params.context_frames, the velocity is blended from context windows. The run's
    fast mode and its count of transformer passes (models.passes) cover the sampler's loop."""
    velocity = context_velocity(velocity, params, x.shape[2])
    with riflex(models.transformer, x.shape[2]) if params.riflex else nullcontext(), \
            models.sampling(sigmas.tolist(), params.width, params.height):
        return SAMPLERS[params.sampler](velocity, x.to(models.device), sigmas.tolist(), progress)


def _image_conditioning(models: WanModels, frame: torch.Tensor, params: SamplingParams):
    """CLIP tokens and first-frame latents for an image-to-video model; nothing for a text-to-video one."""
    if not models.is_i2v:
        return None, None
    models.use("image_encoder", "vae")
    tokens = conditioning.encode_image_tokens(models, frame, squash=params.parity == "wan")
    return tokens, conditioning.first_frame_condition(models, frame, params.num_frames)


def generate_i2v(models: WanModels, image: torch.Tensor, params: SamplingParams, progress: Progress = None) -> Generation:
    """image [1 or more, H, W, 3] in 0..1 (the first is used) -> a video that starts from it."""
    if not models.is_i2v:
        raise WanInputError("the diffusion model is a text-to-video model (16 input channels): image-to-video needs "
                            "an I2V model such as wan2.1_i2v_480p_14B")
    frame = conditioning.fit_frames(image[:1], params.width, params.height, params.fit)[0]
    prompts = encode_prompts(models, params)
    image_tokens, condition = _image_conditioning(models, frame, params)
    models.use("transformer")
    velocity = guided_velocity(models, params, prompts, image_tokens, condition)
    noise = initial_noise(params.seed, params.latent_shape())
    sigmas = schedule_sigmas(params)
    latents = _sample(models, params, velocity, noise, sigmas, progress)
    return Generation(conditioning.raw_latents(models, latents).cpu(), params.seed)


def generate_v2v(models: WanModels, video: torch.Tensor, params: SamplingParams, progress: Progress = None) -> Generation:
    """video [T, H, W, 3] in 0..1 -> a video that keeps its layout and motion, re-imagined from `strength` on."""
    if video.shape[0] < params.num_frames:
        raise WanInputError(f"frames={params.num_frames} asks for more frames than the source video has ({video.shape[0]})")
    frames = conditioning.fit_frames(video[: params.num_frames], params.width, params.height, params.fit)
    prompts = encode_prompts(models, params)
    models.use("vae")
    source = conditioning.normalise_latents(models, conditioning.encode_frames(models, frames))
    image_tokens, condition = _image_conditioning(models, frames[0], params)
    models.use("transformer")
    velocity = guided_velocity(models, params, prompts, image_tokens, condition)
    sigmas = schedule_sigmas(params)[strength_start(params.steps, params.strength):]
    noise = initial_noise(params.seed, params.latent_shape())
    noisy = (1.0 - sigmas[0].item()) * source.cpu() + sigmas[0].item() * noise
    latents = _sample(models, params, velocity, noisy, sigmas, progress)
    return Generation(conditioning.raw_latents(models, latents).cpu(), params.seed)

