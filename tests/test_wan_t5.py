"""The Wan-AI release's T5 file, loaded through wan_core/t5_names.py, computes Wan's own T5 forward pass.

The reference below is written from the formulas of Wan's `wan/modules/t5.py` (repo Wan-Video/Wan2.1; umt5_xxl:
num_buckets 32, shared_pos False) and reads the Wan-named state dict directly, so a semantic slip in the name map
(fc1 and gate swapped, norm1 and norm2 swapped, a shared position table) shows up as different numbers, which a
weights round trip cannot catch. What it mirrors:
- relative position buckets: bidirectional, 16 per direction, the first 8 exact, then log-spaced up to
  max_dist 128, clamped beyond (T5RelativeEmbedding);
- every block has its own bucket -> per-head bias table (shared_pos=False);
- RMS norm, eps 1e-6, no bias or mean (T5LayerNorm);
- attention without 1/sqrt(d) scaling; padded keys get finfo.min in place of the bias (masked_fill);
- feed-forward fc2(fc1(x) * gelu(gate.0(x))) with the tanh-approximated GELU, which is transformers' "gated-gelu"
  (gelu_new) too;
- a final RMS norm. Dropout is off at inference; fp16 clamping never triggers in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wan_core.sampling.conditioning import TEXT_LENGTH, clean_prompt, encode_prompt
from wan_core.files.loading import load_text_encoder
from wan_core.tiny import tiny_tokenizer_model

from helpers import to_wan_t5

NUM_BUCKETS, MAX_DISTANCE = 32, 128
TOLERANCE = 1e-4  # float32 throughout; only summation order differs


def position_buckets(length: int) -> torch.Tensor:
    """[length, length] bucket of the offset key - query."""
    offset = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    per_side = NUM_BUCKETS // 2
    exact = per_side // 2
    distance = offset.abs()
    log_spaced = exact + (torch.log(distance.float() / exact) / math.log(MAX_DISTANCE / exact)
                          * (per_side - exact)).long()
    return (offset > 0).long() * per_side + torch.where(distance < exact, distance, log_spaced.clamp(max=per_side - 1))


def rms_norm(x, weight):
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def wan_t5_forward(state: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L] ids and mask -> [B, L, dim], Wan's T5Encoder.forward on a state dict under Wan's names."""
    heads = state["blocks.0.pos_embedding.embedding.weight"].shape[1]
    blocks = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    buckets = position_buckets(ids.shape[1])
    x = state["token_embedding.weight"][ids]
    for index in range(blocks):
        block = {key.split(".", 2)[2].removesuffix(".weight"): value
                 for key, value in state.items() if key.startswith(f"blocks.{index}.")}
        h = rms_norm(x, block["norm1"])
        q, k, v = (F.linear(h, block[f"attn.{name}"]).unflatten(-1, (heads, -1)) for name in "qkv")
        bias = block["pos_embedding.embedding"][buckets].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        attention = (torch.einsum("binc,bjnc->bnij", q, k) + bias).softmax(-1)
        x = x + F.linear(torch.einsum("bnij,bjnc->binc", attention, v).flatten(2), block["attn.o"])
        h = rms_norm(x, block["norm2"])
        x = x + F.linear(F.linear(h, block["ffn.fc1"]) * gelu_tanh(F.linear(h, block["ffn.gate.0"])), block["ffn.fc2"])
    return rms_norm(x, state["norm.weight"])


@pytest.fixture(scope="module")
def wan_t5_file(tmp_path_factory, tiny_i2v):
    """(path, its state in float32): the tiny text encoder as the release ships it, Wan's names in bfloat16."""
    root = tmp_path_factory.mktemp("wan-t5")
    generator = torch.Generator().manual_seed(0)
    # The tiny model's norm weights are all ones, which would hide norm1 and norm2 (or the final norm) mixed up.
    weights = {key: torch.rand(value.shape, generator=generator) + 0.5 if "layer_norm" in key else value
               for key, value in tiny_i2v.text_encoder.state_dict().items()}
    state = to_wan_t5({key: value.to(torch.bfloat16) for key, value in weights.items()})
    path = root / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(state, path)
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "google" / "umt5-xxl" / "spiece.model").write_bytes(tiny_tokenizer_model())
    return path, {key: value.float() for key, value in state.items()}


def test_loaded_wan_t5_computes_wans_forward_pass(wan_t5_file):
    path, state = wan_t5_file
    model, tokenizer = load_text_encoder(path)
    length, real = 160, 100  # beyond max_dist 128: every bucket is used, the clamped last ones included,
    # except 16, which would hold offset 0 looking forward (offset 0 counts as backward)
    assert position_buckets(length).unique().tolist() == [b for b in range(NUM_BUCKETS) if b != NUM_BUCKETS // 2]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, real:], mask[1, real:] = tokenizer.pad_token_id, 0

    reference = wan_t5_forward(state, ids, mask)
    with torch.no_grad():
        unpadded = model(ids[:1]).last_hidden_state
        padded = model(ids, mask).last_hidden_state
    assert (unpadded - reference[:1]).abs().max() < TOLERANCE
    assert (padded[mask.bool()] - reference[mask.bool()]).abs().max() < TOLERANCE


def test_encode_prompt_gives_what_wans_t5_encoder_model_hands_the_transformer(tiny_i2v):
    """A convention difference, not a numeric one. Wan's T5EncoderModel.__call__ tokenizes to 512 tokens (padded),
    encodes them under the mask and returns each prompt's states cut to its real length; WanModel.forward then pads
    them back to 512 with zeros. The engine, like diffusers' WanPipeline, encodes only the real tokens and pads the
    states with zeros. Masked keys take no attention and the position bias depends only on offsets, so the
    transformer receives the same [512, dim] tensor either way."""
    state = to_wan_t5(tiny_i2v.text_encoder.state_dict())
    prompt = "A white cat walks slowly across green grass in warm sunlight, realistic style, 一只白猫在草地上慢慢走"
    tokens = tiny_i2v.tokenizer(clean_prompt(prompt), padding="max_length", max_length=TEXT_LENGTH, truncation=True,
                                return_tensors="pt")
    real = int(tokens.attention_mask.sum())
    wan = wan_t5_forward(state, tokens.input_ids, tokens.attention_mask)[0, :real]
    expected = F.pad(wan, (0, 0, 0, TEXT_LENGTH - real))
    engine = encode_prompt(tiny_i2v, prompt)[0]
    assert (engine - expected).abs().max() < TOLERANCE
    assert engine[:real].abs().min() > 0 and not engine[real:].any()  # real tokens' states, then exact zeros
