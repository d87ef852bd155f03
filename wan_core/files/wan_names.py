"""diffusers parameter names -> original Wan 2.1 names (ComfyUI's repackaged files use the original names).

diffusers' converter (convert_wan_transformer_to_diffusers) only goes the other way; the tiny model writer and the
LoRA key matcher need this direction too. The tiny model checks that both directions round-trip.
"""

from __future__ import annotations

import re

import torch

_TRANSFORMER_TO_WAN = [
    (r"^condition_embedder\.time_embedder\.linear_([12])", lambda m: f"time_embedding.{2 * int(m[1]) - 2}"),
    (r"^condition_embedder\.text_embedder\.linear_([12])", lambda m: f"text_embedding.{2 * int(m[1]) - 2}"),
    (r"^condition_embedder\.time_proj", "time_projection.1"),
    (r"^condition_embedder\.image_embedder\.norm1", "img_emb.proj.0"),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj", "img_emb.proj.1"),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2", "img_emb.proj.3"),
    (r"^condition_embedder\.image_embedder\.norm2", "img_emb.proj.4"),
    (r"^scale_shift_table", "head.modulation"),
    (r"^proj_out", "head.head"),
    (r"\.scale_shift_table$", ".modulation"),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_out\.0\.", ".o."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.add_([kv])_proj\.", r".\1_img."),
    (r"\.norm_added_k\.", ".norm_k_img."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(blocks\.\d+)\.norm([23])\.", lambda m: f"{m[1]}.norm{5 - int(m[2])}."),  # the cross-attention norm
]


def rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def transformer_key_to_wan(key: str) -> str:
    return rename(key, _TRANSFORMER_TO_WAN)


def diffusers_key_map(converter, shapes: dict[str, tuple]) -> dict[str, str]:
    """{diffusers name: file key} from one of diffusers' single-file converters (convert_wan_*_to_diffusers).

    The converter gets what its contract expects, a state dict of tensors; empty ones on the meta device, so no
    data is read. It renames them; each output tensor is one of the inputs, which says the key it came from."""
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    source = {id(tensor): key for key, tensor in state.items()}
    converted = converter(dict(state))
    changed = sorted(name for name, tensor in converted.items() if id(tensor) not in source)
    if changed:
        raise RuntimeError(f"{converter.__name__} changed tensors rather than renaming them, e.g. {changed[:3]}: "
                           "this diffusers release converts Wan files in a way the loader does not know")
    return {name: source[id(tensor)] for name, tensor in converted.items()}
