"""wan_core against diffusers' Wan pipelines on the same tiny weights, inputs and seed (float32, decoded frames)."""

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanVideoToVideoPipeline
from PIL import Image

from wan_core.sampling import conditioning, pipeline
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


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_image_to_video_matches_diffusers(tiny_i2v, sampler):
    models, picture = tiny_i2v, random_pictures(1)[0]
    reference_pipe = reference_i2v_pipeline(models, sampler)
    run = params(sampler)
    reference = reference_pipe(image=picture, num_frames=FRAMES, **reference_kwargs(run)).frames[0]

    generation = pipeline.generate_i2v(models, pil_to_frame(picture)[None], run)
    frames = conditioning.decode_latents(models, generation.latents).numpy()

    assert generation.latents.shape == (1, 16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    assert frames.shape == reference.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert reference.std() > 0.01  # a real picture, not a constant that any code would match
    assert np.abs(frames - reference).max() < TOLERANCE


@pytest.mark.parametrize("sampler,strength", [("unipc", 0.9), ("unipc", 0.5), ("euler", 0.7)])
def test_video_to_video_matches_diffusers(tiny_t2v, sampler, strength):
    models, pictures = tiny_t2v, random_pictures(FRAMES)
    reference_pipe = WanVideoToVideoPipeline(tokenizer=models.tokenizer, text_encoder=models.text_encoder,
                                             vae=models.vae, scheduler=reference_scheduler(sampler),
                                             transformer=models.transformer)
    run = params(sampler, strength=strength)
    reference = reference_pipe(video=pictures, strength=strength, **reference_kwargs(run)).frames[0]

    source = torch.stack([pil_to_frame(picture) for picture in pictures])
    frames = conditioning.decode_latents(models, pipeline.generate_v2v(models, source, run).latents).numpy()

    assert frames.shape == reference.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(frames - reference).max() < TOLERANCE
