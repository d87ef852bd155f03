"""The original Wan-AI text encoder (`models_t5_umt5-xxl-enc-bf16.pth`) under transformers' UMT5 names.

Wan's own T5 (`wan/modules/t5.py`) is UMT5-XXL with different module names. Its encoder block is
`norm1 -> attn(q, k, v, o) -> norm2 -> ffn`, where the feed-forward computes `fc2(fc1(x) * gelu(gate.0(x)))` and
every block has its own relative position table (`shared_pos=False`, as in UMT5). transformers'
UMT5EncoderModel computes `wo(gelu(wi_0(x)) * wi_1(x))`, so gate.0 is wi_0, fc1 is wi_1 and fc2 is wo.
No converter for this file exists in diffusers or transformers (ComfyUI's umt5 files already use
transformers' names), so the mapping lives here; it is a pure renaming, shapes are unchanged.
"""

from __future__ import annotations

import re

_BLOCK_RULES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def is_wan_t5(keys) -> bool:
    return "token_embedding.weight" in keys and "blocks.0.ffn.gate.0.weight" in keys


def wan_t5_names(keys) -> dict[str, str]:
    """{transformers UMT5EncoderModel name: key in the Wan-AI file}; keys it does not know are left out."""
    names = {}
    for key in keys:
        if key == "token_embedding.weight":
            names["shared.weight"] = names["encoder.embed_tokens.weight"] = key
        elif key == "norm.weight":
            names["encoder.final_layer_norm.weight"] = key
        elif (match := _BLOCK_KEY.match(key)) and match[2] in _BLOCK_RULES:
            names[f"encoder.block.{match[1]}.{_BLOCK_RULES[match[2]]}"] = key
    return names
