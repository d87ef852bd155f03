"""Speed settings: the one place where diffusers' and PyTorch's speed features are switched on for a generation.

Step cache ("fast mode"): diffusers' First Block Cache (`FirstBlockCacheConfig`, `WanTransformer3DModel.enable_cache`).
Each transformer pass runs its first block; when that block's output residual differs from the one of the last full
pass by less than `threshold` (mean absolute difference relative to that residual's mean magnitude), the remaining
blocks are skipped and their residual from the last full pass is added instead. 0 turns it off; diffusers' own
default is 0.05. The conditional and unconditional passes each keep their own cache (`cache_branch`), as
diffusers' Wan I2V pipeline does.

The cache is on for one generation only: a model kept loaded (ComfyUI's cache) carries no hooks or cached residuals
between runs, whatever the next run asks for, and an interrupted run leaves none either. Its hooks sit on the
transformer blocks, so they stack with fp8 storage's layerwise casting hooks (on the Linear and Conv layers inside
them) and see LoRA patches, which are written into the weights themselves.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from diffusers import WanTransformer3DModel
from diffusers.hooks import FirstBlockCacheConfig


@contextmanager
def step_cache(transformer: WanTransformer3DModel, threshold: float):
    """First Block Cache on the transformer while the block runs (threshold 0: nothing changes); removed after."""
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
