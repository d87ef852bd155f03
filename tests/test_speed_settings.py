"""Model speed settings (WanModels.configured(attention=, compile=)): the attention backend through diffusers'
dispatcher, and compiled transformer blocks, on the tiny model against the same model in its default state."""

import importlib.util

import pytest
import torch
from diffusers.models.attention_dispatch import attention_backend
from helpers import i2v_latents, params

from wan_core.errors import WanInputError
from wan_core.sampling.models import load_models
from wan_core.sampling.speed import ATTENTION, check_model_speed

COMPILE_TOLERANCE = 1e-4  # inductor fuses and reorders float32 arithmetic; eager vs compiled differ by ~1e-5 here
FLEX_TOLERANCE = 1e-4  # another attention kernel, same maths: ~1e-5 apart after 5 steps on latents of magnitude ~10
GPU_ONLY = {"flash": "flash_attn", "flash3": "flash_attn_interface", "sage": "sageattention", "xformers": "xformers"}


@pytest.fixture(scope="module")
def models(tiny_paths):
    """This module's own tiny I2V model: compiling and switching backends must not reach other tests' models."""
    return load_models(tiny_paths["i2v"], tiny_paths["vae"], tiny_paths["text_encoder"], tiny_paths["clip_vision"])


@pytest.fixture
def default_latents(models):
    return i2v(models, attention="auto", compile=False)


def i2v(models, **settings) -> torch.Tensor:
    return i2v_latents(models, params("unipc"), **settings)


def test_sdpa_and_auto_give_the_default_video(models, default_latents):
    assert models.attention == "auto"
    assert (i2v(models, attention="sdpa") - default_latents).abs().max() <= 1e-6
    assert models.attention == "sdpa"  # it stays on the model for the next run
    assert (i2v(models) - default_latents).abs().max() <= 1e-6
    assert (i2v(models, attention="auto") - default_latents).abs().max() <= 1e-6
    assert models.attention == "auto"


def test_auto_follows_diffusers_default_and_sdpa_pins_sdpa(models, default_latents):
    """Under another process-wide default (flex attention, which runs on the CPU), "auto" follows it and "sdpa"
    does not: the dispatcher really takes the processors' backend."""
    with attention_backend("flex"):
        flex = i2v(models)
        pinned = i2v(models, attention="sdpa")
    i2v(models, attention="auto")
    assert torch.equal(pinned, default_latents)
    assert 0 < (flex - default_latents).abs().max() < FLEX_TOLERANCE


@pytest.mark.parametrize("attention", GPU_ONLY)
def test_a_gpu_kernel_on_the_cpu_is_refused_before_anything_changes(models, attention):
    message = rf"^attention='{attention}' needs a CUDA GPU, and this runs on cpu: choose 'auto' or 'sdpa'$"
    with pytest.raises(WanInputError, match=message):
        check_model_speed(attention, False, "cpu", torch.bfloat16)
    with pytest.raises(WanInputError, match=message):
        with models.configured(attention=attention):
            pass
    assert models.attention == "auto"  # refused before anything changed


@pytest.mark.parametrize("attention", GPU_ONLY)
def test_a_kernel_package_is_required_and_named(attention):
    if importlib.util.find_spec(GPU_ONLY[attention]):  # installed here: its CUDA check is the only one left
        check_model_speed(attention, False, "cuda", torch.float16)
        return
    with pytest.raises(WanInputError, match=rf"^attention='{attention}' is not available: .*(install|build)"):
        check_model_speed(attention, False, "cuda", torch.float16)


@pytest.mark.parametrize("attention", [name for name, backend in ATTENTION.items() if backend.half_only])
def test_a_half_precision_kernel_refuses_float32(attention):
    with pytest.raises(WanInputError, match=rf"^attention='{attention}' computes in bf16 or fp16 only, not float32"):
        check_model_speed(attention, False, "cuda:0", torch.float32)


@pytest.mark.parametrize("attention,compile,message", [
    ("fast", False, "attention='fast' is not allowed: choose one of auto, sdpa, flash, flash3, sage, xformers"),
    ("auto", "yes", "compile='yes' is not allowed: choose True or False"),
])
def test_unknown_settings_are_refused(attention, compile, message):
    with pytest.raises(WanInputError, match=f"^{message}$"):
        check_model_speed(attention, compile, "cpu", torch.float32)


def test_compiled_blocks_match_eager_and_compile_once(models, default_latents):
    torch.compiler.reset()  # as in a fresh process: graphs compiled by earlier tests (the CLI's) are not reused
    traced = []  # a hook inside a block runs eagerly on every pass, but while compiling only once per trace
    hook = models.transformer.blocks[0].attn1.register_forward_pre_hook(
        lambda *_: traced.append(torch.compiler.is_compiling()))
    try:
        first = i2v(models, compile=True)
        compilations = sum(traced)
        assert models.compiled and compilations > 0
        assert (first - default_latents).abs().max() < COMPILE_TOLERANCE

        traced.clear()
        assert torch.equal(i2v(models, compile=True), first)  # as every ComfyUI run asks again
        assert not any(traced)  # the second run did not compile again
    finally:
        i2v(models, compile=False)
        hook.remove()
    assert not models.compiled
    assert torch.equal(i2v(models), default_latents)  # back to eager blocks
