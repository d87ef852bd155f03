"""Fast mode (step_cache: diffusers' First Block Cache) against diffusers' own Wan I2V pipeline with the same cache
on the same tiny weights, and the model left exactly as it was after every run, finished or not."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig
from helpers import FRAMES, STEPS, TOLERANCE, diffusers_hooks, i2v_latents, params, random_pictures, \
    reference_i2v_pipeline, reference_kwargs

from wan_core.sampling import conditioning, pipeline
from wan_core.errors import WanInputError
from wan_core.sampling.models import load_models
from wan_core.lora.stack import LoraEntry
from wan_core.sampling.schedule import strength_start
from wan_core.tiny import write_tiny_lora
from wan_core.video_io import pil_to_frame

FULL_PASSES = 2 * STEPS  # the conditional and the unconditional pass at every step
SKIPPING = 0.2  # above every relative change of the tiny model's first block: all passes after the first are skipped


@contextmanager
def last_block_passes(transformer):
    """Count the passes that really compute the transformer's last block. A forward hook on the block itself would
    fire on skipped passes too (the cache swaps the block's forward, inside the call such a hook wraps), so this
    watches the block's feed-forward layer, which only a computed pass reaches."""
    passes = []
    handle = transformer.blocks[-1].ffn.register_forward_hook(lambda *_: passes.append(1))
    try:
        yield passes
    finally:
        handle.remove()


def decoded(models, latents) -> np.ndarray:
    return conditioning.decode_latents(models, latents).numpy()


@pytest.mark.parametrize("threshold", [0.045, SKIPPING])  # some passes skipped; all but the first per branch
def test_step_cache_matches_diffusers_first_block_cache(tiny_i2v, threshold):
    models, picture = tiny_i2v, random_pictures(1)[0]
    reference_pipe = reference_i2v_pipeline(models, "unipc")
    run = params("unipc")
    models.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with last_block_passes(models.transformer) as reference_passes:
            reference = reference_pipe(image=picture, num_frames=FRAMES, **reference_kwargs(run)).frames[0]
    finally:
        models.transformer.disable_cache()

    with last_block_passes(models.transformer) as passes:
        frames = decoded(models, i2v_latents(models, run, step_cache=threshold))
    uncached = decoded(models, i2v_latents(models, params("unipc")))

    assert len(passes) == len(reference_passes) < FULL_PASSES  # passes were skipped, as many as diffusers skips
    assert np.abs(frames - reference).max() < TOLERANCE
    assert np.abs(frames - uncached).max() > 2 * TOLERANCE  # skipping changed the video: the match is not trivial


def test_step_cache_zero_runs_every_pass_without_hooks(tiny_i2v):
    hooks_seen = []
    with last_block_passes(tiny_i2v.transformer) as passes:
        latents = i2v_latents(tiny_i2v, params("unipc"), lambda _step: hooks_seen.append(diffusers_hooks(tiny_i2v.transformer)),
                      step_cache=0.0)
    assert len(passes) == FULL_PASSES and hooks_seen == [{}] * STEPS
    assert torch.equal(latents, i2v_latents(tiny_i2v, params("unipc")))


class Cancelled(Exception):
    """What ComfyUI's Cancel raises from the progress callback."""


def test_no_cache_is_left_on_the_model_after_a_run_or_a_cancelled_run(tiny_i2v):
    models = tiny_i2v
    fresh = i2v_latents(models, params("euler"))
    cached = i2v_latents(models, params("euler"), step_cache=SKIPPING)
    assert not torch.equal(cached, fresh)
    assert diffusers_hooks(models.transformer) == {} and not models.transformer.is_cache_enabled
    assert torch.equal(i2v_latents(models, params("euler")), fresh)

    hooks_during = []

    def cancel_at_step_2(step):
        hooks_during.append(diffusers_hooks(models.transformer))
        if step.i + 1 == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        i2v_latents(models, params("euler"), cancel_at_step_2, step_cache=SKIPPING)
    assert len(hooks_during) == 2 and all(hooks_during)  # the cache was on while sampling ran
    assert diffusers_hooks(models.transformer) == {} and not models.transformer.is_cache_enabled
    assert torch.equal(i2v_latents(models, params("euler")), fresh)
    assert torch.equal(i2v_latents(models, params("euler"), step_cache=SKIPPING), cached)  # no cached residual carried over


def test_step_cache_on_video_to_video(tiny_t2v):
    source = torch.stack([pil_to_frame(picture) for picture in random_pictures(FRAMES)])
    run = params("unipc", strength=0.9)
    uncached = pipeline.generate_v2v(tiny_t2v, source, run).latents
    # the tiny T2V model's first block changes more per step than the I2V one's
    with last_block_passes(tiny_t2v.transformer) as passes, tiny_t2v.configured(step_cache=0.25):
        cached = pipeline.generate_v2v(tiny_t2v, source, run).latents
    assert len(passes) < 2 * (STEPS - strength_start(STEPS, run.strength))  # fewer than both passes of every step
    assert not torch.equal(cached, uncached)
    assert diffusers_hooks(tiny_t2v.transformer) == {}


@pytest.fixture(scope="module")
def fp8_i2v(tiny_paths):
    return load_models(tiny_paths["i2v"], tiny_paths["vae"], tiny_paths["text_encoder"], tiny_paths["clip_vision"],
                       weight_storage="fp8")


def test_step_cache_with_fp8_storage_and_a_lora(fp8_i2v, tmp_path):
    models = fp8_i2v
    casting_hooks = diffusers_hooks(models.transformer)
    assert casting_hooks and all(hooks == ["layerwise_casting"] for hooks in casting_hooks.values())
    lora = (LoraEntry(str(write_tiny_lora(tmp_path / "lora.safetensors")), 0.8),)
    try:
        patched = i2v_latents(models, params("unipc"), loras=lora)
        with last_block_passes(models.transformer) as passes:
            cached = i2v_latents(models, params("unipc"), loras=lora, step_cache=SKIPPING)
        assert 0 < len(passes) < FULL_PASSES and torch.isfinite(cached).all()
        assert diffusers_hooks(models.transformer) == casting_hooks  # fp8 casting stays, the cache's hooks are gone
        assert torch.equal(i2v_latents(models, params("unipc"), loras=lora), patched)
    finally:
        with models.configured(loras=()):
            pass


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_step_cache_out_of_range_is_refused(tiny_t2v, value):
    with pytest.raises(WanInputError, match=rf"^step_cache={value} is out of range: allowed 0.0 to 1.0$"):
        with tiny_t2v.configured(step_cache=value):
            pass
