"""What several test modules share: the parity setup against diffusers' Wan pipelines, and Wan's T5 file layout."""

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline
from diffusers.hooks import HookRegistry
from PIL import Image

from wan_core.sampling import pipeline
from wan_core.sampling.params import SamplingParams
from wan_core.video_io import pil_to_frame

WIDTH, HEIGHT, FRAMES, STEPS, SHIFT, SEED = 80, 64, 9, 5, 3.0, 7
TOLERANCE = 1e-3


def reference_scheduler(sampler: str) -> UniPCMultistepScheduler:
    """diffusers' flow UniPC as the Wan pipelines ship it; for Euler, its first-order predictor without the
    corrector, which is exactly the flow Euler step x + (sigma_next - sigma) * v on the same sigmas."""
    first_order = dict(solver_order=1, disable_corrector=list(range(STEPS))) if sampler == "euler" else {}
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT, **first_order)


def reference_i2v_pipeline(models, sampler: str) -> WanImageToVideoPipeline:
    """diffusers' I2V pipeline on the same modules as the wan_core bundle `models`."""
    return WanImageToVideoPipeline(
        tokenizer=models.tokenizer, text_encoder=models.text_encoder, vae=models.vae,
        scheduler=reference_scheduler(sampler), image_processor=models.image_processor,
        image_encoder=models.image_encoder, transformer=models.transformer)


def random_pictures(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)) for _ in range(count)]


def params(sampler: str, **extra) -> SamplingParams:
    return SamplingParams(prompt="a cat walks on the grass", negative_prompt="blurry, static", width=WIDTH,
                          height=HEIGHT, num_frames=FRAMES, steps=STEPS, flow_shift=SHIFT, seed=SEED,
                          sampler=sampler, **extra)


def reference_kwargs(run: SamplingParams) -> dict:
    return dict(prompt=run.prompt, negative_prompt=run.negative_prompt, height=HEIGHT, width=WIDTH,
                num_inference_steps=STEPS, guidance_scale=run.guidance_scale,
                generator=torch.Generator().manual_seed(SEED), output_type="np")


def i2v_latents(models, run: SamplingParams, progress=None, **settings) -> torch.Tensor:
    """generate_i2v on the first random picture inside models.configured(**settings) (step_cache, attention, ...)."""
    with models.configured(**settings):
        return pipeline.generate_i2v(models, pil_to_frame(random_pictures(1)[0])[None], run, progress).latents


def diffusers_hooks(model) -> dict[str, list[str]]:
    """{module name: its diffusers hooks}: fp8 storage's casting hooks, and the step cache's while it is on."""
    registries = {name: HookRegistry.check_if_exists_or_initialize(module) for name, module in model.named_modules()}
    return {name: list(registry.hooks) for name, registry in registries.items() if registry.hooks}


# Wan's own T5 module names (wan/modules/t5.py) for transformers' UMT5 names, written out independently here.
WAN_T5_NAMES = {"layer.0.layer_norm": "norm1", "layer.0.SelfAttention.q": "attn.q", "layer.0.SelfAttention.k": "attn.k",
                "layer.0.SelfAttention.v": "attn.v", "layer.0.SelfAttention.o": "attn.o",
                "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
                "layer.1.layer_norm": "norm2", "layer.1.DenseReluDense.wi_0": "ffn.gate.0",
                "layer.1.DenseReluDense.wi_1": "ffn.fc1", "layer.1.DenseReluDense.wo": "ffn.fc2"}


def to_wan_t5(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key in ("shared.weight", "encoder.embed_tokens.weight"):
            out["token_embedding.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            out["norm.weight"] = value
        else:
            _, _, index, rest = key.split(".", 3)
            out[f"blocks.{index}.{WAN_T5_NAMES[rest.removesuffix('.weight')]}.weight"] = value
    return out


def comfy_fp8(state: dict, scaled: bool) -> dict:
    """ComfyUI-style fp8 files: block matrices in fp8 (scaled: per-weight scale_weight and the scaled_fp8
    marker, as ComfyUI's model_base writes them), everything else in fp16, keys under model.diffusion_model."""
    out = {}
    for key, value in state.items():
        if key.startswith("blocks.") and key.endswith(".weight") and value.ndim == 2:
            if scaled:
                scale = value.abs().max().float() / torch.finfo(torch.float8_e4m3fn).max
                out[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
                value = value / scale
            out[key] = value.to(torch.float8_e4m3fn)
        else:
            out[key] = value.half()
    if scaled:
        out["scaled_fp8"] = torch.tensor([], dtype=torch.float8_e4m3fn)
    return {"model.diffusion_model." + key: value for key, value in out.items()}
