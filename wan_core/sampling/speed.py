"""Speed settings: how diffusers' and PyTorch's speed features are checked and switched on.

Which setting is on is decided in one place, WanModels.configured (models.py), which calls the switches below and
knows what is on. Two kinds of setting. Model settings (attention backend, compiled blocks) belong to a loaded
transformer and stay on it from run to run; per-generation settings (the step cache) are on for one generation
only. Beside them, model offload (its paragraph below) decides where the networks wait between stages; fp8 weight
storage is decided when the weights are read (precision.py).

Attention backend: diffusers' attention dispatcher (`ModelMixin.set_attention_backend`), under our short names
(ATTENTION below). "auto" is diffusers' default: PyTorch's scaled_dot_product_attention, which itself picks the
flash, memory-efficient or cuDNN kernel on a GPU. The others are dedicated kernels; each needs its package, a CUDA
GPU, and (but xformers) a bf16 or fp16 compute dtype, which check_model_speed says before any weights are read.

Compiled blocks: `ModelMixin.compile_repeated_blocks`, torch.compile on each WanTransformerBlock (regional
compilation): the blocks share one compiled graph, so compiling costs one block's time, not the whole model's.
Compilation happens on the first run (and again only when shapes, device, dtype or the attention backend change);
later runs reuse it. compile=False on a compiled model returns its blocks to eager mode.

Fast mode: diffusers' MagCache with Wan 2.1's calibrated ratios (magcache.py), for one sampling loop.

Step cache (the expert knob): diffusers' First Block Cache (`FirstBlockCacheConfig`, `WanTransformer3DModel.enable_cache`).
Each transformer pass runs its first block; when that block's output residual differs from the one of the last full
pass by less than `threshold` (mean absolute difference relative to that residual's mean magnitude), the remaining
blocks are skipped and their residual from the last full pass is added instead. 0 turns it off; diffusers' own
default is 0.05. The conditional and unconditional passes each keep their own cache (`cache_branch`), as
diffusers' Wan I2V pipeline does.

The cache is on for one generation only: a model kept loaded (ComfyUI's cache) carries no hooks or cached residuals
between runs, whatever the next run asks for, and an interrupted run leaves none either. Its hooks sit on the
transformer blocks, so they stack with fp8 storage's layerwise casting hooks (on the Linear and Conv layers inside
them) and see LoRA patches, which are written into the weights themselves.

Model offload: with offload "model" every network waits on the CPU and only the networks of the running stage are
on the GPU (WanModels.use): Wan 14B in fp8 (~14 GB), UMT5-XXL (~11 GB in bf16), CLIP-H and the VAE sum to ~27 GB,
more than a 24 GB GPU, while the largest stage, sampling, needs the transformer alone.

Block swap: with offload "blocks" the other networks move per stage as with "model", and the transformer itself
never moves as a whole: diffusers' block-level group offloading (`ModelMixin.enable_group_offload`,
offload_type="block_level", one block per group, use_stream=True) keeps its blocks in pinned CPU memory and copies
each to the GPU on a separate CUDA stream while the block before it computes, then drops it again; the layers
outside the blocks (embedders, head) move at each transformer call. GPU memory for the transformer is then about
two blocks plus those layers (block_swap_resident_bytes): 14B in bf16 (28 GB) or fp8 (14-16 GB) runs on a 12-16 GB
card, at the price of one PCIe transfer of the weights per transformer pass. A GPU with room to spare keeps the
first `resident_blocks` blocks resident instead: they carry no hooks and move with the transformer's stage
(WanModels.use: onto the GPU for sampling, off it for the other stages), so each pass copies only the others. The
first ones, because the transformer's call starts copying the first swapped block, which then overlaps with the
resident blocks' compute. (diffusers' own knob for it, num_blocks_per_group, is forced to 1 with streams, and
groups blocks rather than exempting any.) It stacks with fp8 storage (the layerwise casting hooks sit on the
layers inside the blocks, and the fp8 weights are what moves), with LoRA stacks (patched in place into the
CPU-side weights, which are what the hooks copy from), with every attention kernel, and with compiled blocks. The
step cache (First Block Cache) is refused with it: see check_block_swap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..adapters import attention_backend_problem, set_model_attention_backend, uncompile
from ..errors import WanInputError, check_choice

if TYPE_CHECKING:  # diffusers takes seconds to import; the command line reads the choices below without it
    from diffusers import WanTransformer3DModel


@dataclass(frozen=True)
class AttentionBackend:
    diffusers_name: str | None  # diffusers' AttentionBackendName value; None: its default
    cuda_only: bool = False  # a CUDA kernel with no CPU path
    half_only: bool = False  # kernels for bf16 / fp16 inputs only


# The one table of names: ours -> diffusers'. PyTorch's own attention, and the GPU kernels people run Wan with;
# diffusers' other backends (hub kernels, NPU, XLA, flex) are left out.
ATTENTION = {
    "auto": AttentionBackend(None),  # diffusers' default: PyTorch SDPA unless DIFFUSERS_ATTN_BACKEND says otherwise
    "sdpa": AttentionBackend("native"),  # PyTorch SDPA, whatever DIFFUSERS_ATTN_BACKEND says
    "flash": AttentionBackend("flash", cuda_only=True, half_only=True),  # flash-attn 2
    "flash3": AttentionBackend("_flash_3", cuda_only=True, half_only=True),  # FlashAttention 3 (Hopper GPUs)
    "sage": AttentionBackend("sage", cuda_only=True, half_only=True),  # SageAttention (8-bit QK)
    "xformers": AttentionBackend("xformers", cuda_only=True),
}
ATTENTION_CHOICES = tuple(ATTENTION)


def check_model_speed(attention: str, compile: bool, device, dtype: torch.dtype) -> None:
    """Refuse a setting this machine cannot run, saying what it needs. Cheap: callers run it before loading."""
    backend = ATTENTION[check_choice("attention", attention, ATTENTION_CHOICES)]
    if not isinstance(compile, bool):
        raise WanInputError(f"compile={compile!r} is not allowed: choose True or False")
    if backend.cuda_only and torch.device(device).type != "cuda":
        raise WanInputError(f"attention={attention!r} needs a CUDA GPU, and this runs on {device}: "
                            "choose 'auto' or 'sdpa'")
    if backend.half_only and dtype not in (torch.bfloat16, torch.float16):
        raise WanInputError(f"attention={attention!r} computes in bf16 or fp16 only, not "
                            f"{str(dtype).removeprefix('torch.')}: choose one of those dtypes, or attention 'auto'")
    if backend.diffusers_name is not None:
        problem = attention_backend_problem(backend.diffusers_name)  # diffusers knows the package versions it runs
        if problem:
            raise WanInputError(f"attention={attention!r} is not available: {problem}")


def set_attention(transformer: WanTransformer3DModel, attention: str) -> None:
    """Put the transformer's attention processors on this backend (checked by check_model_speed)."""
    name = ATTENTION[attention].diffusers_name
    if name is None:
        transformer.reset_attention_backend()  # every processor back to diffusers' default
    else:
        set_model_attention_backend(transformer, name)


def set_compiled(transformer: WanTransformer3DModel, compile: bool) -> None:
    """Compile each transformer block (regional compilation), or return them to eager mode."""
    if compile:
        transformer.compile_repeated_blocks()  # not fullgraph: the step cache's and fp8 casting's hooks break graphs
    else:
        for block in transformer.blocks:  # the WanTransformerBlocks compile_repeated_blocks compiles
            uncompile(block)


OFFLOADS = ("none", "model", "blocks")
BLOCKS_IN_FLIGHT = 2  # with streams: the block computing and the next one being copied


def check_offload(offload: str, device) -> None:
    """Moving networks to a GPU and back needs a GPU: refused on the CPU rather than silently meaning nothing."""
    if check_choice("offload", offload, OFFLOADS) != "none" and torch.device(device).type != "cuda":
        raise WanInputError(f"offload={offload!r} needs a CUDA device, and this runs on {device}: choose 'none'")


def check_block_swap(offload: str, step_cache: float) -> None:
    """Refuse what block swap cannot run with. First Block Cache skips blocks 2..N of a pass, while the stream
    prefetch of group offloading follows the execution order recorded on the first pass: a skipped block's group
    would be left copied, or the next pass would wait on a block that never ran."""
    if offload == "blocks" and step_cache:
        raise WanInputError(f"step_cache={step_cache:g} cannot run with offload='blocks' (the cache skips the "
                            "blocks the swap is streaming in order): set step_cache to 0, or offload to 'model'")


def check_resident_blocks(resident_blocks: int, offload: str, num_blocks: int | None = None) -> None:
    """resident_blocks: how many of the transformer's first blocks stay on the GPU under block swap, 0 (all
    swapped) to its block count. num_blocks None: the model's count is not known yet; checked again once it is."""
    if isinstance(resident_blocks, bool) or not isinstance(resident_blocks, int) or resident_blocks < 0:
        raise WanInputError(f"resident_blocks={resident_blocks!r} is not allowed: choose a whole number from 0 "
                            "(every block swapped) to the diffusion model's block count")
    if resident_blocks and offload != "blocks":
        raise WanInputError(f"resident_blocks={resident_blocks} applies to offload='blocks' only, and offload is "
                            f"{offload!r}: set offload to 'blocks', or resident_blocks to 0")
    if num_blocks is not None and resident_blocks > num_blocks:
        raise WanInputError(f"resident_blocks={resident_blocks} is more than the diffusion model's {num_blocks} "
                            f"blocks: choose 0 to {num_blocks}")


def enable_block_swap(transformer: WanTransformer3DModel, device, resident_blocks: int = 0) -> None:
    """Keep the transformer's blocks on the CPU and stream each to `device` for its turn, all but the first
    `resident_blocks`, which get no hooks and move with the transformer's stage (module docstring).

    Streams need CUDA; elsewhere (the tests' CPU runs, with onload and offload device both the CPU) the same hooks
    move each group synchronously, which exercises everything but the overlap."""
    check_resident_blocks(resident_blocks, "blocks", len(transformer.blocks))
    device = torch.device(device)
    blocks = transformer.blocks
    # diffusers groups every block of the ModuleList it finds, so it is shown the swapped blocks alone while it
    # places its hooks: on each of those blocks, and on the transformer, whose call (moving the layers outside the
    # blocks, and with streams recording the order of the blocks' calls on the first pass, then prefetching the first
    # swapped one) still wraps every block. The same block objects go back in their places after.
    transformer.blocks = blocks[resident_blocks:]
    try:
        transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                         offload_type="block_level", num_blocks_per_group=1,
                                         use_stream=device.type == "cuda")
    finally:
        transformer.blocks = blocks


def resident_part(transformer: WanTransformer3DModel, resident_blocks: int) -> torch.nn.Module:
    """What of a block-swapped transformer moves with its stage: the resident blocks (the hooks move the rest)."""
    return transformer.blocks[:resident_blocks]


def block_swap_resident_bytes(transformer: WanTransformer3DModel, resident_blocks: int = 0) -> int:
    """The transformer's GPU memory under block swap, at most: the layers outside the blocks, the resident blocks,
    and the swapped blocks in flight."""
    def size(module):
        return sum(tensor.numel() * tensor.element_size() for tensor in [*module.parameters(), *module.buffers()])

    blocks = [size(block) for block in transformer.blocks]
    swapped = blocks[resident_blocks:]
    in_flight = min(BLOCKS_IN_FLIGHT, len(swapped)) * max(swapped, default=0)
    return size(transformer) - sum(swapped) + in_flight


@contextmanager
def step_cache(transformer: WanTransformer3DModel, threshold: float):
    """First Block Cache on the transformer while the block runs (threshold 0: nothing changes); removed after."""
    from diffusers.hooks import FirstBlockCacheConfig

    if not threshold:
        yield
        return
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        yield
    finally:
        transformer.disable_cache()


def cache_branch(transformer: WanTransformer3DModel, name: str):
    """The cache state for one guidance branch ("cond" or "uncond"); no-op while no step cache is on."""
    return transformer.cache_context(name) if transformer.is_cache_enabled else nullcontext()


@dataclass
class PassCount:
    """A run's cost: transformer passes called, and how many of them a step cache answered without the blocks."""

    passes: int = 0
    computed: int = 0  # passes that ran the last block
    cache: str = ""  # "fast mode" or "the step cache"; "" when none was on

    @property
    def skipped(self) -> int:
        return self.passes - self.computed

    def line(self) -> str:
        return f"{self.passes} transformer passes" + (f", {self.skipped} skipped by {self.cache}" if self.cache else "")


@contextmanager
def counting_passes(transformer: WanTransformer3DModel, count: PassCount) -> Iterator[PassCount]:
    """Count the transformer's passes while the block runs (a forward hook on it, outside the compiled blocks) and,
    when a step cache is on (count.cache), those that computed its blocks: a cache that skips swaps the blocks'
    forwards inside the call a hook on a block wraps, so that count watches the last block's feed-forward layer,
    which only a computed pass reaches. Without a cache every pass computes, and no hook goes inside the blocks
    (one added there for a run would have torch.compile trace compiled blocks again on every run)."""

    def passed(*_):
        count.passes += 1

    def computed(*_):
        count.computed += 1

    handles = [transformer.register_forward_hook(passed)]
    if count.cache:
        handles.append(transformer.blocks[-1].ffn.register_forward_hook(computed))
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
        if not count.cache:
            count.computed = count.passes
