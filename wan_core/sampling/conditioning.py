"""What the transformer is conditioned on: prompt embeddings, CLIP image tokens, and latents of input frames.

Shapes: frames are [T, H, W, 3] in 0..1 (ComfyUI IMAGE); latents are [1, 16, T_lat, H/8, W/8] with
T_lat = (T - 1) / 4 + 1; "normalised" latents are the VAE's raw latents shifted and scaled per channel.
"""

from __future__ import annotations

import html
import re

import ftfy
import torch
import torch.nn.functional as F
from PIL import Image

from .models import WanModels
from ..video_io import frames_to_uint8

TEXT_LENGTH = 512  # Wan pads every prompt to 512 tokens; the padding embeddings are zeros


def clean_prompt(text: str) -> str:
    """Mojibake fixed, HTML entities decoded, whitespace collapsed: the text cleaning Wan's tokenizer applies."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(text)))).strip()


def prompt_key(models: WanModels, prompt: str) -> tuple | None:
    """What decides a prompt's embedding (prompt_cache.py): the text encoder's files and weight storage
    (text_encoder_identity), the compute dtype, the device type, the text; all known without reading the encoder.
    None for a text encoder that came from no file (the key could not tell two such encoders apart): its prompts are
    encoded every time."""
    if models.text_encoder_identity is None or models.prompt_cache is None:
        return None
    return (models.text_encoder_identity, str(models.dtype), models.device.type, prompt)


def is_prompt_cached(models: WanModels, prompt: str) -> bool:
    key = prompt_key(models, prompt)
    return key is not None and models.prompt_cache.get(key) is not None


@torch.inference_mode()
def encode_prompt(models: WanModels, prompt: str) -> torch.Tensor:
    """Text -> [1, 512, text_dim]: UMT5 states of the real tokens, zero padded; a cached prompt runs no encoder."""
    key = prompt_key(models, prompt)
    states = None if key is None else models.prompt_cache.get(key)
    if states is None:
        tokens = models.tokenizer(clean_prompt(prompt), max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(models.device), tokens.attention_mask.to(models.device)
        states = models.text_encoder(ids, mask).last_hidden_state.to(models.dtype)
        if key is not None:
            models.prompt_cache.put(key, states)
    return F.pad(states.to(models.device, models.dtype), (0, 0, 0, TEXT_LENGTH - states.shape[1]))


def fit_frames(frames: torch.Tensor, width: int, height: int, fit: str = "crop") -> torch.Tensor:
    """[T, h, w, 3] -> [T, height, width, 3]: scaled to cover the target, then center-cropped; with fit "resize"
    the whole picture resized onto the target (bicubic), as Wan's reference does once the size follows the
    picture's aspect ratio (params.auto_size), where the squash is at most a 16-pixel rounding."""
    _, source_height, source_width, _ = frames.shape
    if (source_width, source_height) == (width, height):
        return frames
    if fit == "resize":
        resized = F.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", antialias=True)
        return resized.permute(0, 2, 3, 1).clamp(0, 1)
    scale = max(width / source_width, height / source_height)
    covered = (max(height, round(source_height * scale)), max(width, round(source_width * scale)))
    resized = F.interpolate(frames.permute(0, 3, 1, 2), size=covered, mode="bicubic", antialias=True)
    top, left = (covered[0] - height) // 2, (covered[1] - width) // 2
    return resized[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1).clamp(0, 1)


@torch.inference_mode()
def encode_image_tokens(models: WanModels, frame: torch.Tensor, squash: bool = False) -> torch.Tensor:
    """[H, W, 3] -> [1, tokens, clip_width]: CLIP's penultimate hidden states, as Wan's image cross-attention expects.

    The CLIP input is the frame resized to cover CLIP's square and centre-cropped (diffusers' Wan pipelines), or
    with squash the whole frame squeezed into the square by bicubic interpolation (Wan's reference clip.py)."""
    pixels = _squashed_pixels(models, frame) if squash else models.image_processor(
        images=Image.fromarray(frames_to_uint8(frame[None])[0]), return_tensors="pt").pixel_values
    encoder = models.image_encoder
    states = encoder(pixel_values=pixels.to(models.device, encoder.dtype), output_hidden_states=True).hidden_states
    return states[-2].to(models.device, models.dtype)


def _squashed_pixels(models: WanModels, frame: torch.Tensor) -> torch.Tensor:
    """[H, W, 3] in 0..1 -> [1, 3, size, size] CLIP input, normalised with the processor's mean and std."""
    processor, size = models.image_processor, models.image_encoder.config.image_size
    square = F.interpolate(frame.permute(2, 0, 1)[None].float(), size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (square - mean) / std


def _latent_stats(models: WanModels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and 1/std of the Wan VAE latents, shaped [1, 16, 1, 1, 1]."""
    config = models.vae.config
    mean = torch.tensor(config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    inverse_std = 1.0 / torch.tensor(config.latents_std, device=device).view(1, -1, 1, 1, 1)
    return mean, inverse_std


def normalise_latents(models: WanModels, raw: torch.Tensor) -> torch.Tensor:
    mean, inverse_std = _latent_stats(models, raw.device)
    return (raw - mean) * inverse_std


def raw_latents(models: WanModels, normalised: torch.Tensor) -> torch.Tensor:
    mean, inverse_std = _latent_stats(models, normalised.device)
    return normalised / inverse_std + mean


@torch.inference_mode()
def encode_frames(models: WanModels, frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] in 0..1 -> raw VAE latents [1, 16, T_lat, H/8, W/8] (the posterior mode)."""
    video = frames.permute(3, 0, 1, 2)[None].to(models.device, models.vae.dtype) * 2.0 - 1.0
    return models.vae.encode(video).latent_dist.mode().float()


@torch.inference_mode()
def decode_latents(models: WanModels, raw: torch.Tensor) -> torch.Tensor:
    """Raw latents [1, 16, T_lat, h, w] -> frames [T, 8h, 8w, 3] in 0..1: the decoding stage, the VAE alone.
    Tiled decoding, which trades time for memory, is a run setting: models.configured(vae_tiling=True)."""
    models.use("vae")
    video = models.vae.decode(raw.to(models.device, models.vae.dtype)).sample
    return (video[0].float() / 2.0 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()


def first_frame_condition(models: WanModels, frame: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[H, W, 3] -> [1, 4 + 16, T_lat, h, w]: a mask marking the known first latent frame, then the normalised
    latents of the clip "first frame, then zeros in the VAE's -1..1 range" that Wan's image-to-video expects."""
    clip = torch.cat([frame[None], torch.full((num_frames - 1, *frame.shape), 0.5)])
    latents = normalise_latents(models, encode_frames(models, clip))
    mask = torch.zeros_like(latents[:, :4])
    mask[:, :, 0] = 1.0
    return torch.cat([mask, latents], dim=1)
