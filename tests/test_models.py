"""WanModels.configured, the one owner of a loaded model's per-run state: what one run sets never reaches the next
unless that run names it, and a failure or an interrupt leaves a known state."""

import pytest
import torch

from wan_core.errors import WanInputError
from wan_core.lora.stack import LoraEntry
from wan_core.sampling import conditioning, pipeline
from wan_core.sampling.params import SamplingParams
from wan_core.tiny import write_tiny_lora

WIDE = dict(width=320, height=64)  # wider than the tiny VAE's 256 px tile: tiling changes its encode and decode


def wide_i2v(models) -> torch.Tensor:
    image = torch.linspace(0, 1, 64 * 320 * 3).reshape(1, 64, 320, 3)
    run = SamplingParams(prompt="a wide valley", num_frames=5, steps=2, seed=3, sampler="euler", **WIDE)
    with models.configured():
        return pipeline.generate_i2v(models, image, run).latents


def test_a_tiled_decode_does_not_change_the_next_run(tiny_i2v):
    models = tiny_i2v
    before = wide_i2v(models)
    with models.configured(vae_tiling=True):
        tiled = conditioning.decode_latents(models, before)
        tiled_encode = conditioning.encode_frames(models, tiled[:5])
    untiled_encode = conditioning.encode_frames(models, tiled[:5])
    assert not torch.equal(tiled_encode, untiled_encode)  # at this size tiling really changes the VAE's output
    assert not models.vae.use_tiling
    assert torch.equal(wide_i2v(models), before)  # bit-identical after a tiled decode on the same model


def test_per_run_state_is_switched_off_after_an_exception(tiny_i2v):
    with pytest.raises(KeyboardInterrupt):
        with tiny_i2v.configured(step_cache=0.5, vae_tiling=True):
            assert tiny_i2v.transformer.is_cache_enabled and tiny_i2v.vae.use_tiling
            raise KeyboardInterrupt
    assert not tiny_i2v.transformer.is_cache_enabled and not tiny_i2v.vae.use_tiling


def test_bad_settings_are_refused_before_anything_changes(tiny_t2v, tmp_path):
    lora = (LoraEntry(str(write_tiny_lora(tmp_path / "t2v.safetensors", "t2v")), 1.0),)
    base = {name: param.clone() for name, param in tiny_t2v.transformer.named_parameters()}
    for settings, message in [(dict(step_cache=2.0), "step_cache=2.0 is out of range"),
                              (dict(vae_tiling="yes"), "vae_tiling='yes' is not allowed"),
                              (dict(attention="flash"), "attention='flash' needs a CUDA GPU")]:
        with pytest.raises(WanInputError, match=message):
            with tiny_t2v.configured(loras=lora, **settings):
                pass
    assert tiny_t2v.lora.signature == ()
    assert all(torch.equal(param, base[name]) for name, param in tiny_t2v.transformer.named_parameters())


def test_an_interrupt_while_patching_leaves_the_base_weights(tiny_t2v, tmp_path, monkeypatch):
    """An interrupt arrives while the weights are written (here: after the first of them); the owner then holds
    the base weights and knows it, and the same stack applies fully on the next run."""
    models = tiny_t2v
    lora = (LoraEntry(str(write_tiny_lora(tmp_path / "t2v.safetensors", "t2v")), 1.0),)
    base = {name: param.clone() for name, param in models.transformer.named_parameters()}
    with models.configured(loras=lora):
        patched = {name: param.clone() for name, param in models.transformer.named_parameters()}
    with models.configured(loras=()):
        pass

    writes = []
    original_copy = torch.Tensor.copy_

    def interrupted_copy(tensor, source, *args, **kwargs):
        writes.append(1)
        if len(writes) == 2:  # once: putting the base weights back copies too
            raise KeyboardInterrupt
        return original_copy(tensor, source, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        with models.configured(loras=lora):
            pass
    monkeypatch.undo()
    assert writes and models.lora.signature == () and not models.lora.backups
    assert all(torch.equal(param, base[name]) for name, param in models.transformer.named_parameters())
    with models.configured(loras=lora):
        assert all(torch.equal(param, patched[name]) for name, param in models.transformer.named_parameters())
    with models.configured(loras=()):
        pass


def test_one_run_at_a_time(tiny_t2v):
    with tiny_t2v.configured():
        with pytest.raises(RuntimeError, match="already active"):
            with tiny_t2v.configured():
                pass
