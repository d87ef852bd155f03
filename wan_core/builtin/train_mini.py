"""`python -m wan_core train-mini --out DIR`: train the mini Wan 2.1 I2V model from nothing, on the CPU.

Three stages, each on what the previous one made:
  1. VAE (AutoencoderKLWan, z_dim 16): reconstruct single frames and 1+4-frame clips (still ones must give the same
     latent for the lone first frame and for the 4-frame chunk after it, so that camera moves can be made in latent
     space, see 2). Afterwards its latent statistics are folded into quant_conv / post_quant_conv so that the
     engine's fixed Wan 2.1 latents_mean / latents_std (read from no file) normalise them to ~N(0, 1).
  2. Transformer (WanTransformer3DModel, 36 channels in, image branch): flow matching on the engine's shifted sigma
     schedule (sigma uniform, then shifted by schedule.shift_sigma with default_flow_shift(160, 96) = 3), velocity
     target noise - x0, conditioned as the engine conditions it: UMT5 prompt states padded to 512, CLIP tokens of the
     first frame, and mask + normalised latents of "first frame, then grey". Encoding 81 frames as a video costs
     ~20 s here, so the camera moves are made once per picture, two ways. First dit_steps on latent_moves (each
     latent frame a resampled window over one latent of the whole picture), with the moves in a curriculum (one
     direction of each pair first, see CURRICULUM) so that the prompt, not the average move, decides the
     direction; then dit_settle_steps, all moves evenly, on encoded_moves (latent frame t the encoding of the
     frame the camera sees at the time it stands for), which decode into a steadier slide.
  3. LoRA (rank 8 on every attention and feed-forward Linear of the blocks): the same task with sepia-graded
     targets; saved in ComfyUI's layout (diffusion_model.<original Wan name>.lora_A/lora_B/alpha).
The text encoder (UMT5 + a sentencepiece tokenizer trained on the prompt sentences) and CLIP vision stay frozen at
their seeded random initialisation: the transformer learns to read them.
--continue-from DIR trains an earlier run's decoder (1b) and transformer (2) further, then its LoRA afresh: the
shipped files are one run continued five times (training.json holds the six records, each with its plan).

Deterministic for a seed on one machine with the same thread count (CPU only).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import sentencepiece
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanResidualBlock
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from ..errors import WanInputError
from ..files.loading import (TOKENIZER_TENSOR, WAN_HEAD_DIM, load_clip_vision, load_text_encoder, load_transformer,
                             load_vae)
from ..files.wan_names import transformer_key_to_wan
from ..sampling import conditioning
from ..sampling.params import WAN_NEGATIVE_PROMPT
from ..sampling.schedule import default_flow_shift, shift_sigma
from ..sampling.models import WanModels
from ..tiny import TOKENIZER_CORPUS, comfy_state, vae_key_to_wan
from . import mini_data as data
from .mini import MINI_FILES, MINI_LORA

STEP_RANGE = (1, 1_000_000)
# one random draw sequence per stage (with the seed); a continued stage gets its own, not a replay of the first run's
RANDOM_STREAMS = {"transformer": 3, "lora": 4, "decoder": 5, "continued transformer": 6, "continued decoder": 7,
                  "settling transformer": 8}
# latent frame 0's share of the flow loss, against 1 for each later frame. A fresh run at 20 copied frame 0 twice as
# well but the prompt stopped steering the pans: frame 0 was half the loss at 81 frames (BENCHMARKS.md)
FIRST_FRAME_WEIGHT = 5.0
# Opposite moves (pan left / pan right, zoom in / zoom out) differ only by the prompt. Drawn evenly from the first
# step, the model settles on their average (a still, blurred video) and never learns to read the direction: it
# stayed there through 800 more steps of left and right pans (measured). So the transformer first learns one
# direction of each pair, then the opposite ones come in gradually, then all five are drawn evenly.
ONE_DIRECTION = ("pan_left", "zoom_in", "still")
CURRICULUM = (0.4, 0.75)  # share of the steps: one direction until the first, even from the second
TEXT_EMBEDDER_GAIN = 4.0  # see transformer()
GREY_HEAD = 7  # condition latents encoded per picture; see precompute()


@dataclass(frozen=True)
class Plan:
    """Model sizes and how much of each stage to run."""

    vae_base_dim: int = 8
    width: int = 256  # transformer width; heads = width / 128
    layers: int = 4
    ffn: int = 512
    text_dim: int = 128
    text_layers: int = 2
    clip_width: int = 64
    lora_rank: int = 8
    vae_steps: int = 3600  # and decoder_steps: 2400 and 500 before compiled(), in about the same minutes
    dit_steps: int = 3000  # the curriculum on latent moves (latent_moves)
    dit_settle_steps: int = 2500  # then all moves evenly on encoded moves, at peak lr_continue
    lora_steps: int = 300
    decoder_steps: int = 1500
    procedural_pictures: int = 120
    photo_crops: int = 3  # random crops per training photo
    use_photos: bool = True
    vae_crop: int = 64
    dit_batch: int = 2
    latent_lengths: tuple[int, ...] = (21, 21, 13, 9)  # drawn per step: 81 frames mostly, shorter for speed
    lora_lengths: tuple[int, ...] = (9, 13)
    lora_pictures: int = 40
    # 1.5e-3 made the first shipped run's VAE (loss 0.11, another host) but left stage 1 stuck at 0.26 on the AMD
    # host of 2026-12-03, in two runs; 4e-4 ended at 0.11 there (2 threads; at 1 thread it tracked the same curve)
    lr_vae: float = 4e-4
    # also --continue-from's decoder: at lr_continue it had stopped gaining, while 1000 more whole-first-frame steps
    # at this peak raised the held-out first-frame ceiling (encode then decode) by 0.2-1.0 dB, coffee 21.79 -> 22.01
    lr_decoder: float = 5e-4
    decoder_lengths: tuple[int, ...] = (4, 6)  # latent frames per clip: 13 or 21 frames
    lr_dit: float = 6e-4
    lr_continue: float = 2e-4  # the settling steps and --continue-from: a trained transformer, so a lower peak
    lr_lora: float = 2e-3
    compiled: bool = True  # the training steps through torch.compile: see compiled()


PLANS = {
    "full": Plan(),
    # every stage on a toy size: what the test runs to check the script still works
    "smoke": Plan(vae_base_dim=4, width=128, layers=1, ffn=128, text_dim=32, text_layers=1, clip_width=32,
                  lora_rank=2, vae_steps=2, dit_steps=2, dit_settle_steps=2, lora_steps=2, decoder_steps=2,
                  decoder_lengths=(3,), procedural_pictures=2, photo_crops=0, use_photos=False, vae_crop=32,
                  dit_batch=1, latent_lengths=(2,), lora_lengths=(2,), lora_pictures=2, compiled=False),
}


def compiled(function, plan: Plan):
    """`function` through torch.compile, one graph per input shape, where the plan asks for it. On the CPU most of
    a training step of these small models is elementwise work (the VAE's RMS norms and SiLUs, the transformer's
    casts and modulation) that inductor fuses: stage 1's steps ran 1.9-2.1x and the transformer's 1.3-1.4x faster,
    for 40-90 s of compiling per shape (bench/bench_train_step.py, BENCHMARKS.md). dynamic=False: with shapes marked
    dynamic after a recompilation, inductor failed on the VAE's strided convolutions (torch 2.13)."""
    return torch.compile(function, dynamic=False) if plan.compiled else function


def compile_blocks(model: WanTransformer3DModel, plan: Plan):
    """The transformer's blocks through torch.compile (see compiled()), in place, so the state dict keeps its names."""
    if plan.compiled:
        for block in model.blocks:
            block.compile(dynamic=False)


def log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the frozen encoders -----------------------------------------------------------------------------------------


def tokenizer_model() -> bytes:
    """A sentencepiece unigram model (T5 ids: pad 0, eos 1, unk 2) learnt from the training sentences only."""
    lines = [p for prompts in data.training_prompts().values() for p in prompts]
    lines += TOKENIZER_CORPUS.splitlines() + [WAN_NEGATIVE_PROMPT]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4), model_writer=model, vocab_size=400, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, num_threads=1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    return model.getvalue()


def text_encoder(plan: Plan, vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(vocab_size=vocab_size, d_model=plan.text_dim, d_kv=64, d_ff=2 * plan.text_dim,
                        num_layers=plan.text_layers, num_heads=max(1, plan.text_dim // 64), feed_forward_proj="gated-gelu",
                        dropout_rate=0.0, is_encoder_decoder=False)
    return UMT5EncoderModel(config).eval()


def clip_vision(plan: Plan) -> CLIPVisionModel:
    # image_size 32, patch 8: 17 tokens; the loader reads heads as width / 64
    config = CLIPVisionConfig(hidden_size=plan.clip_width, intermediate_size=2 * plan.clip_width, num_hidden_layers=3,
                              num_attention_heads=max(1, plan.clip_width // 64), image_size=32, patch_size=8,
                              hidden_act="gelu", layer_norm_eps=1e-5)
    return CLIPVisionModel(config).eval()


def transformer(plan: Plan) -> WanTransformer3DModel:
    model = WanTransformer3DModel(
        num_attention_heads=plan.width // WAN_HEAD_DIM, attention_head_dim=WAN_HEAD_DIM, in_channels=36,
        out_channels=16, text_dim=plan.text_dim, freq_dim=256, ffn_dim=plan.ffn, num_layers=plan.layers,
        image_dim=plan.clip_width, added_kv_proj_dim=plan.width, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    )
    # The prompt reaches the blocks only as cross-attention values. In the first trained model they added 1-3 per
    # token to a residual stream of ~37, so the left/right difference was 1-2% of it (measured): a larger start
    # for the text embedder's output lets the prompt be heard from the first steps.
    with torch.no_grad():
        model.condition_embedder.text_embedder.linear_2.weight *= TEXT_EMBEDDER_GAIN
        model.condition_embedder.text_embedder.linear_2.bias *= TEXT_EMBEDDER_GAIN
    return model


# ---- pictures ----------------------------------------------------------------------------------------------------


def training_pictures(plan: Plan, seed: int) -> torch.Tensor:
    """[N, 3, SOURCE_H, SOURCE_W] in 0..1: procedural scenes (seeds below 1e6) and random crops of training photos."""
    rng = np.random.default_rng([seed, 1])
    pictures = [data.procedural_picture(int(s)) for s in rng.integers(0, 1_000_000, plan.procedural_pictures)]
    if plan.use_photos:
        for name in data.PHOTOS_TRAIN:
            pictures += [data.photo_crop(name, rng) for _ in range(plan.photo_crops)]
    order = rng.permutation(len(pictures))
    return torch.stack([torch.from_numpy(pictures[i]).permute(2, 0, 1) for i in order])


def first_frames(pictures: torch.Tensor) -> torch.Tensor:
    """[N, 3, SOURCE_H, SOURCE_W] -> [N, 3, FRAME_H, FRAME_W]: the camera's first window (the centre crop)."""
    top, left = (data.SOURCE_H - data.FRAME_H) // 2, (data.SOURCE_W - data.FRAME_W) // 2
    return pictures[:, :, top:top + data.FRAME_H, left:left + data.FRAME_W]


# ---- stage 1: VAE ------------------------------------------------------------------------------------------------


def _vae_batch(pictures: torch.Tensor, rng: np.random.Generator, step: int, crop: int):
    """(clip [B, 3, T, h, w] in -1..1, still: whether every frame is the same). Three kinds in turn:
    8 single-frame crops; 2 clips of 1+4 frames (camera moves at 1-3x the demo speed, or still); 2 whole frames."""
    kind = step % 3
    if kind == 0:
        items = []
        for i in rng.integers(0, len(pictures), 8):
            top, left = rng.integers(0, data.SOURCE_H - crop + 1), rng.integers(0, data.SOURCE_W - crop + 1)
            items.append(pictures[i, :, top:top + crop, left:left + crop])
        return torch.stack(items)[:, :, None] * 2 - 1, False
    if kind == 1:
        still = bool(rng.random() < 0.5)
        clips = []
        for i in rng.integers(0, len(pictures), 2):
            motion = "still" if still else data.MOTIONS[rng.integers(0, 4)]
            frames = data.camera_frames(pictures[i], motion, 5, speed=rng.uniform(1, 3))  # [3, 5, H, W]
            top, left = rng.integers(0, data.FRAME_H - crop + 1), rng.integers(0, data.FRAME_W - crop + 1)
            clips.append(frames[:, :, top:top + crop, left:left + crop])
        return torch.stack(clips) * 2 - 1, still
    chosen = rng.integers(0, len(pictures), 2)
    return first_frames(pictures[chosen])[:, :, None] * 2 - 1, False


class PatchCode:
    """A linear code of 8x8 RGB patches: their 16 principal components (unit variance each), ~27 dB on the
    training pictures. The Wan VAE trained end to end from random weights sits for hundreds of steps at the
    "mean colour" plateau; asking its encoder for these codes and its decoder to invert them gives every layer a
    direct target, so it gets moving within the few hundred steps this CPU affords."""

    def __init__(self, pictures: torch.Tensor, z_dim: int = 16):
        patches = self.patches(pictures * 2 - 1).reshape(-1, 192)  # [N * L, 192]
        self.mean = patches.mean(0)
        _, _, components = torch.linalg.svd(patches - self.mean, full_matrices=False)
        self.basis = components[:z_dim]  # [16, 192]
        self.scale = ((patches - self.mean) @ self.basis.T).std(0)

    @staticmethod
    def patches(images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, H/8 * W/8, 192]"""
        return F.unfold(images, 8, stride=8).transpose(1, 2)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] in -1..1 (T = 1 + 4k) -> codes [B, 16, T_lat, H/8, W/8]: latent frame 0 codes the first
        frame, each later one the mean of its 4 frames."""
        batch, _, frames, height, width = clip.shape
        chunks = [clip[:, :, 0]] + [clip[:, :, i:i + 4].mean(2) for i in range(1, frames, 4)]
        codes = []
        for image in chunks:
            code = ((self.patches(image) - self.mean) @ self.basis.T) / self.scale  # [B, L, 16]
            codes.append(code.transpose(1, 2).reshape(batch, -1, height // 8, width // 8))
        return torch.stack(codes, dim=2)


@torch.no_grad()
def zero_residual_branches(vae: AutoencoderKLWan):
    """Start every residual block and attention block as the identity (their last layer zero): a random branch
    adds noise at each of the ~25 blocks, and from that start the VAE took hundreds of steps more to leave the
    "mean colour" plateau (measured: first-frame PSNR 21 against 19 dB after 300 decoder steps)."""
    for module in vae.modules():
        last = module.conv2 if isinstance(module, WanResidualBlock) else \
            module.proj if isinstance(module, WanAttentionBlock) else None
        if last is not None:
            last.weight.zero_()
            last.bias.zero_()


@torch.no_grad()
def balance_signal_gains(vae: AutoencoderKLWan, frames: torch.Tensor):
    """Rescale each convolution on the path a frame takes through the freshly zeroed VAE (conv_in, the resampling
    and shortcut convolutions, conv_out, quant_conv, post_quant_conv) so that the spread of its output matches that
    of its input, in forward order (data-dependent initialisation, as in "All you need is a good init", Mishkin &
    Matas 2015). With PyTorch's default initialisation each of these 15 layers shrank the signal 1.5-3.5x, so it
    reached the heads' RMS norms 6-11x smaller than their constant offset, and the VAE sat at the "mean colour"
    plateau for its first ~1000 steps. Balanced, 400 steps passed what 600 gave before on every held-out picture
    (encode then decode; BENCHMARKS.md). frames: [B, 3, 1, H, W] in -1..1."""

    def spread(t: torch.Tensor) -> torch.Tensor:  # std about each channel's mean
        return (t - t.mean(dim=[d for d in range(t.dim()) if d != 1], keepdim=True)).std()

    residual_branches = {id(m) for block in vae.modules() if isinstance(block, (WanResidualBlock, WanAttentionBlock))
                         for m in block.modules() if m is not getattr(block, "conv_shortcut", None)}
    path = [m for m in vae.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
            and id(m) not in residual_branches]
    for layer in path:
        seen = {}
        hook = layer.register_forward_hook(lambda _, inputs, output: seen.update(x=inputs[0], y=output))
        vae.decode(vae.encode(frames).latent_dist.mean)
        hook.remove()
        if seen:  # a temporal convolution, unused by single frames, keeps its initialisation
            layer.weight *= spread(seen["x"]) / spread(seen["y"])


def train_vae(vae: AutoencoderKLWan, pictures: torch.Tensor, plan: Plan, seed: int) -> list[float]:
    rng = np.random.default_rng([seed, 2])
    zero_residual_branches(vae)
    balance_signal_gains(vae, first_frames(pictures[:8])[:, :, None] * 2 - 1)
    code_of = PatchCode(pictures)
    encode_mean = compiled(latent_means(vae), plan)
    decode = compiled(decoded_frames(vae), plan)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=plan.lr_vae, weight_decay=0.0)
    losses = []
    vae.train()
    for step in range(plan.vae_steps):
        for group in optimiser.param_groups:
            group["lr"] = _cosine(plan.lr_vae, step, plan.vae_steps)
        clip, still = _vae_batch(pictures, rng, step, plan.vae_crop)
        mu = encode_mean(clip)  # [B, 16, T_lat, h/8, w/8]
        out = decode(mu)
        reconstruction = F.l1_loss(out, clip) + F.mse_loss(out, clip)
        loss = reconstruction
        # guidance by the patch code fades out over the first half: then plain reconstruction takes over (its
        # decode is skipped once its weight is zero: the same sums in the same order, a few minutes less)
        guide = max(0.0, 1.0 - 2.0 * step / plan.vae_steps)
        if guide > 0:
            code = code_of(clip)
            loss = loss + guide * (F.mse_loss(mu, code) + F.mse_loss(decode(code), clip))
        loss = loss + 1e-4 * mu.pow(2).mean()
        if still:  # the chunk after a still first frame must encode like it (latent-space camera moves rely on it)
            loss = loss + 0.1 * F.mse_loss(mu[:, :, 1:], mu[:, :, :1].expand_as(mu[:, :, 1:]))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        losses.append(reconstruction.item())
        if step % 25 == 0 or step == plan.vae_steps - 1:
            mse = F.mse_loss(out.detach(), clip).item()
            psnr = 10 * np.log10(4 / mse)
            log(f"vae step {step + 1}/{plan.vae_steps} loss {np.mean(losses[-25:]):.4f} psnr {psnr:.1f}")
    vae.eval().requires_grad_(False)
    return losses


def _cosine(peak: float, step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


def latent_means(vae: AutoencoderKLWan):
    """The VAE's encoder as a function: clips [B, 3, T, H, W] in -1..1 -> raw latent means [B, 16, T_lat, ...]."""
    return lambda clips: vae.encode(clips).latent_dist.mean


def decoded_frames(vae: AutoencoderKLWan):
    """The VAE's decoder as a function: raw latents [B, 16, T_lat, h, w] -> clips [B, 3, T, 8h, 8w] in about -1..1."""
    return lambda latents: vae.decode(latents).sample


@torch.no_grad()
def encode(vae: AutoencoderKLWan, clips: torch.Tensor, batch: int = 4, latents_of=None) -> torch.Tensor:
    """[N, 3, T, H, W] in 0..1 -> raw latent means [N, 16, T_lat, H/8, W/8], several at once (PyTorch's CPU conv3d
    takes its fast oneDNN path only for batches above one, so even one clip goes in twice). latents_of: latent_means
    of the VAE, or that through compiled()."""
    latents_of = latents_of or latent_means(vae)
    out = []
    for start in range(0, len(clips), batch):
        chunk = clips[start:start + batch] * 2 - 1
        padded = torch.cat([chunk, chunk[:1]]) if len(chunk) == 1 else chunk
        out.append(latents_of(padded)[:len(chunk)])
    return torch.cat(out)


@torch.no_grad()
def fold_latent_statistics(vae: AutoencoderKLWan, samples: torch.Tensor):
    """Make the VAE's raw latents have Wan 2.1's per-channel mean and std (its config values, which the engine
    normalises with), by an exact affine change folded into quant_conv (encoder side) and post_quant_conv (decoder
    side). samples: raw means [N, 16, ...] of the trained VAE."""
    z = vae.config.z_dim
    flat = samples.transpose(0, 1).reshape(z, -1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-4)
    target_mean = torch.tensor(vae.config.latents_mean)
    target_std = torch.tensor(vae.config.latents_std)
    scale = target_std / std  # raw' = scale * raw + offset
    offset = target_mean - mean * scale
    quant, post = vae.quant_conv, vae.post_quant_conv  # 1x1x1 causal convs: [2z, 2z, 1, 1, 1], [z, z, 1, 1, 1]
    quant.weight[:z] *= scale.view(z, 1, 1, 1, 1)
    quant.bias[:z] = quant.bias[:z] * scale + offset
    quant.bias[z:] += 2 * torch.log(scale)  # log-variance of the rescaled posterior
    inner = post.weight[:, :, 0, 0, 0]  # [z_out, z_in]
    post.bias += -(inner @ (offset / scale))
    post.weight /= scale.view(1, z, 1, 1, 1)


@torch.no_grad()
def encoded_moves(vae: AutoencoderKLWan, pictures: torch.Tensor, latent_frames: int, latents_of=None) -> torch.Tensor:
    """[N, 3, SOURCE_H, SOURCE_W] in 0..1 -> raw latents [N, len(MOTIONS), 16, latent_frames, FRAME_H/8, FRAME_W/8]:
    every camera move, latent frame t the encoding, alone, of the frame the camera sees at latent_frame_time(t);
    frame 0 is the first frame's (the conditioning picture's) encoding and "still" repeats it. Shorter clips are
    prefixes. Why single frames: moves made by resampling one latent of the whole picture decode in steps of one
    latent pixel (8 px every 20 frames at the demo's pan speed), as the VAE places content on a coarse grid; these
    decode in 4 px steps (bench/bench_mini_vae_motion.py). latents_of: as encode() takes it."""
    times = [data.latent_frame_time(t) for t in range(1, latent_frames)]
    moving = [m for m in data.MOTIONS if m != "still"]
    first = encode(vae, first_frames(pictures)[:, :, None], batch=8, latents_of=latents_of)  # [N, 16, 1, h, w]
    moves = first[:, None].repeat(1, len(data.MOTIONS), 1, latent_frames, 1, 1)
    for n, picture in enumerate(pictures):
        frames = torch.cat([data.camera_frames_at(picture, m, times) for m in moving], dim=1)  # [3, 4 (T-1), H, W]
        clips = frames.transpose(0, 1)[:, :, None]  # [4 (T-1), 3, 1, H, W]
        latents = encode(vae, clips, batch=16, latents_of=latents_of)[:, :, 0]  # [4 (T-1), 16, h, w]
        for motion, move in zip(moving, latents.split(latent_frames - 1)):  # move [T-1, 16, h, w]
            moves[n, data.MOTIONS.index(motion), :, 1:] = move.transpose(0, 1)
    return moves


@torch.no_grad()
def latent_moves(vae: AutoencoderKLWan, pictures: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """encoded_moves' layout, made the cheap way: latent frame t the camera's window over one latent of the whole
    picture (mini_data.camera_latents), frame 0 the first frame's own encoding. Every move is an exact resampling
    of one latent, so its direction is the easiest to learn: fresh runs that began with 3000 steps on these read
    10 to 12 of the 12 held-out pans the right way, with two different VAEs, where 5000 steps on encoded moves read
    3 of 10 (BENCHMARKS.md). They decode in 8 px steps, so the transformer then settles on encoded moves."""
    source = encode(vae, pictures[:, :, None], batch=8)[:, :, 0]  # [N, 16, SOURCE_H/8, SOURCE_W/8]
    first = encode(vae, first_frames(pictures)[:, :, None], batch=8)[:, :, 0]  # [N, 16, FRAME_H/8, FRAME_W/8]
    moves = torch.stack([torch.stack([data.camera_latents(latent, motion, latent_frames) for motion in data.MOTIONS])
                         for latent in source])  # [N, len(MOTIONS), 16, T, FRAME_H/8, FRAME_W/8]
    moves[:, :, :, 0] = first[:, None]
    return moves


def _decoder_clip_batch(raw_moves, pictures, plan: Plan, rng):
    """(latents [2, 16, T, c, c], frames [2, 3, 4T-3, 8c, 8c] in -1..1): encoded camera moves and their real frames,
    cropped to c = vae_crop / 8 latent pixels."""
    latent_frames = int(plan.decoder_lengths[rng.integers(0, len(plan.decoder_lengths))])
    crop = plan.vae_crop // 8
    latents, clips = [], []
    for _ in range(2):
        index, kind = int(rng.integers(0, len(pictures))), int(rng.integers(0, len(data.MOTIONS)))
        latent = raw_moves[index, kind, :, :latent_frames]  # [16, T, FRAME_H/8, FRAME_W/8]
        frames = latent_clip_frames(latent_frames)
        clip = data.camera_frames(pictures[index], data.MOTIONS[kind], frames)  # [3, frames, H, W]
        top = int(rng.integers(0, data.FRAME_H // 8 - crop + 1))
        left = int(rng.integers(0, data.FRAME_W // 8 - crop + 1))
        latents.append(latent[:, :, top:top + crop, left:left + crop])
        clips.append(clip[:, :, 8 * top:8 * (top + crop), 8 * left:8 * (left + crop)])
    return torch.stack(latents), torch.stack(clips) * 2 - 1


def train_decoder(vae: AutoencoderKLWan, pictures: torch.Tensor, raw_moves: torch.Tensor, plan: Plan, seed: int, *,
                  lr: float, label: str = "decoder") -> list[float]:
    """Stage 1b, the decoder alone (the encoder, so the latent space the transformer learns in, stays as it is).
    Even steps decode the camera moves that the transformer is taught (raw_moves, from encoded_moves) into the
    camera move's real frames, over crops of 4-6 latent frames: the 1+4-frame clips of stage 1 never reach the
    decoder's later chunks, whose cached state from the chunk before then decoded such latents into washed-out
    magenta (measured on the first trained run). Odd steps decode 4 whole first frames: the crops never show the
    decoder's middle attention a whole frame, and 300 such steps raised the first frame of every held-out picture
    by 0.3-2 dB (measured)."""
    rng = np.random.default_rng([seed, RANDOM_STREAMS[label]])
    whole_first = first_frames(pictures)  # [N, 3, FRAME_H, FRAME_W]
    parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    vae.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    decode = compiled(decoded_frames(vae), plan)
    losses = []
    vae.train()
    for step in range(plan.decoder_steps):
        for group in optimiser.param_groups:
            group["lr"] = _cosine(lr, step, plan.decoder_steps)
        if step % 2 == 0:
            latents, target = _decoder_clip_batch(raw_moves, pictures, plan, rng)
        else:
            chosen = torch.from_numpy(rng.integers(0, len(pictures), 4))
            latents, target = raw_moves[chosen, 0, :, :1], whole_first[chosen][:, :, None] * 2 - 1
        out = decode(latents)
        loss = F.l1_loss(out, target) + F.mse_loss(out, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == plan.decoder_steps - 1:
            mse = F.mse_loss(out.detach(), target).item()
            log(f"decoder step {step + 1}/{plan.decoder_steps} loss {np.mean(losses[-25:]):.4f} "
                f"psnr {10 * np.log10(4 / mse):.1f}")
    vae.eval().requires_grad_(False)
    return losses


# ---- stage 2: data for the transformer ---------------------------------------------------------------------------


@dataclass
class PictureSet:
    """Everything the transformer is trained on for each picture, normalised as the engine normalises."""

    moves: torch.Tensor  # [N, len(MOTIONS), 16, T, FRAME_H/8, FRAME_W/8]: encoded_moves or latent_moves, normalised
    condition: torch.Tensor  # [N, 16, T, FRAME_H/8, FRAME_W/8]: latents of "first frame, then grey"
    image_tokens: torch.Tensor  # [N, 17, clip_width]: CLIP tokens of the first frame


def latent_clip_frames(latent_frames: int) -> int:
    """Video frames whose encoding has latent_frames latents (the causal VAE: 1 + 4 per later latent)."""
    return 1 + 4 * (latent_frames - 1)


def condition_clip(frames: torch.Tensor, total: int) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 3, total, H, W]: the first frame then grey (0.5, i.e. 0 in the VAE's range), as
    conditioning.first_frame_condition builds it."""
    grey = torch.full((frames.shape[0], 3, total - 1, *frames.shape[2:]), 0.5)
    return torch.cat([frames[:, :, None], grey], dim=2)


def precompute(models: WanModels, pictures: torch.Tensor, raw_moves: torch.Tensor) -> PictureSet:
    vae = models.vae
    moves = _normalise_moves(models, raw_moves)
    frames = first_frames(pictures)
    latent_frames = moves.shape[3]
    # The condition is "first frame, then grey", encoded. Over the grey latents the causal VAE forgets the picture
    # and settles on one latent, after a number of latents and at a place that depend on the VAE: a fresh stage 1's
    # still depends on the picture at latent 6 (RMS 0.23 across pictures, 0.10 at 7) and settles 1.55 RMS from its
    # latents 2-3, which this condition once repeated. Trained on those, a fresh transformer's 81-frame copy of frame
    # 0 was off by 0.44 RMS; on these, 0.27 (bench_mini_copy). So: GREY_HEAD latents per picture exactly, the rest
    # the mean of a few pictures' whole-length encodings (every picture's whole length would cost ~4 min here).
    # Training adds noise to every condition latent after the first (condition_latents), so that the model
    # learns not to rely on them.
    head = conditioning.normalise_latents(
        models, encode(vae, condition_clip(frames, latent_clip_frames(min(GREY_HEAD, latent_frames)))))
    condition = head
    if latent_frames > GREY_HEAD:
        long = conditioning.normalise_latents(
            models, encode(vae, condition_clip(frames[:4], latent_clip_frames(latent_frames))))
        tail = long[:, :, GREY_HEAD:].mean(0, keepdim=True)
        spread = (long[:, :, GREY_HEAD] - tail[:, :, 0]).pow(2).mean().sqrt()
        log(f"grey condition latent {GREY_HEAD}: RMS {float(spread):.3f} across pictures (0 once forgotten)")
        condition = torch.cat([head, tail.expand(len(pictures), -1, -1, -1, -1)], dim=2)
    tokens = torch.cat([conditioning.encode_image_tokens(models, frame.permute(1, 2, 0)) for frame in frames])
    return PictureSet(moves, condition, tokens)


def _normalise_moves(models: WanModels, raw_moves: torch.Tensor) -> torch.Tensor:
    """[N, M, 16, T, h, w] raw -> the same, normalised as the engine normalises latents"""
    return conditioning.normalise_latents(models, raw_moves.flatten(0, 1)).unflatten(0, raw_moves.shape[:2])


def condition_latents(condition: torch.Tensor, latent_frames: int, rng: np.random.Generator | None = None,
                      noise: float = 0.5) -> torch.Tensor:
    """[16, T, h, w] -> [4 + 16, T, h, w]: the engine's mask (all 4 channels 1 on latent frame 0) then the
    condition latents, the last one repeated to length; with rng, noise on the grey latents (1 on)."""
    picks = [min(t, condition.shape[1] - 1) for t in range(latent_frames)]
    latents = condition[:, picks].clone()
    if rng is not None and latent_frames > 1:
        latents[:, 1:] += noise * torch.from_numpy(rng.standard_normal(latents[:, 1:].shape)).float()
    mask = torch.zeros(4, *latents.shape[1:])
    mask[:, 0] = 1.0
    return torch.cat([mask, latents])


def clip_target(pictures: PictureSet, index: int, motion: str, latent_frames: int) -> torch.Tensor:
    """x0 [16, T, h, w]: the first latent_frames of picture `index`'s move."""
    return pictures.moves[index, data.MOTIONS.index(motion), :, :latent_frames]


# ---- stage 2: transformer ----------------------------------------------------------------------------------------


@dataclass
class Prompts:
    embeddings: dict[str, torch.Tensor]  # sentence -> [512, text_dim]
    by_motion: dict[str, list[str]]
    negative: torch.Tensor
    empty: torch.Tensor


def encode_prompts(models: WanModels) -> Prompts:
    by_motion = data.training_prompts()
    sentences = [s for group in by_motion.values() for s in group]
    embeddings = {s: conditioning.encode_prompt(models, s)[0] for s in sentences}
    return Prompts(embeddings, by_motion, conditioning.encode_prompt(models, WAN_NEGATIVE_PROMPT)[0],
                   conditioning.encode_prompt(models, "")[0])


def _text_for(prompts: Prompts, motion: str, rng: np.random.Generator) -> torch.Tensor:
    """A random training sentence for the motion; 10% the negative prompt and 5% the empty one, so that
    classifier-free guidance has an unconditional model to push away from."""
    draw = rng.random()
    if draw < 0.10:
        return prompts.negative
    if draw < 0.15:
        return prompts.empty
    group = prompts.by_motion[motion]
    return prompts.embeddings[group[rng.integers(0, len(group))]]


def flow_loss(model: WanTransformer3DModel, x0, condition, text, tokens, rng: np.random.Generator, shift: float):
    """Flow matching at a shifted uniform sigma, exactly on the engine's path: x = (1 - s) x0 + s noise, v = noise - x0.
    x0 [B, 16, T, h, w], condition [B, 20, T, h, w], text [B, 512, d], tokens [B, 17, d_img]."""
    batch = x0.shape[0]
    sigma = shift_sigma(torch.from_numpy(rng.uniform(0, 1, batch)).float(), shift).clamp(1e-3, 1 - 1e-3)
    noise = torch.from_numpy(rng.standard_normal(x0.shape)).float()
    s = sigma.view(batch, 1, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    timestep = torch.floor(sigma * 1000)  # the engine's model_timestep truncates the same way
    # bf16 matmuls, fp32 weights and optimiser: 1.42x the steps per second on this CPU (avx512_bf16, measured)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        velocity = model(hidden_states=torch.cat([noisy, condition], dim=1), timestep=timestep,
                         encoder_hidden_states=text, encoder_hidden_states_image=tokens, return_dict=False)[0]
    velocity = velocity.float()
    per_frame = (velocity - (noise - x0)).pow(2).mean(dim=(1, 3, 4))  # [B, T]
    # Latent frame 0 must copy the conditioning picture: at 1/T of a plain mean it is learnt last and stays noisy
    weights = torch.ones(x0.shape[2])
    weights[0] = FIRST_FRAME_WEIGHT
    return (per_frame * weights).sum(1).mean() / weights.sum()


def motion_odds(progress: float) -> np.ndarray:
    """Probabilities over data.MOTIONS at a point of the training (0..1): see CURRICULUM."""
    start, end = CURRICULUM
    opposite_weight = min(1.0, max(0.0, (progress - start) / (end - start)))
    weights = np.array([1.0 if motion in ONE_DIRECTION else opposite_weight for motion in data.MOTIONS])
    return weights / weights.sum()


def _dit_batch(pictures: PictureSet, prompts: Prompts, rng, batch: int, lengths, odds):
    latent_frames = int(lengths[rng.integers(0, len(lengths))])
    x0, condition, text, tokens = [], [], [], []
    for _ in range(batch):
        index = int(rng.integers(0, len(pictures.moves)))
        motion = data.MOTIONS[rng.choice(len(data.MOTIONS), p=odds)]
        x0.append(clip_target(pictures, index, motion, latent_frames))
        condition.append(condition_latents(pictures.condition[index], latent_frames, rng))
        text.append(_text_for(prompts, motion, rng))
        tokens.append(pictures.image_tokens[index])
    return torch.stack(x0), torch.stack(condition), torch.stack(text), torch.stack(tokens)


def train_transformer(model, pictures: PictureSet, prompts: Prompts, plan: Plan, seed: int, *, steps: int, lr: float,
                      lengths, parameters, label: str, curriculum=False) -> list[float]:
    rng = np.random.default_rng([seed, RANDOM_STREAMS[label]])
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0 if label == "lora" else 0.01)
    shift = default_flow_shift(data.FRAME_W, data.FRAME_H)
    losses = []
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = _cosine(lr, step, steps)
        odds = motion_odds(step / steps if curriculum else 1.0)
        x0, condition, text, tokens = _dit_batch(pictures, prompts, rng, plan.dit_batch, lengths, odds)
        loss = flow_loss(model, x0, condition, text, tokens, rng, shift)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            rate = (step + 1) / (time.perf_counter() - started)
            log(f"{label} step {step + 1}/{steps} loss {np.mean(losses[-25:]):.4f} ({rate:.2f} steps/s)")
    model.eval().requires_grad_(False)
    return losses


# ---- stage 3: LoRA -----------------------------------------------------------------------------------------------


class LoraLinear(torch.nn.Module):
    """y = base(x) + (alpha / rank) * B A x, with B zero at the start so training starts from the base model."""

    def __init__(self, base: torch.nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.down = torch.nn.Parameter(torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features))
        self.up = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.down), self.up)  # alpha = rank: scale 1


def add_lora(model: WanTransformer3DModel, rank: int, seed: int) -> dict[str, LoraLinear]:
    """Wrap every Linear inside the blocks (attention q/k/v/out, image k/v, feed-forward) in a LoraLinear."""
    generator = torch.Generator().manual_seed(seed)
    wrapped = {}
    for name, module in list(model.named_modules()):
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            parent_name, _, child = name.rpartition(".")
            lora = LoraLinear(module, rank, generator)
            setattr(model.get_submodule(parent_name), child, lora)
            wrapped[name] = lora
    return wrapped


def remove_lora(model: WanTransformer3DModel, wrapped: dict[str, LoraLinear]):
    for name, lora in wrapped.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, lora.base)


def lora_state(wrapped: dict[str, LoraLinear]) -> dict[str, torch.Tensor]:
    """ComfyUI's LoRA layout: diffusion_model.<original Wan name>.lora_A.weight [rank, in] / lora_B.weight
    [out, rank] / alpha (= rank: the product B A is added at scale 1)."""
    state = {}
    for name, lora in wrapped.items():
        key = "diffusion_model." + transformer_key_to_wan(name + ".weight").removesuffix(".weight")
        state[f"{key}.lora_A.weight"] = lora.down.detach().to(torch.float16).contiguous()
        state[f"{key}.lora_B.weight"] = lora.up.detach().to(torch.float16).contiguous()
        state[f"{key}.alpha"] = torch.tensor(float(lora.down.shape[0]))
    return state


# ---- files -------------------------------------------------------------------------------------------------------


def _save(state: dict[str, torch.Tensor], path: Path, dtype=torch.float16):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype).contiguous() if v.is_floating_point() and v.ndim > 0 else v.contiguous()
             for k, v in state.items()}
    save_file(state, str(path), metadata={"format": "pt", "wanflow": "mini"})


def save_encoders(out: Path, encoder: UMT5EncoderModel, tokenizer_bytes: bytes, clip: CLIPVisionModel):
    text_state = {k: v for k, v in encoder.state_dict().items() if "embed_tokens" not in k}
    text_state[TOKENIZER_TENSOR] = torch.from_numpy(np.frombuffer(tokenizer_bytes, dtype=np.uint8).copy())
    _save(text_state, out / Path(*MINI_FILES["text_encoder"]))
    clip_state = {"vision_model." + k.removeprefix("vision_model."): v for k, v in clip.state_dict().items()}
    _save(clip_state, out / Path(*MINI_FILES["clip_vision"]))


def save_vae(out: Path, vae: AutoencoderKLWan):
    # float32: the VAE is small and its first-frame reconstruction is what the PSNR target measures
    _save(comfy_state(vae, vae_key_to_wan, convert_wan_vae_to_diffusers), out / Path(*MINI_FILES["vae"]), torch.float32)


def save_transformer(out: Path, model: WanTransformer3DModel):
    _save(comfy_state(model, transformer_key_to_wan, convert_wan_transformer_to_diffusers),
          out / Path(*MINI_FILES["i2v"]))


# ---- the command -------------------------------------------------------------------------------------------------


def check_arguments(out: Path, steps: dict[str, int]):
    """Everything that can be wrong with the input, before any work: nothing existing is ever overwritten."""
    for name, value in steps.items():
        if not isinstance(value, int) or not STEP_RANGE[0] <= value <= STEP_RANGE[1]:
            raise WanInputError(f"{name}={value!r}: a step count is a whole number from {STEP_RANGE[0]} to "
                                f"{STEP_RANGE[1]}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WanInputError(f"out={str(out)!r} exists and is not an empty folder: give a new folder, nothing is "
                            "overwritten")


def train_mini(out, seed: int = 0, plan: Plan = PLANS["full"], reuse_vae=None, continue_from=None) -> dict:
    """Train every stage into `out` (a new or empty folder) in ComfyUI's layout; returns the training record.
    reuse_vae: a folder from an earlier run with the same seed and plan: its VAE and frozen encoders are taken
    as they are and stage 1 is skipped (to retrain the transformer and LoRA alone).
    continue_from: such a folder whose decoder and transformer train plan.decoder_steps and plan.dit_steps more
    steps (the transformer on all motions evenly at peak plan.lr_continue, the decoder at plan.lr_decoder) instead of
    starting afresh; implies reuse_vae of it."""
    out = Path(out)
    if reuse_vae is not None and continue_from is not None:
        raise WanInputError("give reuse_vae or continue_from, not both: continue_from reuses that folder's VAE too")
    earlier = continue_from if continue_from is not None else reuse_vae
    if earlier is not None:
        earlier = Path(earlier)
        needed = ("vae", "text_encoder", "clip_vision") + (("i2v",) if continue_from is not None else ())
        missing = [sub for sub in needed if not (earlier / Path(*MINI_FILES[sub])).is_file()]
        if missing:
            which = "continue_from" if continue_from is not None else "reuse_vae"
            raise WanInputError(f"{which}={str(earlier)!r} lacks the {missing} files of a train-mini run")
    check_arguments(out, {"vae_steps": plan.vae_steps, "decoder_steps": plan.decoder_steps,
                          "dit_steps": plan.dit_steps, "dit_settle_steps": plan.dit_settle_steps,
                          "lora_steps": plan.lora_steps})
    torch.manual_seed(seed)
    work = out.with_name(out.name + ".partial")  # written there, renamed at the end: no half-made output folder
    if work.exists():
        raise WanInputError(f"{str(work)!r} exists (a stopped run?): remove it first")
    record = {"seed": seed, "plan": asdict(plan), "threads": torch.get_num_threads(), "seconds": {}}
    started = time.perf_counter()

    tokenizer_bytes = tokenizer_model()
    vocab = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_bytes).get_piece_size()
    torch.manual_seed(seed + 1)
    save_encoders(work, text_encoder(plan, vocab), tokenizer_bytes, clip_vision(plan))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(base_dim=plan.vae_base_dim, z_dim=16)
    if earlier is not None:
        for sub in ("vae", "text_encoder", "clip_vision"):
            (work / MINI_FILES[sub][0]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(earlier / Path(*MINI_FILES[sub]), work / Path(*MINI_FILES[sub]))
        vae = load_vae(work / Path(*MINI_FILES["vae"]))
    torch.manual_seed(seed + 3)
    model = transformer(plan) if continue_from is None else load_transformer(earlier / Path(*MINI_FILES["i2v"]))
    compile_blocks(model, plan)
    pictures = training_pictures(plan, seed)
    log(f"{len(pictures)} training pictures; transformer {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M, "
        f"VAE {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters")

    mark = time.perf_counter()
    longest = max(plan.latent_lengths + plan.decoder_lengths + plan.lora_lengths)
    if earlier is None:
        record["vae_losses"] = train_vae(vae, pictures, plan, seed)[-50:]
        fold_latent_statistics(vae, encode(vae, pictures[:, :, None], batch=8))
    else:
        record["vae_reused_from"] = str(earlier)
    latents_of = compiled(latent_means(vae), plan)  # the encoder is final from here on
    raw_moves = encoded_moves(vae, pictures, longest, latents_of)
    if earlier is None:
        record["decoder_losses"] = train_decoder(vae, pictures, raw_moves, plan, seed, lr=plan.lr_decoder)[-50:]
        save_vae(work, vae)
    if continue_from is not None:  # the whole chain stays on record: what this run started from, and how it was made
        earlier_record = earlier / "training.json"
        record["continued_from"] = json.loads(earlier_record.read_text()) if earlier_record.is_file() else str(earlier)
        record["decoder_losses"] = train_decoder(vae, pictures, raw_moves, plan, seed, lr=plan.lr_decoder,
                                                 label="continued decoder")[-50:]
        save_vae(work, vae)
    record["seconds"]["vae"] = time.perf_counter() - mark

    mark = time.perf_counter()
    encoder, tokenizer = load_text_encoder(work / Path(*MINI_FILES["text_encoder"]))
    clip, processor = load_clip_vision(work / Path(*MINI_FILES["clip_vision"]))
    models = WanModels(model, vae, encoder, tokenizer, clip, processor)
    prompts = encode_prompts(models)
    picture_set = precompute(models, pictures, raw_moves)
    del raw_moves
    record["seconds"]["precompute"] = time.perf_counter() - mark
    log(f"precomputed latents, prompts and CLIP tokens in {record['seconds']['precompute']:.0f} s")

    mark = time.perf_counter()
    parameters = list(model.parameters())
    if continue_from is None:
        latent_set = replace(picture_set, moves=_normalise_moves(models, latent_moves(vae, pictures, longest)))
        record["curriculum_losses"] = train_transformer(
            model, latent_set, prompts, plan, seed, steps=plan.dit_steps, lr=plan.lr_dit, lengths=plan.latent_lengths,
            parameters=parameters, label="transformer", curriculum=True)[-50:]
        del latent_set
        record["transformer_losses"] = train_transformer(
            model, picture_set, prompts, plan, seed, steps=plan.dit_settle_steps, lr=plan.lr_continue,
            lengths=plan.latent_lengths, parameters=parameters, label="settling transformer")[-50:]
    else:
        record["transformer_losses"] = train_transformer(
            model, picture_set, prompts, plan, seed, steps=plan.dit_steps, lr=plan.lr_continue,
            lengths=plan.latent_lengths, parameters=parameters, label="continued transformer")[-50:]
    save_transformer(work, model)
    record["seconds"]["transformer"] = time.perf_counter() - mark

    mark = time.perf_counter()
    count = min(plan.lora_pictures, len(pictures))
    graded = data.sepia(pictures[:count].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    # the graded moves as targets, conditioned on the ungraded first frame: the LoRA learns the grade
    sepia_moves = _normalise_moves(models, encoded_moves(vae, graded, longest, latents_of))
    subset = PictureSet(sepia_moves, picture_set.condition[:count], picture_set.image_tokens[:count])
    wrapped = add_lora(model, plan.lora_rank, seed + 4)
    parameters = [p for lora in wrapped.values() for p in (lora.down, lora.up)]
    record["lora_losses"] = train_transformer(
        model, subset, prompts, plan, seed, steps=plan.lora_steps, lr=plan.lr_lora, lengths=plan.lora_lengths,
        parameters=parameters, label="lora")[-50:]
    _save(lora_state(wrapped), work / MINI_LORA)
    remove_lora(model, wrapped)
    record["seconds"]["lora"] = time.perf_counter() - mark

    record["seconds"]["total"] = time.perf_counter() - started
    (work / "training.json").write_text(json.dumps(record, indent=1))
    if out.exists():
        out.rmdir()  # checked empty above
    os.replace(work, out)
    log(f"wrote {out} in {record['seconds']['total'] / 60:.1f} min")
    return record


def run(args) -> int:
    """The train-mini command (arguments from cli/mini.py)."""
    plan = PLANS[args.plan]
    names = ("vae_steps", "decoder_steps", "dit_steps", "dit_settle_steps", "lora_steps", "procedural_pictures")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    plan = replace(plan, **overrides)
    torch.set_num_threads(args.threads)
    train_mini(args.out, args.seed, plan, reuse_vae=args.reuse_vae, continue_from=args.continue_from)
    return 0
