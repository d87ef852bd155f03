"""Weight precision: casting for storage, and keeping transformer weights stored in fp8.

File precisions are read by checkpoint.py (ComfyUI's scaled fp8 included); this module decides how weights are
stored once read.

Weight storage. `weight_storage="fp8"` keeps the transformer's and the UMT5 text encoder's Linear (and Conv)
weights in `float8_e4m3fn` and casts them to the compute dtype one layer at a time during the forward pass, with
diffusers' layerwise casting (`apply_layerwise_casting`; for the transformer, `ModelMixin.enable_layerwise_casting`,
whose default skip list keeps the patch embedding, condition embedders, norms and the fp32 modules in the compute
dtype; for UMT5, the token and position embeddings, the norms and the feed-forward output `wo` stay in the
compute dtype). UMT5-XXL then takes about 7.7 GB instead of 11.4 GB in bf16. The stored weights are
ordinary `nn.Parameter`s of dtype float8_e4m3fn, so LoRA patching can read and replace them.

Scaled fp8 with fp8 storage: layerwise casting has no per-weight scale, so the scale is folded in: the weight
is dequantised (fp8 * scale, float32) and rounded once to float8_e4m3fn, saturating at +-448. The result is
what an fp16 file gives with fp8 storage, to within one fp8 rounding step of each weight (relative error at
most 2**-4 for normal fp8 values); the tests hold it to that bound.
"""

from __future__ import annotations

import torch
from diffusers.hooks import apply_layerwise_casting

from ..adapters import keep_in_fp32_modules
from ..errors import check_choice

FP8_STORAGE_DTYPE = torch.float8_e4m3fn
WEIGHT_STORAGES = ("compute", "fp8")  # "compute": weights in the compute dtype; "fp8": stored fp8, upcast per layer


def to_storage(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast for storage; fp8 saturates at its largest finite value instead of overflowing to NaN."""
    if dtype == FP8_STORAGE_DTYPE and tensor.dtype != dtype:
        limit = torch.finfo(dtype).max
        return tensor.to(torch.float32).clamp(-limit, limit).to(dtype)
    return tensor.to(dtype)


def check_weight_storage(weight_storage: str | None) -> str:
    return check_choice("weight_storage", weight_storage or "compute", WEIGHT_STORAGES)


def prepare_fp8_storage(empty_module, compute_dtype: torch.dtype):
    """Turn on diffusers' layerwise casting on a module still on the meta device.

    The parameters it will store in fp8 then show dtype float8_e4m3fn already, so each tensor can be read from
    the file straight into its final dtype: no full-precision copy of the model ever exists. diffusers' models
    bring their own skip list; for others (UMT5) embeddings and norms are skipped, as diffusers' list does.
    """
    if hasattr(empty_module, "enable_layerwise_casting"):
        empty_module.enable_layerwise_casting(storage_dtype=FP8_STORAGE_DTYPE, compute_dtype=compute_dtype)
    else:
        # UMT5 casts its activations to `wo`'s weight dtype before calling it, so `wo` (transformers'
        # _keep_in_fp32_modules) must keep the compute dtype: stored in fp8 it would turn the activations to fp8
        keep = keep_in_fp32_modules(empty_module)
        apply_layerwise_casting(empty_module, FP8_STORAGE_DTYPE, compute_dtype,
                                skip_modules_pattern=("shared", "embed_tokens", "relative_attention_bias", "norm", *keep))
    return empty_module
