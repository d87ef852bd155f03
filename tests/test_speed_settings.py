"""Model speed settings (speed.apply_model_speed): the attention backend through diffusers' dispatcher, and compiled
transformer blocks, on the tiny model against the same model in its default state."""

import importlib.util

import pytest
import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, attention_backend
from test_parity import params, random_pictures
from torch._dynamo.utils import counters

from wan_core.sampling import pipeline
from wan_core.errors import WanInputError
from wan_core.files.loading import load_models
from wan_core.sampling.speed import ATTENTION, apply_model_speed, check_model_speed
from wan_core.video_io import pil_to_frame

COMPILE_TOLERANCE = 1e-4  # inductor fuses and reorders float32 arithmetic; eager vs compiled differ by ~1e-5 here
FLEX_TOLERANCE = 1e-4  # another attention kernel, same maths: ~1e-5 apart after 5 steps on latents of magnitude ~10
GPU_ONLY = {"flash": "flash_attn", "flash3": "flash_attn_interface", "sage": "sageattention", "xformers": "xformers"}


@pytest.fixture(scope="module")
def models(tiny_paths):
    """This module's own tiny I2V model: compiling and switching backends must not reach other tests' models."""
    return load_models(tiny_paths["i2v"], tiny_paths["vae"], tiny_paths["text_encoder"], tiny_paths["clip_vision"])


@pytest.fixture
def default_latents(models):
    apply_model_speed(models.transformer)
    return i2v(models)


def i2v(models) -> torch.Tensor:
    return pipeline.generate_i2v(models, pil_to_frame(random_pictures(1)[0])[None], params("unipc")).latents


def backends(models) -> set:
    """The backend each attention processor hands diffusers' dispatcher (None: the dispatcher's default)."""
    return {processor._attention_backend for processor in models.transformer.attn_processors.values()}


def test_sdpa_and_auto_give_the_default_video(models, default_latents):
    process_default = _AttentionBackendRegistry.get_active_backend()[0]
    assert backends(models) == {None}
    apply_model_speed(models.transformer, "sdpa")
    assert backends(models) == {AttentionBackendName.NATIVE}
    assert _AttentionBackendRegistry.get_active_backend()[0] == process_default  # the choice stayed on this model
    assert (i2v(models) - default_latents).abs().max() <= 1e-6
    apply_model_speed(models.transformer, "auto")
    assert backends(models) == {None}
    assert (i2v(models) - default_latents).abs().max() <= 1e-6


def test_auto_follows_diffusers_default_and_sdpa_pins_sdpa(models, default_latents):
    """Under another process-wide default (flex attention, which runs on the CPU), "auto" follows it and "sdpa"
    does not: the dispatcher really takes the processors' backend."""
    with attention_backend("flex"):
        flex = i2v(models)
        apply_model_speed(models.transformer, "sdpa")
        pinned = i2v(models)
    apply_model_speed(models.transformer, "auto")
    assert torch.equal(pinned, default_latents)
    assert 0 < (flex - default_latents).abs().max() < FLEX_TOLERANCE


@pytest.mark.parametrize("attention", GPU_ONLY)
def test_a_gpu_kernel_on_the_cpu_is_refused_before_loading(tiny_paths, tmp_path, attention):
    message = rf"^attention='{attention}' needs a CUDA GPU, and this runs on cpu: choose 'auto' or 'sdpa'$"
    with pytest.raises(WanInputError, match=message):
        check_model_speed(attention, False, "cpu", torch.bfloat16)
    with pytest.raises(WanInputError, match=message):  # said before any file is opened: these do not exist
        load_models(tmp_path / "no_model", tmp_path / "no_vae", tmp_path / "no_t5", attention=attention)


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
    blocks = list(models.transformer.blocks)
    torch._dynamo.reset()  # as in a fresh process: graphs compiled by earlier tests (the CLI's) are not reused
    graphs = counters["stats"]["unique_graphs"]
    apply_model_speed(models.transformer, "auto", compile=True)
    try:
        compiled_calls = [block._compiled_call_impl for block in blocks]
        assert all(compiled_calls)
        first = i2v(models)
        compiled_graphs = counters["stats"]["unique_graphs"]
        assert compiled_graphs > graphs
        assert (first - default_latents).abs().max() < COMPILE_TOLERANCE

        apply_model_speed(models.transformer, "auto", compile=True)  # as every ComfyUI run does
        assert [block._compiled_call_impl for block in blocks] == compiled_calls  # not compiled again
        assert torch.equal(i2v(models), first)
        assert counters["stats"]["unique_graphs"] == compiled_graphs  # the second run did not recompile
    finally:
        apply_model_speed(models.transformer, "auto", compile=False)
    assert all(block._compiled_call_impl is None for block in blocks)
    assert torch.equal(i2v(models), default_latents)  # back to eager blocks
