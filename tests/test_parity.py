"""wan_core against diffusers' Wan pipelines on the same tiny weights, inputs and seed (float32, decoded frames)."""

import numpy as np
import pytest
import torch
from diffusers import WanVideoToVideoPipeline
from helpers import FRAMES, HEIGHT, TOLERANCE, WIDTH, params, random_pictures, reference_i2v_pipeline, \
    reference_kwargs, reference_scheduler

from wan_core.sampling import conditioning, pipeline
from wan_core.video_io import pil_to_frame


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
