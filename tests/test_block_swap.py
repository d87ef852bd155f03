"""Block swap (offload "blocks", speed.enable_block_swap): diffusers' block-level group offloading on the
transformer. The CPU has no second device and no CUDA streams, so here the onload and offload device are both
the CPU: the hooks, groups and calls are the ones a GPU run uses, the copies are no-ops, and the latents must be
bit-identical to the same model without them, with fp8 storage, a LoRA stack and resident blocks as well. The GPU
figures (peak VRAM, seconds per step) come from bench/bench_speed.py."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from helpers import diffusers_hooks, i2v_latents, params

from wan_core.cli.main import main as cli_main
from wan_core.errors import WanInputError
from wan_core.files.loading import load_transformer_with_sources, read_transformer_config
from wan_core.lora.stack import LoraEntry
from wan_core.sampling.models import load_models, model_offload
from wan_core.sampling.speed import block_swap_resident_bytes, enable_block_swap
from wan_core.tiny import write_tiny_lora

IMAGE = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"


def file_models(tiny_paths, like, weight_storage=None, block_swap=False, resident_blocks=0):
    """tiny_i2v with a transformer of its own read from the same file (sources recorded, as load_models does)."""
    transformer, sources = load_transformer_with_sources(tiny_paths["i2v"], torch.float32, weight_storage)
    if block_swap:
        enable_block_swap(transformer, "cpu", resident_blocks)
    models = replace(like, transformer=transformer, offload="blocks" if block_swap else "none",
                     resident_blocks=resident_blocks)
    models.lora.sources = sources
    return models


@pytest.mark.parametrize("resident_blocks", [0, 1, 2])
def test_each_swapped_block_is_its_own_offloaded_group_and_resident_blocks_have_no_hooks(tiny_paths, tiny_i2v,
                                                                                         resident_blocks):
    models = file_models(tiny_paths, tiny_i2v, block_swap=True, resident_blocks=resident_blocks)
    hooks = diffusers_hooks(models.transformer)
    offloaded = [index for index in range(len(models.transformer.blocks))
                 if "group_offloading" in hooks.get(f"blocks.{index}", [])]
    assert offloaded == list(range(resident_blocks, len(models.transformer.blocks)))
    assert "group_offloading" in hooks[""]  # the layers outside the blocks move at each transformer call
    assert not any("group_offloading" in names for name, names in hooks.items()  # nothing inside a resident block
                   if any(name.startswith(f"blocks.{index}.") for index in range(resident_blocks)))


@pytest.mark.parametrize("weight_storage,resident_blocks", [(None, 0), ("fp8", 0), (None, 1), ("fp8", 1), (None, 2)])
def test_latents_are_bit_identical_with_and_without_block_swap(tiny_paths, tiny_i2v, weight_storage, resident_blocks):
    plain = file_models(tiny_paths, tiny_i2v, weight_storage)
    swapped = file_models(tiny_paths, tiny_i2v, weight_storage, block_swap=True, resident_blocks=resident_blocks)
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


def test_the_resident_blocks_move_with_the_transformers_stage_and_the_others_wait_for_their_hooks(tiny_paths,
                                                                                                  tiny_i2v):
    """The sampling stage's placement (model_offload, as for --offload blocks on a GPU), with the meta device
    standing in for the GPU: a move there keeps shapes and drops the data, which is enough to see what moved."""
    models = replace(file_models(tiny_paths, tiny_i2v, block_swap=True, resident_blocks=1), placement=model_offload,
                     device=torch.device("meta"))
    models.use("transformer")
    devices = {name: param.device.type for name, param in models.transformer.named_parameters()}
    assert {name for name, device in devices.items() if device == "meta"} == \
        {name for name in devices if name.startswith("blocks.0.")}


def size(module):
    return sum(tensor.numel() * tensor.element_size() for tensor in [*module.parameters(), *module.buffers()])


def test_the_resident_size_is_the_layers_outside_the_blocks_and_two_blocks(tiny_i2v):
    transformer = tiny_i2v.transformer
    block = size(transformer.blocks[0])
    outside = size(transformer) - len(transformer.blocks) * block  # the tiny model's blocks are all alike
    assert block_swap_resident_bytes(transformer) == outside + 2 * block


def test_each_resident_block_adds_its_size_until_no_block_is_left_to_swap(tiny_paths):
    """Six blocks of the tiny model's shape (on the meta device: sizes without memory). The swapped blocks in flight
    stay two while two are left to swap; with every block resident the whole transformer counts."""
    with torch.device("meta"):
        transformer = WanTransformer3DModel(**(read_transformer_config(tiny_paths["i2v"]) | {"num_layers": 6}))
    block, none_resident = size(transformer.blocks[0]), block_swap_resident_bytes(transformer)
    for resident_blocks in range(5):
        assert block_swap_resident_bytes(transformer, resident_blocks) == none_resident + resident_blocks * block
    assert block_swap_resident_bytes(transformer, 6) == size(transformer)


def test_a_resident_block_count_out_of_range_is_refused_naming_the_value_and_the_range(tiny_paths, tiny_i2v):
    transformer = load_transformer_with_sources(tiny_paths["i2v"])[0]
    with pytest.raises(WanInputError, match="resident_blocks=3 is more than the diffusion model's 2 blocks: "
                                            "choose 0 to 2"):
        enable_block_swap(transformer, "cpu", 3)
    with pytest.raises(WanInputError, match="resident_blocks=-1 is not allowed: choose a whole number from 0"):
        enable_block_swap(transformer, "cpu", -1)
    assert diffusers_hooks(transformer) == {}  # refused before any hook
    with pytest.raises(WanInputError, match="resident_blocks=1 applies to offload='blocks' only, and offload is "
                                            "'none'"):
        load_models(tiny_paths["i2v"], tiny_paths["vae"], tiny_paths["text_encoder"], resident_blocks=1)


@pytest.mark.parametrize("options,message", [
    (["--offload", "blocks", "--resident-blocks", "3"], "resident_blocks=3 is more than the diffusion model's 2 "
                                                        "blocks: choose 0 to 2"),
    (["--offload", "blocks", "--resident-blocks", "-2"], "resident_blocks=-2 is not allowed"),
    (["--resident-blocks", "1"], "resident_blocks=1 applies to offload='blocks' only"),
])
def test_the_command_line_refuses_a_bad_resident_block_count_before_loading(tiny_cache, tmp_path, capsys, options,
                                                                            message):
    """--device cuda passes the device checks on this CPU machine and fails at the first model load: the message
    seen is the resident block check's, which runs before it."""
    argv = ["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "x", "--device", "cuda", "--out",
            str(tmp_path / "o.mp4"), *options]
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("resident_blocks", [0, 1])
def test_compiled_blocks_run_with_block_swap(tiny_paths, tiny_i2v, resident_blocks):
    """torch.compile on each block traces through the group offloading hook around it (and, for a resident block,
    through none); inductor reorders float32 arithmetic, so compiled and eager agree to the tolerance
    tests/test_speed_settings.py uses, not bit for bit."""
    torch.compiler.reset()
    swapped = file_models(tiny_paths, tiny_i2v, block_swap=True, resident_blocks=resident_blocks)
    run = params("euler")
    compiled = i2v_latents(swapped, run, compile=True)
    assert (compiled - i2v_latents(file_models(tiny_paths, tiny_i2v), run)).abs().max() < 1e-4
