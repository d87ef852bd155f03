"""wan_core against diffusers' Wan pipelines on the same tiny weights, inputs and seed (float32, decoded frames)."""

import numpy as np
import pytest
import torch
from diffusers import WanVideoToVideoPipeline
from helpers import FRAMES, HEIGHT, STEPS, TOLERANCE, WIDTH, params, random_pictures, reference_i2v_pipeline, \
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


def test_wan_parity_spaces_sigmas_from_0_999_and_squashes_the_clip_input(tiny_i2v):
    """parity="wan": Wan's reference spacing (from sigma_max 0.999 toward 0, then shifted) and the whole frame
    squeezed into CLIP's square, so what diffusers' centre crop cuts away still counts."""
    from wan_core.sampling.schedule import flow_sigmas, shift_sigma

    unshifted = torch.linspace(0.999, 0.0, STEPS + 1, dtype=torch.float64)[:-1]
    assert torch.allclose(flow_sigmas(STEPS, 3.0, "wan")[:-1], shift_sigma(unshifted, 3.0))
    assert not torch.allclose(flow_sigmas(STEPS, 3.0, "wan"), flow_sigmas(STEPS, 3.0))

    frame = pil_to_frame(random_pictures(1)[0])  # 80x64: the crop drops 8 columns each side
    edited = frame.clone()
    edited[:, :4] = 1.0 - edited[:, :4]  # only the leftmost columns change
    for squash, changes in ((False, False), (True, True)):
        tokens = [conditioning.encode_image_tokens(tiny_i2v, picture, squash) for picture in (frame, edited)]
        assert torch.equal(tokens[0], tokens[1]) is not changes
