"""Shared fixtures: the tiny Wan 2.1 model written once per test session into a temporary cache, and the trained
mini model shipped in the repository."""

import os

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A WANFLOW_CACHE folder holding the tiny model files; subprocesses inherit it through the environment."""
    from wan_core.tiny import tiny_model_paths

    cache = tmp_path_factory.mktemp("wanflow-cache")
    os.environ["WANFLOW_CACHE"] = str(cache)
    tiny_model_paths(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_paths(tiny_cache):
    from wan_core.tiny import tiny_model_paths

    return tiny_model_paths(tiny_cache)


@pytest.fixture(scope="session")
def tiny_i2v(tiny_paths):
    from wan_core.sampling.models import load_models

    return load_models(tiny_paths["i2v"], tiny_paths["vae"], tiny_paths["text_encoder"], tiny_paths["clip_vision"])


@pytest.fixture(scope="session")
def tiny_t2v(tiny_paths):
    from wan_core.sampling.models import load_models

    return load_models(tiny_paths["t2v"], tiny_paths["vae"], tiny_paths["text_encoder"])


@pytest.fixture(scope="session")
def mini_i2v():
    """The trained mini image-to-video model shipped in wan_core/builtin/mini, loaded once (fp32, CPU)."""
    from wan_core.builtin.mini import load_mini

    return load_mini()


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI with this pack, the tiny model and LoRA in its folders, example inputs, latent previews on,
    and the WaveSpeedAI stand-in as its provider (comfy.standin)."""
    from comfyui_server import start_test_server

    with start_test_server(tmp_path_factory.mktemp("comfyui")) as server:
        yield server
