"""Stage-wise placement: each pipeline stage says which networks it runs (WanModels.use) before running them, in
the order a placement sees them, and saying so changes no number."""

from dataclasses import replace

import pytest
import torch
from helpers import FRAMES, params, random_pictures

from wan_core.sampling import conditioning, pipeline
from wan_core.sampling.models import model_offload
from wan_core.sampling.prompt_cache import PromptCache
from wan_core.video_io import pil_to_frame

TEXT, SOURCE, IMAGE = ("text_encoder",), ("vae",), ("image_encoder", "vae")  # v2v's source frames: the VAE
SAMPLING, DECODING = ("transformer",), ("vae",)


def recording(models):
    """The same networks with a placement that writes down what each stage asks for, and that list."""
    stages = []
    # a cache of its own: the session's shared prompt cache would skip the text encoder's stage
    return replace(models, placement=lambda _models, names: stages.append(names), prompt_cache=PromptCache()), stages


def picture() -> torch.Tensor:
    return pil_to_frame(random_pictures(1)[0])[None]


def source_video() -> torch.Tensor:
    return torch.stack([pil_to_frame(frame) for frame in random_pictures(FRAMES)])


def test_i2v_stages_in_order_with_the_same_latents(tiny_i2v):
    models, stages = recording(tiny_i2v)
    latents = pipeline.generate_i2v(models, picture(), params("unipc")).latents
    assert stages == [TEXT, IMAGE, SAMPLING]
    assert torch.equal(latents, pipeline.generate_i2v(tiny_i2v, picture(), params("unipc")).latents)
    conditioning.decode_latents(models, latents)
    assert stages[-1] == DECODING


def test_v2v_on_a_t2v_model_needs_no_image_encoder(tiny_t2v):
    models, stages = recording(tiny_t2v)
    run = params("euler", strength=0.7)
    latents = pipeline.generate_v2v(models, source_video(), run).latents
    assert stages == [TEXT, SOURCE, SAMPLING]
    assert torch.equal(latents, pipeline.generate_v2v(tiny_t2v, source_video(), run).latents)


def test_v2v_on_an_i2v_model_adds_the_image_stage(tiny_i2v):
    models, stages = recording(tiny_i2v)
    pipeline.generate_v2v(models, source_video(), params("euler", strength=0.7))
    assert stages == [TEXT, SOURCE, IMAGE, SAMPLING]


def test_model_offload_placement_gives_the_same_latents(tiny_i2v):
    """--offload model's placement on the CPU, where compute device and offload device are one: it runs every
    stage and changes no number (moving between devices needs a GPU, see the README)."""
    offloaded = replace(tiny_i2v, placement=model_offload)
    assert torch.equal(pipeline.generate_i2v(offloaded, picture(), params("euler")).latents,
                       pipeline.generate_i2v(tiny_i2v, picture(), params("euler")).latents)


def test_an_unknown_network_name_is_refused(tiny_i2v):
    models, stages = recording(tiny_i2v)
    with pytest.raises(ValueError, match="unknown network \\['unet'\\]"):
        models.use("text_encoder", "unet")
    assert stages == []
