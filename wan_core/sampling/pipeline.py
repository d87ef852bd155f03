"""Image-to-video and video-to-video generation: the whole job in one readable place.

    frames in -> conditioning -> noise at sigma_0 -> sampler over the sigma list -> raw latents -> frames out

Each stage first says which networks it runs (models.use), so that each can be on the GPU for its stage alone:
prompts (text encoder), v2v's source frames (VAE), image conditioning (CLIP and VAE), sampling (transformer),
decoding (VAE, in conditioning.decode_latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import torch

from . import conditioning, speed
from ..errors import WanInputError
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


def latent_shape(params: SamplingParams, channels: int = 16) -> tuple[int, ...]:
    return (1, channels, (params.num_frames - 1) // 4 + 1, params.height // 8, params.width // 8)


def encode_prompts(models: WanModels, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt's and the negative prompt's embeddings; no negative when guidance 1 skips its pass."""
    positive = conditioning.encode_prompt(models, params.prompt)
    negative = None if params.guidance_scale == 1.0 else conditioning.encode_prompt(models, params.negative_prompt)
    return positive, negative


def guided_velocity(models: WanModels, params: SamplingParams, prompts, image_tokens=None, condition=None):
    """model(x, sigma) -> velocity with classifier-free guidance; guidance 1 skips the negative pass."""
    transformer, dtype = models.transformer, models.dtype
    positive, negative = prompts
    condition = None if condition is None else condition.to(models.device, dtype)

    def predict(x_in, timestep, text, branch):
        with speed.cache_branch(transformer, branch):
            return transformer(hidden_states=x_in, timestep=timestep, encoder_hidden_states=text,
                               encoder_hidden_states_image=image_tokens, return_dict=False)[0].float()

    @torch.inference_mode()
    def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
        x_in = x.to(dtype) if condition is None else torch.cat([x.to(dtype), condition], dim=1)
        timestep = torch.full((x.shape[0],), model_timestep(sigma, whole=params.preset == PRESET_NONE), device=x.device)
        v_positive = predict(x_in, timestep, positive, "cond")
        if negative is None:
            return v_positive
        v_negative = predict(x_in, timestep, negative, "uncond")
        return v_negative + params.guidance_scale * (v_positive - v_negative)

    return velocity


def schedule_sigmas(params: SamplingParams) -> torch.Tensor:
    """The run's sigma list, closed by 0: a preset's publisher's list, else the flow schedule."""
    if params.preset != PRESET_NONE:
        return distill_sigmas(PRESETS[params.preset].timesteps, params.flow_shift)
    return flow_sigmas(params.steps, params.flow_shift, params.parity)


def _sample(models, params, velocity, x, sigmas, progress: Progress) -> torch.Tensor:
    """The sampler over the sigmas, with the run's fast mode and its count of transformer passes (models.passes)."""
    with models.sampling(sigmas.tolist(), params.width, params.height):
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
    frame = conditioning.fit_frames(image[:1], params.width, params.height)[0]
    models.use("text_encoder")
    prompts = encode_prompts(models, params)
    image_tokens, condition = _image_conditioning(models, frame, params)
    models.use("transformer")
    velocity = guided_velocity(models, params, prompts, image_tokens, condition)
    noise = initial_noise(params.seed, latent_shape(params))
    sigmas = schedule_sigmas(params)
    latents = _sample(models, params, velocity, noise, sigmas, progress)
    return Generation(conditioning.raw_latents(models, latents).cpu(), params.seed)


def generate_v2v(models: WanModels, video: torch.Tensor, params: SamplingParams, progress: Progress = None) -> Generation:
    """video [T, H, W, 3] in 0..1 -> a video that keeps its layout and motion, re-imagined from `strength` on."""
    if video.shape[0] < params.num_frames:
        raise WanInputError(f"frames={params.num_frames} asks for more frames than the source video has ({video.shape[0]})")
    frames = conditioning.fit_frames(video[: params.num_frames], params.width, params.height)
    models.use("text_encoder")
    prompts = encode_prompts(models, params)
    models.use("vae")
    source = conditioning.normalise_latents(models, conditioning.encode_frames(models, frames))
    image_tokens, condition = _image_conditioning(models, frames[0], params)
    models.use("transformer")
    velocity = guided_velocity(models, params, prompts, image_tokens, condition)
    sigmas = schedule_sigmas(params)[strength_start(params.steps, params.strength):]
    noise = initial_noise(params.seed, latent_shape(params))
    noisy = (1.0 - sigmas[0].item()) * source.cpu() + sigmas[0].item() * noise
    latents = _sample(models, params, velocity, noisy, sigmas, progress)
    return Generation(conditioning.raw_latents(models, latents).cpu(), params.seed)

