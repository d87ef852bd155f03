"""Fast mode (step_cache: diffusers' First Block Cache) against diffusers' own Wan I2V pipeline with the same cache
on the same tiny weights, and the model left exactly as it was after every run, finished or not."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig
from test_parity import FRAMES, STEPS, TOLERANCE, params, random_pictures, reference_i2v_pipeline, reference_kwargs

from wan_core.sampling import conditioning, pipeline
from wan_core.errors import WanInputError
from wan_core.files.loading import load_models
from wan_core.lora.apply import set_lora_stack
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


def diffusers_hooks(transformer) -> dict[str, list[str]]:
    """{module name: its diffusers hooks}: fp8 storage's casting hooks, and the cache's while it is on."""
    return {name: list(module._diffusers_hook.hooks) for name, module in transformer.named_modules()
            if getattr(module, "_diffusers_hook", None) and module._diffusers_hook.hooks}


def i2v(models, run, progress=None) -> torch.Tensor:
    return pipeline.generate_i2v(models, pil_to_frame(random_pictures(1)[0])[None], run, progress).latents


def decoded(models, latents) -> np.ndarray:
    return conditioning.decode_latents(models, latents).numpy()


@pytest.mark.parametrize("threshold", [0.045, SKIPPING])  # some passes skipped; all but the first per branch
def test_step_cache_matches_diffusers_first_block_cache(tiny_i2v, threshold):
    models, picture = tiny_i2v, random_pictures(1)[0]
    reference_pipe = reference_i2v_pipeline(models, "unipc")
    run = params("unipc", step_cache=threshold)
    models.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with last_block_passes(models.transformer) as reference_passes:
            reference = reference_pipe(image=picture, num_frames=FRAMES, **reference_kwargs(run)).frames[0]
    finally:
        models.transformer.disable_cache()

    with last_block_passes(models.transformer) as passes:
        frames = decoded(models, i2v(models, run))
    uncached = decoded(models, i2v(models, params("unipc")))

    assert len(passes) == len(reference_passes) < FULL_PASSES  # passes were skipped, as many as diffusers skips
    assert np.abs(frames - reference).max() < TOLERANCE
    assert np.abs(frames - uncached).max() > 2 * TOLERANCE  # skipping changed the video: the match is not trivial


def test_step_cache_zero_runs_every_pass_without_hooks(tiny_i2v):
    hooks_seen = []
    with last_block_passes(tiny_i2v.transformer) as passes:
        latents = i2v(tiny_i2v, params("unipc", step_cache=0.0),
                      lambda *_: hooks_seen.append(diffusers_hooks(tiny_i2v.transformer)))
    assert len(passes) == FULL_PASSES and hooks_seen == [{}] * STEPS
    assert torch.equal(latents, i2v(tiny_i2v, params("unipc")))


class Cancelled(Exception):
    """What ComfyUI's Cancel raises from the progress callback."""


def test_no_cache_is_left_on_the_model_after_a_run_or_a_cancelled_run(tiny_i2v):
    models = tiny_i2v
    fresh = i2v(models, params("euler"))
    cached = i2v(models, params("euler", step_cache=SKIPPING))
    assert not torch.equal(cached, fresh)
    assert diffusers_hooks(models.transformer) == {} and not models.transformer.is_cache_enabled
    assert torch.equal(i2v(models, params("euler")), fresh)

    hooks_during = []

    def cancel_at_step_2(step, _total, _x0):
        hooks_during.append(diffusers_hooks(models.transformer))
        if step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        i2v(models, params("euler", step_cache=SKIPPING), cancel_at_step_2)
    assert len(hooks_during) == 2 and all(hooks_during)  # the cache was on while sampling ran
    assert diffusers_hooks(models.transformer) == {} and not models.transformer.is_cache_enabled
    assert torch.equal(i2v(models, params("euler")), fresh)
    assert torch.equal(i2v(models, params("euler", step_cache=SKIPPING)), cached)  # no cached residual carried over


def test_step_cache_on_video_to_video(tiny_t2v):
    source = torch.stack([pil_to_frame(picture) for picture in random_pictures(FRAMES)])
    run = params("unipc", strength=0.9, step_cache=0.25)  # the tiny T2V model's first block changes more per step
    uncached = pipeline.generate_v2v(tiny_t2v, source, params("unipc", strength=0.9)).latents
    with last_block_passes(tiny_t2v.transformer) as passes:
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
    set_lora_stack(models, (LoraEntry(str(write_tiny_lora(tmp_path / "lora.safetensors")), 0.8),))
    try:
        patched = i2v(models, params("unipc"))
        with last_block_passes(models.transformer) as passes:
            cached = i2v(models, params("unipc", step_cache=SKIPPING))
        assert 0 < len(passes) < FULL_PASSES and torch.isfinite(cached).all()
        assert diffusers_hooks(models.transformer) == casting_hooks  # fp8 casting stays, the cache's hooks are gone
        assert torch.equal(i2v(models, params("unipc")), patched)
    finally:
        set_lora_stack(models, None)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_step_cache_out_of_range_is_refused(value):
    with pytest.raises(WanInputError, match=rf"^step_cache={value} is out of range: allowed 0.0 to 1.0$"):
        params("unipc", step_cache=value)
