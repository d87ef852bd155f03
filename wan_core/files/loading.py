"""Model files -> ready Wan 2.1 modules, with the architecture read from tensor shapes (never from a hub config).

Every component goes through one path: open the file memory-mapped, map its key layout onto the diffusers /
transformers module names (a name may stand for part of a file tensor, see checkpoint.TensorPart), infer the
configuration from shapes, build the module with empty weights, and materialise each tensor once in its final
dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel, T5Tokenizer, UMT5Config, UMT5EncoderModel

from .checkpoint import Checkpoint, TensorPart, file_identity, open_checkpoint, source_key
from .clip_names import is_open_clip, open_clip_vision_names
from .t5_names import is_wan_t5, wan_t5_names
from .wan_names import diffusers_key_map
from ..adapters import keep_in_fp32_modules
from .precision import check_weight_storage, prepare_fp8_storage, to_storage
from .tokenizer import TOKENIZER_TENSOR, load_tokenizer

COMFY_PREFIX = "model.diffusion_model."
WAN_HEAD_DIM = 128  # every Wan 2.1 transformer uses 128-wide attention heads; heads = width / 128
CLIP_HEADS_BY_WIDTH = {1280: 16, 1024: 16, 768: 12}  # ViT-H/14, ViT-L/14, ViT-B; else 64-wide heads


def _materialise(module_class, config, checkpoint: Checkpoint, names: dict[str, str | TensorPart], dtype,
                 keep_fp32=(), prepare=None):
    """Build the module with empty weights, then load each tensor once, cast to its final dtype.

    `prepare(empty_module)` may change parameter dtypes before any data exists (fp8 storage does); a parameter
    left in float8 by it is read straight into fp8, every other one into `dtype` (float32 for keep_fp32 modules).
    """
    with init_empty_weights(include_buffers=False):
        module = module_class(config) if not isinstance(config, dict) else module_class(**config)
    if prepare is not None:
        prepare(module)
    expected = dict(module.named_parameters())
    missing = sorted(expected.keys() - names.keys())
    if missing:
        checkpoint.fail(f"lacks {len(missing)} weights this {checkpoint.role} needs, e.g. {missing[:3]}")
    state = {}
    for name, empty in expected.items():
        if empty.dtype.is_floating_point and empty.dtype.itemsize == 1:
            wanted = empty.dtype
        elif any(part in name.split(".") for part in keep_fp32):
            wanted = torch.float32
        else:
            wanted = dtype
        tensor = checkpoint.read(names[name])
        if tuple(tensor.shape) != tuple(empty.shape):
            checkpoint.fail(f"has {source_key(names[name])!r} of shape {tuple(tensor.shape)} where the architecture "
                            f"read from its other shapes needs {tuple(empty.shape)}")
        state[name] = to_storage(tensor, wanted)
    try:
        module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as error:
        checkpoint.fail(f"does not match the architecture read from its shapes: {error}")
    return module.eval().requires_grad_(False)


@dataclass
class WeightSources:
    """Where each parameter of a loaded module was read from, so that its base value can be read again later from
    the file instead of kept as a copy in RAM (LoRA removal, lora/apply.py). `identity` is the files' identity at
    load (file_identity): a file changed since then no longer holds the loaded weights, and is refused."""

    checkpoint: Checkpoint
    names: dict[str, str | TensorPart]  # parameter name -> its file tensor (or part of one)
    identity: tuple

    def check_unchanged(self) -> None:
        if file_identity(self.checkpoint.files()) != self.identity:
            self.checkpoint.fail("has changed on disk since the model was loaded, so its base weights cannot be "
                                 "read back: load the model again")

    def read(self, name: str, dtype: torch.dtype, rows: slice) -> torch.Tensor:
        """Rows `rows` (of dim 0) of the parameter's value as loaded, on the CPU: the same positioned read and the
        same cast as at load (ComfyUI's scaled fp8 dequantised by the reader, fp8 storage saturated by
        to_storage), so bit-exact. A parameter that is part of a file tensor is read whole, then cut."""
        source = self.names[name]
        if isinstance(source, str):
            return to_storage(self.checkpoint.tensor(source, rows), dtype)
        return to_storage(self.checkpoint.read(source)[rows], dtype)


def _describe_component(shapes: dict) -> str:
    keys = "\n".join(shapes)
    if "decoder.middle.0.residual.0.gamma" in keys or "decoder.mid_block" in keys:
        return "a Wan VAE"
    if "encoder.block.0.layer.0.SelfAttention" in keys or is_wan_t5(shapes):
        return "a UMT5 text encoder"
    if "embeddings.class_embedding" in keys and "encoder.layers.0" in keys:  # with or without vision_model.
        return "a CLIP vision encoder"
    if is_open_clip(shapes):  # Wan-AI's models_clip_*.pth or open_clip's own file; both hold a ViT we read
        return "an open-clip CLIP model"
    if "head.modulation" in keys or "scale_shift_table" in keys:
        return "a Wan diffusion model"
    return "not a Wan 2.1 component"


def _require_component(checkpoint: Checkpoint, expected: str):
    found = _describe_component(checkpoint.shapes)
    if found != expected:
        checkpoint.fail(f"is {found}, not {expected}: put it in the matching slot")


# ---- diffusion model -------------------------------------------------------------------------------------------


def transformer_config(shapes: dict[str, tuple]) -> dict:
    """WanTransformer3DModel arguments from diffusers-named shapes: I2V vs T2V, 14B vs 1.3B, tiny."""
    inner_dim, in_channels, *patch = shapes["patch_embedding.weight"]
    config = dict(
        patch_size=tuple(patch),
        num_attention_heads=inner_dim // WAN_HEAD_DIM,
        attention_head_dim=WAN_HEAD_DIM,
        in_channels=in_channels,
        out_channels=shapes["proj_out.weight"][0] // math.prod(patch),
        text_dim=shapes["condition_embedder.text_embedder.linear_1.weight"][1],
        freq_dim=shapes["condition_embedder.time_embedder.linear_1.weight"][1],
        ffn_dim=shapes["blocks.0.ffn.net.0.proj.weight"][0],
        num_layers=len({key.split(".")[1] for key in shapes if key.startswith("blocks.")}),
        cross_attn_norm="blocks.0.norm2.weight" in shapes,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shapes else None,
    )
    if "condition_embedder.image_embedder.norm1.weight" in shapes:
        config["image_dim"] = shapes["condition_embedder.image_embedder.norm1.weight"][0]
        config["added_kv_proj_dim"] = shapes["blocks.0.attn2.add_k_proj.weight"][1]
    if "condition_embedder.image_embedder.pos_embed" in shapes:
        config["pos_embed_seq_len"] = shapes["condition_embedder.image_embedder.pos_embed"][1]
    return config


def _transformer_layout(path) -> tuple[Checkpoint, dict[str, str], dict]:
    """The opened diffusion model file, {module name: file key} and the architecture read from its shapes."""
    checkpoint = open_checkpoint(path, "diffusion model")
    _require_component(checkpoint, "a Wan diffusion model")
    if any(key.removeprefix(COMFY_PREFIX) == "head.modulation" for key in checkpoint.shapes):  # original Wan names
        names = diffusers_key_map(convert_wan_transformer_to_diffusers, checkpoint.shapes)  # it drops COMFY_PREFIX
    else:
        names = {key: key for key in checkpoint.shapes}
    return checkpoint, names, transformer_config({new: checkpoint.shapes[old] for new, old in names.items()})


def read_transformer_config(path) -> dict:
    """The diffusion model's WanTransformer3DModel arguments from its tensor shapes alone: no weight is read, so
    settings that depend on the architecture (heads, patch size) are checked before loading."""
    return _transformer_layout(path)[2]


def load_transformer(path, dtype=torch.float32, weight_storage: str | None = None) -> WanTransformer3DModel:
    """The diffusion model from a file or folder in any supported layout; weight_storage "fp8" keeps its
    Linear/Conv weights in float8_e4m3fn, upcast to `dtype` one layer at a time (see precision.py)."""
    return load_transformer_with_sources(path, dtype, weight_storage)[0]


def load_transformer_with_sources(path, dtype=torch.float32, weight_storage: str | None = None
                                  ) -> tuple[WanTransformer3DModel, WeightSources | None]:
    """load_transformer, plus where each parameter came from (what LoRA removal reads base weights back from);
    None for a .pth file, which cannot be kept open cheaply (Checkpoint.rereadable)."""
    storage = check_weight_storage(weight_storage)
    checkpoint, names, config = _transformer_layout(path)
    keep_fp32 = keep_in_fp32_modules(WanTransformer3DModel)
    prepare = (lambda module: prepare_fp8_storage(module, dtype)) if storage == "fp8" else None
    identity = file_identity(checkpoint.files())  # before reading: a change while loading is caught later
    model = _materialise(WanTransformer3DModel, config, checkpoint, names, dtype, keep_fp32, prepare)
    return model, WeightSources(checkpoint, names, identity) if checkpoint.rereadable else None


# ---- VAE -------------------------------------------------------------------------------------------------------


def vae_config(shapes: dict[str, tuple]) -> dict:
    return dict(base_dim=shapes["encoder.conv_in.weight"][0], z_dim=shapes["post_quant_conv.weight"][0])


def load_vae(path, dtype=torch.float32) -> AutoencoderKLWan:
    checkpoint = open_checkpoint(path, "VAE")
    _require_component(checkpoint, "a Wan VAE")
    if "decoder.middle.0.residual.0.gamma" in checkpoint.shapes:
        names = diffusers_key_map(convert_wan_vae_to_diffusers, checkpoint.shapes)
    else:
        names = {key: key for key in checkpoint.shapes}
    config = vae_config({new: checkpoint.shapes[old] for new, old in names.items()})
    return _materialise(AutoencoderKLWan, config, checkpoint, names, dtype)


# ---- text encoder ----------------------------------------------------------------------------------------------


def umt5_config(shapes: dict[str, tuple]) -> UMT5Config:
    vocab_size, d_model = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    buckets, num_heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    return UMT5Config(
        vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
        d_kv=shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // num_heads,
        d_ff=shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
        num_layers=len({key.split(".")[2] for key in shapes if key.startswith("encoder.block.")}),
        relative_attention_num_buckets=buckets, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )


def load_text_encoder(path, dtype=torch.float32, tokenizer_dir=None,
                      weight_storage: str | None = None) -> tuple[UMT5EncoderModel, T5Tokenizer]:
    """UMT5 under transformers' names (ComfyUI, diffusers) or Wan's own (the release's .pth), plus its tokenizer;
    weight_storage "fp8" keeps its Linear weights in float8_e4m3fn, upcast per layer (see precision.py)."""
    storage = check_weight_storage(weight_storage)
    checkpoint = open_checkpoint(path, "text encoder")
    _require_component(checkpoint, "a UMT5 text encoder")
    if is_wan_t5(checkpoint.shapes):
        names = wan_t5_names(checkpoint.shapes)
    else:
        names = {key: key for key in checkpoint.shapes if key != TOKENIZER_TENSOR}
        embedding = "shared.weight" if "shared.weight" in names else "encoder.embed_tokens.weight"
        names["shared.weight"] = names["encoder.embed_tokens.weight"] = embedding
    tokenizer = load_tokenizer(checkpoint, tokenizer_dir)  # before the weights: a missing tokenizer fails fast
    config = umt5_config({new: checkpoint.shapes[old] for new, old in names.items()})
    prepare = (lambda module: prepare_fp8_storage(module, dtype)) if storage == "fp8" else None
    model = _materialise(UMT5EncoderModel, config, checkpoint, names, dtype, prepare=prepare)
    model.set_input_embeddings(model.shared)
    return model, tokenizer


# ---- CLIP vision -----------------------------------------------------------------------------------------------


def clip_vision_config(shapes: dict[str, tuple]) -> CLIPVisionConfig:
    hidden, _, patch, _ = shapes["vision_model.embeddings.patch_embedding.weight"]
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    return CLIPVisionConfig(
        hidden_size=hidden, patch_size=patch, image_size=patch * math.isqrt(positions - 1),
        intermediate_size=shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=len({k.split(".")[3] for k in shapes if k.startswith("vision_model.encoder.layers.")}),
        num_attention_heads=CLIP_HEADS_BY_WIDTH.get(hidden, max(1, hidden // 64)),
        hidden_act="gelu", layer_norm_eps=1e-5,
    )


def load_clip_vision(path, dtype=torch.float32) -> tuple[CLIPVisionModel, CLIPImageProcessorPil]:
    """CLIP ViT from ComfyUI's clip_vision files, a diffusers image_encoder/, or the vision tower of an open-clip
    file: the Wan-AI release's models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or open_clip's own."""
    checkpoint = open_checkpoint(path, "CLIP vision")
    if is_open_clip(checkpoint.shapes):
        plain = open_clip_vision_names(checkpoint.shapes)
    else:
        _require_component(checkpoint, "a CLIP vision encoder")
        plain = {key.removeprefix("vision_model."): key for key in checkpoint.shapes}
    try:
        config = clip_vision_config({"vision_model." + name: checkpoint.shape_of(source)
                                     for name, source in plain.items()})
    except KeyError as missing:
        checkpoint.fail(f"is {_describe_component(checkpoint.shapes)} but lacks {missing} (transformers' name), "
                        "one of the weights its architecture is read from")
    # ComfyUI's and older diffusers' files name the tower "vision_model.*"; transformers 5 saves (and names its
    # parameters) without that prefix. Accept either and offer both names to the module.
    names = {name: source for plain_name, source in plain.items()
             for name in (plain_name, "vision_model." + plain_name)}
    model = _materialise(CLIPVisionModel, config, checkpoint, names, dtype)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": config.image_size}, crop_size={"height": config.image_size, "width": config.image_size},
        resample=3, do_center_crop=True, do_normalize=True, do_resize=True, do_rescale=True,
    )
    return model, processor
