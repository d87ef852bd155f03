"""The vision tower of open-clip CLIP files under transformers' CLIPVisionModel names: Wan-AI's and open_clip's.

The Wan-AI release's `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth` is Wan's re-implementation of
open-clip's XLM-RoBERTa-large + ViT-H/14 (`wan/modules/clip.py`, `clip_xlm_roberta_vit_h_14`): a `visual.` ViT
(width 1280, 32 blocks, 16 heads, patch 14, 224 px, MLP ratio 4, exact GELU, LayerNorm eps 1e-5) beside a
`textual.` XLM-R tower and `log_scale`, which image conditioning does not use. The ViT embeds patches with a
bias-free conv, prepends `cls_embedding` (1, 1, dim), adds `pos_embedding` (1, 257, dim), applies `pre_norm`,
then runs blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))` whose `attn.to_qkv` holds q, k and v in that order.
That is transformers' CLIP vision encoder layer for layer, so apart from splitting to_qkv in three (and dropping
the embeddings' batch dims) the mapping is a renaming. `post_norm` is CLIP's post_layernorm, applied only to the
pooled token; Wan's image tokens are the output of all blocks but the last (`use_31_block=True`), which is
transformers' `hidden_states[-2]`. The `head` projection has no place in CLIPVisionModel and is left out.

open_clip's own files name the same ViT `conv1`, `class_embedding`, `positional_embedding`, `ln_pre`,
`transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`, `ln_post`, `proj`
(in_proj_* also fused as q, k, v; ComfyUI's clip_vision.convert_to_transformers maps them the same way), so they
load through the same table. Neither layout records its activation; ViT-H/14, the one Wan uses, has exact GELU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checkpoint import TensorPart, source_key


@dataclass(frozen=True)
class _Layout:
    blocks: str  # block i's names start with blocks + "i."
    tensors: dict  # {CLIPVisionModel name: file name} outside the blocks
    block_modules: dict  # {CLIPVisionModel module: file module} inside a block, each with a weight and a bias
    qkv: str  # the fused q, k, v projection inside a block; "{}" is weight or bias


_WAN = _Layout(
    blocks="visual.transformer.",
    tensors={"embeddings.patch_embedding.weight": "visual.patch_embedding.weight",
             "embeddings.class_embedding": "visual.cls_embedding",
             "embeddings.position_embedding.weight": "visual.pos_embedding",
             "pre_layrnorm.weight": "visual.pre_norm.weight", "pre_layrnorm.bias": "visual.pre_norm.bias",
             "post_layernorm.weight": "visual.post_norm.weight", "post_layernorm.bias": "visual.post_norm.bias"},
    block_modules={"layer_norm1": "norm1", "self_attn.out_proj": "attn.proj", "layer_norm2": "norm2",
                   "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"},
    qkv="attn.to_qkv.{}",
)
_OPEN_CLIP = _Layout(
    blocks="visual.transformer.resblocks.",
    tensors={"embeddings.patch_embedding.weight": "visual.conv1.weight",
             "embeddings.class_embedding": "visual.class_embedding",
             "embeddings.position_embedding.weight": "visual.positional_embedding",
             "pre_layrnorm.weight": "visual.ln_pre.weight", "pre_layrnorm.bias": "visual.ln_pre.bias",
             "post_layernorm.weight": "visual.ln_post.weight", "post_layernorm.bias": "visual.ln_post.bias"},
    block_modules={"layer_norm1": "ln_1", "self_attn.out_proj": "attn.out_proj", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"},
    qkv="attn.in_proj_{}",
)
_EMBEDDING_DIMS = {"embeddings.class_embedding": 1, "embeddings.position_embedding.weight": 2}


def _layout(keys) -> _Layout | None:
    for layout in (_WAN, _OPEN_CLIP):
        if f"{layout.blocks}0.{layout.qkv.format('weight')}" in keys:
            return layout
    return None


def is_open_clip(keys) -> bool:
    return _layout(keys) is not None


def _without_batch_dims(key: str, shape: tuple, ndim: int) -> str | TensorPart:
    """Wan keeps a leading batch dim of 1 on its class (1, 1, dim) and position (1, 257, dim) embeddings."""
    if len(shape) > ndim and math.prod(shape[:-ndim]) == 1:
        return TensorPart(key, shape[-ndim:])
    return key


def _block_names(layout: _Layout, shapes: dict, index: str) -> dict:
    prefix, names = f"{layout.blocks}{index}.", {}
    for clip_module, file_module in layout.block_modules.items():
        for kind in ("weight", "bias"):
            names[f"encoder.layers.{index}.{clip_module}.{kind}"] = f"{prefix}{file_module}.{kind}"
    for kind in ("weight", "bias"):
        fused = prefix + layout.qkv.format(kind)
        if fused in shapes:
            width = shapes[fused][0] // 3
            for part, projection in enumerate(("q_proj", "k_proj", "v_proj")):
                names[f"encoder.layers.{index}.self_attn.{projection}.{kind}"] = TensorPart(
                    fused, (width, *shapes[fused][1:]), slice(part * width, (part + 1) * width))
    return names


def open_clip_vision_names(shapes: dict) -> dict[str, str | TensorPart]:
    """{CLIPVisionModel name (transformers 5, no vision_model. prefix): its source in the file}.

    Weights the file lacks are left out, so that the loader names what is missing.
    """
    layout = _layout(shapes)
    names = dict(layout.tensors)
    for clip, ndim in _EMBEDDING_DIMS.items():
        if names[clip] in shapes:
            names[clip] = _without_batch_dims(names[clip], shapes[names[clip]], ndim)
    for index in sorted({key[len(layout.blocks):].split(".")[0] for key in shapes if key.startswith(layout.blocks)}):
        names |= _block_names(layout, shapes, index)
    return {clip: source for clip, source in names.items() if source_key(source) in shapes}
