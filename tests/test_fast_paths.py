"""The fast paths against diffusers on the same tiny weights: the 4-step distill preset (diffusers' flow-match Euler
scheduler set to the publisher's timesteps), fast mode (diffusers' own MagCache, its calibrate mode as the source of
the ratios), the published Wan 2.1 ratio tables, and the cost every run reports in transformer passes."""

import ast
import json
import re

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
from diffusers.hooks import MagCacheConfig
from helpers import FRAMES, HEIGHT, STEPS, TOLERANCE, WIDTH, i2v_latents, params, random_pictures, \
    reference_i2v_pipeline, reference_kwargs

from wan_core.errors import WanInputError
from wan_core.lora.stack import LoraEntry
from wan_core.sampling import conditioning, magcache
from wan_core.sampling.params import SamplingParams
from wan_core.tiny import write_tiny_distill_lora

# LightX2V's WanStepDistillScheduler at shift 5 for denoising steps [1000, 750, 500, 250], worked out by hand:
# unshifted sigmas 1 - t_index/1000 = 1, 0.75, 0.5, 0.25; shifted 5s / (1 + 4s)
PUBLISHER_SIGMAS = [1.0, 0.9375, 5 * 0.5 / 3.0, 5 * 0.25 / 2.0, 0.0]


def last_block_count(transformer, counts: list):
    """Counts passes that computed the last block (its feed-forward layer runs only then)."""
    return transformer.blocks[-1].ffn.register_forward_hook(lambda *_: counts.append(1))


def decoded(models, latents) -> np.ndarray:
    return conditioning.decode_latents(models, latents).numpy()


def publisher_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """diffusers' flow-match Euler (x + (sigma_next - sigma) * v, exact float timesteps) at shift 5. The Wan
    pipeline calls set_timesteps(4), which spaces timesteps evenly from sigma_max to sigma_min (times 1000) before
    the shift: sigma_min 0.25 makes them the publisher's 1000, 750, 500, 250."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    scheduler.sigma_min = 0.25
    return scheduler


def test_4step_preset_matches_diffusers_with_the_publishers_schedule_in_4_passes(tiny_i2v, tmp_path):
    models, picture = tiny_i2v, random_pictures(1)[0]
    lora = (LoraEntry(str(write_tiny_distill_lora(tmp_path / "lightx2v.safetensors", "i2v", "lightx2v"))),)
    run = SamplingParams(prompt="a cat walks", width=WIDTH, height=HEIGHT, num_frames=FRAMES, seed=11, preset="4step")
    assert (run.steps, run.guidance_scale, run.flow_shift, run.sampler) == (4, 1.0, 5.0, "euler")
    try:
        latents = i2v_latents(models, run, loras=lora)
        passes = models.passes
        frames = decoded(models, latents)
        reference_pipe = WanImageToVideoPipeline(  # on the same LoRA-patched transformer
            tokenizer=models.tokenizer, text_encoder=models.text_encoder, vae=models.vae,
            scheduler=publisher_scheduler(), image_processor=models.image_processor,
            image_encoder=models.image_encoder, transformer=models.transformer)
        reference = reference_pipe(image=picture, num_frames=FRAMES, prompt=run.prompt, height=HEIGHT, width=WIDTH,
                                   num_inference_steps=4, guidance_scale=1.0,
                                   generator=torch.Generator().manual_seed(11), output_type="np").frames[0]
        assert reference_pipe.scheduler.sigmas.tolist() == pytest.approx(PUBLISHER_SIGMAS, abs=1e-6)
    finally:
        with models.configured(loras=()):
            pass
    assert (passes.passes, passes.skipped, passes.line()) == (4, 0, "4 transformer passes")
    assert reference.std() > 0.01 and np.abs(frames - reference).max() < TOLERANCE


@pytest.mark.parametrize("given,message", [
    (dict(guidance_scale=3.5), "preset='4step' samples with guidance 1.0, and guidance 3.5 was asked for"),
    (dict(steps=30), "preset='4step' samples with steps 4, and steps 30 was asked for"),
    (dict(sampler="unipc"), "preset='4step' samples with sampler 'euler', and sampler 'unipc' was asked for"),
    (dict(preset="8step"), "preset='8step' is not allowed: choose one of none, 4step"),
])
def test_settings_that_do_not_fit_a_preset_are_refused_naming_both(given, message):
    with pytest.raises(WanInputError, match=re.escape(message)):
        SamplingParams(prompt="x", **({"preset": "4step"} | given))


def diffusers_calibration(capsys) -> list[float]:
    """The ratios MagCache's calibrate mode printed (the conditional branch's list comes first)."""
    printed = capsys.readouterr().out
    return ast.literal_eval(re.findall(r"Calibration Complete.*?\n(\[.*?\])", printed)[0])


def test_fast_mode_calibrates_once_then_skips_as_diffusers_magcache_does(tiny_i2v, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANFLOW_CACHE", str(tmp_path))
    models, picture = tiny_i2v, random_pictures(1)[0]
    run = params("unipc")
    full = i2v_latents(models, run)
    assert models.passes.line() == f"{2 * STEPS} transformer passes"

    calibrating = i2v_latents(models, run, fast_mode=True)  # the first fast run of this schedule measures
    assert torch.equal(calibrating, full) and models.passes.skipped == 0
    assert "calibrating" in models.passes.line()
    stored = list((tmp_path / "magcache").glob("*.json"))
    assert len(stored) == 1
    ours = json.loads(stored[0].read_text())["ratios"]

    reference_pipe = reference_i2v_pipeline(models, "unipc")
    reference_pipe.set_progress_bar_config(disable=True)
    capsys.readouterr()
    models.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    try:
        reference_pipe(image=picture, num_frames=FRAMES, **reference_kwargs(run))
    finally:
        models.transformer.disable_cache()
    assert ours == pytest.approx(diffusers_calibration(capsys), abs=1e-5)

    fast = i2v_latents(models, run, fast_mode=True)
    skipped, line = models.passes.skipped, models.passes.line()
    config = MagCacheConfig(mag_ratios=ours, num_inference_steps=STEPS, **magcache.FAST_MODE)
    computed = []
    handle = last_block_count(models.transformer, computed)
    models.transformer.enable_cache(config)
    try:
        reference = reference_pipe(image=picture, num_frames=FRAMES, **reference_kwargs(run)).frames[0]
    finally:
        models.transformer.disable_cache()
        handle.remove()
    assert skipped == 2 * STEPS - len(computed) > 0
    assert line == f"{2 * STEPS} transformer passes, {skipped} skipped by fast mode"
    frames = decoded(models, fast)
    assert np.abs(frames - reference).max() < TOLERANCE
    assert np.abs(frames - decoded(models, full)).max() > 2 * TOLERANCE  # skipping changed the video


def test_fast_mode_and_the_step_cache_are_one_at_a_time(tiny_t2v):
    with pytest.raises(WanInputError, match=r"fast_mode=True and step_cache=0\.05 are two step caches"):
        with tiny_t2v.configured(fast_mode=True, step_cache=0.05):
            pass


def meta_transformer(dim: int, layers: int, in_channels: int):
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(num_attention_heads=dim // 128, attention_head_dim=128, in_channels=in_channels,
                                     out_channels=16, num_layers=layers, ffn_dim=8, text_dim=8, freq_dim=256,
                                     image_dim=8 if in_channels == 36 else None)


def test_published_wan21_ratios_are_picked_by_shape_and_size_and_interpolated_as_magcache_does():
    i2v, t2v_14b, t2v_small = meta_transformer(5120, 40, 36), meta_transformer(5120, 40, 16), meta_transformer(1536, 30, 16)
    assert magcache.published_table(i2v, 832, 480) == "i2v_14b_480p"
    assert magcache.published_table(i2v, 1280, 720) == "i2v_14b_720p"
    assert magcache.published_table(t2v_14b, 1280, 720) == "t2v_14b"
    assert magcache.published_table(t2v_small, 832, 480) == "t2v_1.3b"
    assert magcache.published_table(meta_transformer(256, 2, 36), 832, 480) is None  # the tiny model: calibrated
    # MagCache4Wan2.1/magcache_generate.py L1002: [1.0]*2 + [0.98783, 0.98993, 0.97559, 0.97593, ...]; cond = even
    ratios = magcache.published_ratios("i2v_14b_480p")
    assert len(ratios) == 40 and ratios[:3] == [1.0, 0.98783, 0.97559]
    assert [len(magcache.published_ratios(name)) for name in ("i2v_14b_720p", "t2v_14b", "t2v_1.3b")] == [40, 50, 50]
    # MagCache's nearest_interp to 30 steps: index round(i * 39 / 29)
    config = magcache.mag_cache_config(ratios, 30)
    assert config.mag_ratios.tolist() == pytest.approx([ratios[round(i * 39 / 29)] for i in range(30)])
