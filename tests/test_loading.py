"""Model files -> modules: architecture from shapes, and mixed-up or broken files named before sampling."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from wan_core.errors import WanInputError
from wan_core.files.loading import load_transformer, load_vae
from wan_core.sampling.models import load_models
from wan_core.tiny import tiny_transformer


def test_architecture_is_read_from_shapes(tiny_i2v, tiny_t2v):
    i2v, t2v = tiny_i2v.transformer.config, tiny_t2v.transformer.config
    assert (i2v.in_channels, i2v.image_dim, i2v.num_attention_heads, i2v.num_layers) == (36, 64, 2, 2)
    assert (t2v.in_channels, t2v.image_dim) == (16, None)
    assert tiny_i2v.is_i2v and not tiny_t2v.is_i2v
    assert tiny_t2v.image_encoder is None


def test_loaded_weights_equal_the_module_that_was_written(tiny_paths):
    loaded = load_transformer(tiny_paths["i2v"]).state_dict()
    original = tiny_transformer(image_to_video=True).state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[key], original[key]) for key in original)


def test_comfy_prefix_and_diffusers_layout_load_the_same_model(tiny_paths, tmp_path):
    state = load_file(tiny_paths["i2v"])
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({"model.diffusion_model." + key: value for key, value in state.items()}, str(prefixed))
    diffusers_layout = tmp_path / "diffusers.safetensors"
    save_file(tiny_transformer(image_to_video=True).state_dict(), str(diffusers_layout))
    reference = load_transformer(tiny_paths["i2v"]).state_dict()
    for path in (prefixed, diffusers_layout):
        loaded = load_transformer(path).state_dict()
        assert all(torch.equal(loaded[key], reference[key]) for key in reference)


def test_half_precision_keeps_the_fp32_modules(tiny_paths):
    model = load_transformer(tiny_paths["t2v"], dtype=torch.bfloat16)
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.scale_shift_table.dtype == torch.float32


def test_a_vae_in_the_diffusion_model_slot_is_named(tiny_paths):
    with pytest.raises(WanInputError, match=r"diffusion model file .*wan2.1_tiny_vae.* is a Wan VAE, not a Wan diffusion model"):
        load_transformer(tiny_paths["vae"])
    with pytest.raises(WanInputError, match="is a Wan diffusion model, not a Wan VAE"):
        load_vae(tiny_paths["t2v"])


def test_not_safetensors_and_truncated_files_are_named(tiny_paths, tmp_path):
    text = tmp_path / "model.safetensors"
    text.write_text("not a checkpoint")
    with pytest.raises(WanInputError, match="is not a readable safetensors file"):
        load_transformer(text)
    truncated = tmp_path / "truncated.safetensors"
    data = tiny_paths["t2v"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WanInputError, match="truncated.safetensors"):
        load_transformer(truncated)


def test_a_t2v_model_cannot_do_image_to_video(tiny_t2v):
    from wan_core.sampling.params import SamplingParams
    from wan_core.sampling.pipeline import generate_i2v

    with pytest.raises(WanInputError, match="text-to-video model .* needs an I2V model"):
        generate_i2v(tiny_t2v, torch.rand(1, 64, 64, 3), SamplingParams(prompt="x", width=64, height=64, num_frames=5))


def test_mismatched_text_encoder_is_named(tiny_paths, tmp_path):
    state = load_file(tiny_paths["text_encoder"])
    wide = {key: torch.zeros(*(96 if size == 64 else size for size in value.shape), dtype=value.dtype)
            if value.is_floating_point() else value for key, value in state.items()}
    path = tmp_path / "umt5_wide.safetensors"
    save_file(wide, str(path))
    with pytest.raises(WanInputError, match="text encoder width 96 does not match the diffusion model's text width 64"):
        load_models(tiny_paths["t2v"], tiny_paths["vae"], path)
    lazy = load_models(tiny_paths["t2v"], tiny_paths["vae"], path, lazy_text_encoder=True)  # read on first use
    with pytest.raises(WanInputError, match="text encoder width 96 does not match the diffusion model's text width 64"):
        lazy.use("text_encoder")


def test_loading_changes_nothing_on_disk(tiny_paths, tmp_path):
    copy = tmp_path / "model.safetensors"
    shutil.copy(tiny_paths["t2v"], copy)
    before = (copy.read_bytes(), copy.stat().st_mtime_ns)
    load_transformer(copy)
    assert (copy.read_bytes(), copy.stat().st_mtime_ns) == before
