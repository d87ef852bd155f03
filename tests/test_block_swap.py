"""Block swap (offload "blocks", speed.enable_block_swap): diffusers' block-level group offloading on the
transformer. The CPU has no second device and no CUDA streams, so here the onload and offload device are both
the CPU: the hooks, groups and calls are the ones a GPU run uses, the copies are no-ops, and the latents must be
bit-identical to the same model without them, with fp8 storage and a LoRA stack as well. The GPU figures (peak
VRAM, seconds per step) come from bench/bench_speed.py."""

from dataclasses import replace

import pytest
import torch
from helpers import diffusers_hooks, i2v_latents, params

from wan_core.errors import WanInputError
from wan_core.files.loading import load_transformer_with_sources
from wan_core.lora.stack import LoraEntry
from wan_core.sampling.speed import block_swap_resident_bytes, enable_block_swap
from wan_core.tiny import write_tiny_lora


def file_models(tiny_paths, like, weight_storage=None, block_swap=False):
    """tiny_i2v with a transformer of its own read from the same file (sources recorded, as load_models does)."""
    transformer, sources = load_transformer_with_sources(tiny_paths["i2v"], torch.float32, weight_storage)
    if block_swap:
        enable_block_swap(transformer, "cpu")
    models = replace(like, transformer=transformer, offload="blocks" if block_swap else "none")
    models.lora.sources = sources
    return models


def test_every_block_is_its_own_offloaded_group(tiny_paths, tiny_i2v):
    models = file_models(tiny_paths, tiny_i2v, block_swap=True)
    hooks = diffusers_hooks(models.transformer)
    assert all("group_offloading" in hooks[f"blocks.{index}"] for index in range(len(models.transformer.blocks)))
    assert "group_offloading" in hooks[""]  # the layers outside the blocks move at each transformer call


@pytest.mark.parametrize("weight_storage", [None, "fp8"])
def test_latents_are_bit_identical_with_and_without_block_swap(tiny_paths, tiny_i2v, weight_storage):
    plain = file_models(tiny_paths, tiny_i2v, weight_storage)
    swapped = file_models(tiny_paths, tiny_i2v, weight_storage, block_swap=True)
    run = params("unipc")
    assert torch.equal(i2v_latents(swapped, run), i2v_latents(plain, run))


def test_a_lora_stack_patches_the_offloaded_weights_and_restores_them(tiny_paths, tiny_i2v, tmp_path):
    lora = (LoraEntry(str(write_tiny_lora(tmp_path / "lora.safetensors", "i2v", seed=3)), 0.8),)
    plain = file_models(tiny_paths, tiny_i2v)
    swapped = file_models(tiny_paths, tiny_i2v, block_swap=True)
    base = {name: param.clone() for name, param in swapped.transformer.named_parameters()}
    run = params("euler")
    assert torch.equal(i2v_latents(swapped, run, loras=lora), i2v_latents(plain, run, loras=lora))
    i2v_latents(swapped, run, loras=())
    assert all(torch.equal(param, base[name]) for name, param in swapped.transformer.named_parameters())


def test_the_step_cache_is_refused_with_block_swap(tiny_paths, tiny_i2v):
    swapped = file_models(tiny_paths, tiny_i2v, block_swap=True)
    with pytest.raises(WanInputError, match="step_cache=0.1 cannot run with offload='blocks'"):
        i2v_latents(swapped, params("euler"), step_cache=0.1)


def test_the_resident_size_is_the_layers_outside_the_blocks_and_two_blocks(tiny_i2v):
    transformer = tiny_i2v.transformer

    def size(module):
        return sum(tensor.numel() * tensor.element_size() for tensor in [*module.parameters(), *module.buffers()])
    block = size(transformer.blocks[0])
    outside = size(transformer) - len(transformer.blocks) * block  # the tiny model's blocks are all alike
    assert block_swap_resident_bytes(transformer) == outside + 2 * block


def test_compiled_blocks_run_with_block_swap(tiny_paths, tiny_i2v):
    """torch.compile on each block traces through the group offloading hook around it; inductor reorders float32
    arithmetic, so compiled and eager agree to the tolerance tests/test_speed_settings.py uses, not bit for bit."""
    torch.compiler.reset()
    swapped = file_models(tiny_paths, tiny_i2v, block_swap=True)
    run = params("euler")
    compiled = i2v_latents(swapped, run, compile=True)
    assert (compiled - i2v_latents(file_models(tiny_paths, tiny_i2v), run)).abs().max() < 1e-4
