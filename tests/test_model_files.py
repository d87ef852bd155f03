"""Every layout and precision a Wan user may have loads to the same model; broken input is named before sampling.

Layouts are written by the libraries that define them where one exists (diffusers' and transformers'
save_pretrained, huggingface_hub's sharded writer, torch.save), from the tiny model's ComfyUI files.

fp8 tolerance (also in README.md): an fp8 file's weights must equal the formula exactly (plain: the fp8 value;
scaled: fp8 * scale_weight in float32), which lies within one fp8 rounding step of the original weight; the
transformer's output may then differ from the full-precision file's by at most 10% relative L2 error.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download, save_torch_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from wan_core.errors import WanInputError
from wan_core.files.loading import load_clip_vision, load_text_encoder, load_transformer, load_vae
from wan_core.sampling.models import load_models
from wan_core.files.model_files import resolve_model_files
from wan_core.sampling.params import SamplingParams
from wan_core.sampling.pipeline import generate_i2v
from wan_core.tiny import tiny_tokenizer_model

from helpers import comfy_fp8, to_wan_t5
from hub_standin import HubStandIn

FP8 = torch.float8_e4m3fn
FP8_OUTPUT_TOLERANCE = 0.10  # relative L2 error of the transformer output, fp8 file or fp8 storage vs fp32
WAN_CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
# The CLIP vision tower under transformers' CLIPVisionModel names -> Wan's own (wan/modules/clip.py) and open_clip's
# (open_clip/transformer.py), written out independently here. "qkv" is the fused projection holding q, k, v in
# that order; Wan keeps a batch dim on its class (1, 1, dim) and position (1, 257, dim) embeddings.
WAN_CLIP = dict(
    top={"embeddings.patch_embedding.weight": "visual.patch_embedding.weight", "embeddings.class_embedding":
         "visual.cls_embedding", "embeddings.position_embedding.weight": "visual.pos_embedding",
         "pre_layrnorm.weight": "visual.pre_norm.weight", "pre_layrnorm.bias": "visual.pre_norm.bias",
         "post_layernorm.weight": "visual.post_norm.weight", "post_layernorm.bias": "visual.post_norm.bias"},
    blocks="visual.transformer.", qkv="attn.to_qkv.{}", batch_dims=True,
    block={"layer_norm1": "norm1", "self_attn.out_proj": "attn.proj", "layer_norm2": "norm2", "mlp.fc1": "mlp.0",
           "mlp.fc2": "mlp.2"})
OPEN_CLIP = dict(
    top={"embeddings.patch_embedding.weight": "visual.conv1.weight", "embeddings.class_embedding":
         "visual.class_embedding", "embeddings.position_embedding.weight": "visual.positional_embedding",
         "pre_layrnorm.weight": "visual.ln_pre.weight", "pre_layrnorm.bias": "visual.ln_pre.bias",
         "post_layernorm.weight": "visual.ln_post.weight", "post_layernorm.bias": "visual.ln_post.bias"},
    blocks="visual.transformer.resblocks.", qkv="attn.in_proj_{}", batch_dims=False,
    block={"layer_norm1": "ln_1", "self_attn.out_proj": "attn.out_proj", "layer_norm2": "ln_2",
           "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"})


def to_open_clip_layout(state: dict, layout: dict) -> dict:
    """CLIPVisionModel weights in an open-clip file's vision tower layout (no other tower)."""
    out = {}
    for key, value in state.items():
        if match := re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key):
            index, module, kind = match.groups()
            if module == "self_attn.q_proj":
                out[f"{layout['blocks']}{index}.{layout['qkv'].format(kind)}"] = torch.cat(
                    [state[key.replace("q_proj", projection)] for projection in ("q_proj", "k_proj", "v_proj")])
            elif module not in ("self_attn.k_proj", "self_attn.v_proj"):
                out[f"{layout['blocks']}{index}.{layout['block'][module]}.{kind}"] = value
        elif layout["batch_dims"] and key.startswith(("embeddings.class", "embeddings.position")):
            out[layout["top"][key]] = value.reshape(1, -1, value.shape[-1])
        else:
            out[layout["top"][key]] = value
    return out


def to_wan_clip(state: dict) -> dict:
    """As the Wan-AI release stores it: the vision tower, its projection head, and (small stand-ins for) the
    XLM-RoBERTa text tower and log_scale, which image conditioning does not use."""
    width = state["embeddings.class_embedding"].shape[0]
    generator = torch.Generator().manual_seed(11)
    return to_open_clip_layout(state, WAN_CLIP) | {
        "visual.head": torch.randn(width, 16, generator=generator),
        "textual.token_embedding.weight": torch.randn(20, 8, generator=generator),
        "textual.blocks.0.attn.q.weight": torch.randn(8, 8, generator=generator),
        "textual.head.0.weight": torch.randn(12, 8, generator=generator),
        "log_scale": torch.tensor(math.log(1 / 0.07)),
    }


def wan_vit_reference(wan: dict, pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's VisionTransformer(pixels, use_31_block=True) computed from the ViT formulas on Wan's own names:
    patch conv, cls prepended, positions added, pre_norm, then every block but the last, each
    x + proj(attention(norm1(x))) with q, k, v split from to_qkv, then x + mlp.2(gelu(mlp.0(norm2(x))))."""
    v = {key.removeprefix("visual."): value.float() for key, value in wan.items() if key.startswith("visual.")}
    dim, patch = v["cls_embedding"].shape[-1], v["patch_embedding.weight"].shape[-1]
    x = F.conv2d(pixels, v["patch_embedding.weight"], stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([v["cls_embedding"].expand(len(x), 1, dim), x], dim=1) + v["pos_embedding"]

    def norm(x, name):
        return F.layer_norm(x, (dim,), v[f"{name}.weight"], v[f"{name}.bias"], eps=1e-5)

    def linear(x, name):
        return F.linear(x, v[f"{name}.weight"], v[f"{name}.bias"])

    x = norm(x, "pre_norm")
    blocks = len({key.split(".")[1] for key in v if key.startswith("transformer.")})
    for block in (f"transformer.{i}." for i in range(blocks - 1)):
        batch, tokens, _ = x.shape
        qkv = linear(norm(x, block + "norm1"), block + "attn.to_qkv").view(batch, tokens, 3, heads, dim // heads)
        q, k, value = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, tokens, head_dim]
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1) @ value
        x = x + linear(attention.transpose(1, 2).reshape(batch, tokens, dim), block + "attn.proj")
        x = x + linear(F.gelu(linear(norm(x, block + "norm2"), block + "mlp.0")), block + "mlp.2")
    return x


def file_hashes(root: Path) -> dict:
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def transformer_output(transformer) -> torch.Tensor:
    """One forward pass on fixed inputs, in the model's compute dtype."""
    generator = torch.Generator().manual_seed(7)
    dtype = transformer.patch_embedding.weight.dtype
    config = transformer.config
    inputs = dict(hidden_states=torch.randn(1, config.in_channels, 2, 8, 8, generator=generator),
                  timestep=torch.tensor([700.0]), encoder_hidden_states=torch.randn(1, 6, config.text_dim,
                                                                                     generator=generator))
    if config.image_dim:
        inputs["encoder_hidden_states_image"] = torch.randn(1, 5, config.image_dim, generator=generator)
    inputs = {k: v.to(dtype) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()}
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0].float()


def relative_error(a, b) -> float:
    return float((a - b).norm() / b.norm())


def assert_same_weights(module, reference):
    got, want = module.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    different = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert not different, different[:5]


SMALL = dict(prompt="a cat walks", width=64, height=64, num_frames=5, steps=2, seed=3)


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference_latents(tiny_i2v, image):
    return generate_i2v(tiny_i2v, image, SamplingParams(**SMALL)).latents


# ---- layouts ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory, tiny_i2v):
    """A diffusers pipeline folder written by diffusers' and transformers' own save_pretrained, sharded."""
    root = tmp_path_factory.mktemp("layouts") / "Wan2.1-I2V-tiny-Diffusers"
    tiny_i2v.transformer.save_pretrained(root / "transformer", max_shard_size="400KB")
    tiny_i2v.vae.save_pretrained(root / "vae")
    tiny_i2v.text_encoder.save_pretrained(root / "text_encoder", max_shard_size="100KB")
    tiny_i2v.tokenizer.save_pretrained(root / "tokenizer")
    tiny_i2v.image_encoder.save_pretrained(root / "image_encoder")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    assert len(list((root / "transformer").glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    assert len(list((root / "text_encoder").glob("model-*-of-*.safetensors"))) > 1
    return root


@pytest.fixture(scope="module")
def wan_release_folder(tmp_path_factory, tiny_paths, tiny_i2v):
    """The Wan-AI release layout: sharded original-name safetensors with an index, .pth VAE, T5 and CLIP, tokenizer."""
    root = tmp_path_factory.mktemp("layouts") / "Wan2.1-I2V-tiny"
    root.mkdir()
    save_torch_state_dict(load_file(tiny_paths["i2v"]), root, max_shard_size="400KB",
                          filename_pattern="diffusion_pytorch_model{suffix}.safetensors")
    torch.save(load_file(tiny_paths["vae"]), root / "Wan2.1_VAE.pth")
    text_state = {k: v.clone() for k, v in tiny_i2v.text_encoder.state_dict().items()}
    torch.save(to_wan_t5(text_state), root / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(to_wan_clip(tiny_i2v.image_encoder.state_dict()), root / WAN_CLIP_FILE)
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "google" / "umt5-xxl" / "spiece.model").write_bytes(tiny_tokenizer_model())
    assert (root / "diffusion_pytorch_model.safetensors.index.json").is_file()
    return root


def test_diffusers_folder_loads_the_same_models_and_video(diffusers_folder, tiny_i2v, image, reference_latents):
    files = resolve_model_files(str(diffusers_folder), "i2v")
    assert files.diffusion_model == diffusers_folder / "transformer" and files.tokenizer == diffusers_folder / "tokenizer"
    models = load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision,
                         tokenizer=files.tokenizer)
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        assert_same_weights(getattr(models, name), getattr(tiny_i2v, name))
    assert torch.equal(generate_i2v(models, image, SamplingParams(**SMALL)).latents, reference_latents)


def test_wan_release_folder_loads_the_same_models_and_video(wan_release_folder, tiny_i2v, image, reference_latents):
    files = resolve_model_files(str(wan_release_folder), "i2v")
    assert files.diffusion_model.name == "diffusion_pytorch_model.safetensors.index.json"
    assert files.clip_vision == wan_release_folder / WAN_CLIP_FILE
    models = load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision,
                         tokenizer=files.tokenizer)
    for name in ("transformer", "vae", "text_encoder", "image_encoder"):
        assert_same_weights(getattr(models, name), getattr(tiny_i2v, name))
    prompt = "a cat walks on the grass"
    assert models.tokenizer(prompt).input_ids == tiny_i2v.tokenizer(prompt).input_ids
    assert torch.equal(generate_i2v(models, image, SamplingParams(**SMALL)).latents, reference_latents)
    # one shard given directly finds its siblings
    shard = sorted(wan_release_folder.glob("diffusion_pytorch_model-00001-of-*.safetensors"))[0]
    assert_same_weights(load_transformer(shard), tiny_i2v.transformer)


def test_wan_clip_file_gives_the_penultimate_states_of_wans_vit(tmp_path):
    """The mapping checked against Wan's formulas on Wan's names: q/k/v order, which norm is which, activation."""
    config = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5)
    generator = torch.Generator().manual_seed(5)
    state = {key: value + 0.1 * torch.randn(value.shape, generator=generator)  # no norm is left the identity
             for key, value in CLIPVisionModel(config).state_dict().items()}
    wan = to_wan_clip(state)
    torch.save(wan, tmp_path / WAN_CLIP_FILE)
    model, processor = load_clip_vision(tmp_path / WAN_CLIP_FILE)
    assert (model.config.num_attention_heads, model.config.image_size, processor.crop_size["height"]) == (2, 32, 32)
    pixels = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        penultimate = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert (penultimate - wan_vit_reference(wan, pixels, heads=2)).abs().max() < 1e-4


def test_open_clip_layout_loads_the_same_image_encoder(tmp_path, tiny_i2v):
    """open_clip's own names in a safetensors file (q, k, v read as byte ranges of in_proj), with its text tower."""
    state = tiny_i2v.image_encoder.state_dict()
    rest = {"token_embedding.weight": torch.ones(20, 8), "transformer.resblocks.0.attn.in_proj_weight":
            torch.ones(24, 8), "visual.proj": torch.ones(64, 16), "logit_scale": torch.tensor(4.6)}
    path = tmp_path / "open_clip_model.safetensors"
    save_file(to_open_clip_layout(state, OPEN_CLIP) | rest, str(path))
    assert_same_weights(load_clip_vision(path)[0], tiny_i2v.image_encoder)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp16_wan_clip_file_loads_into_the_compute_dtype(tmp_path, tiny_i2v, dtype):
    path = tmp_path / WAN_CLIP_FILE
    torch.save({key: value.half() for key, value in to_wan_clip(tiny_i2v.image_encoder.state_dict()).items()}, path)
    model, _ = load_clip_vision(path, dtype)
    rounded = {key: value.half().to(dtype) for key, value in tiny_i2v.image_encoder.state_dict().items()}
    loaded = model.state_dict()
    assert loaded.keys() == rounded.keys()
    assert all(torch.equal(loaded[key], rounded[key]) for key in rounded)  # the fp16 value, cast once
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        states = model(pixel_values=pixels.to(dtype), output_hidden_states=True).hidden_states[-2]
        reference = tiny_i2v.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert states.dtype == dtype and relative_error(states.float(), reference) < 0.02


def test_comfy_models_folder_with_standard_and_bare_names(tmp_path, tiny_paths, tiny_i2v):
    for component, name in [("i2v", "diffusion_models/wan2.1_i2v_480p_14B_bf16.safetensors"),
                            ("vae", "vae/wan_2.1_vae.safetensors"),
                            ("text_encoder", "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                            ("clip_vision", "clip_vision/clip_vision_h.safetensors"),
                            ("t2v", "diffusion_models/my_t2v.safetensors")]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).symlink_to(tiny_paths[component])
    files = resolve_model_files(str(tmp_path), "i2v")  # falls back from fp16 to the bf16 file that is there
    assert files.diffusion_model.name == "wan2.1_i2v_480p_14B_bf16.safetensors"
    assert files.text_encoder.name == "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    assert resolve_model_files(str(tmp_path), "v2v", diffusion_model="my_t2v.safetensors").diffusion_model == \
        tmp_path / "diffusion_models" / "my_t2v.safetensors"


def test_a_folder_with_no_known_layout_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("weights somewhere else")
    with pytest.raises(WanInputError, match="has no known layout: expected a ComfyUI models folder"):
        resolve_model_files(str(tmp_path), "i2v")


def test_a_missing_shard_is_named(wan_release_folder, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(wan_release_folder, copy)
    last = sorted(copy.glob("diffusion_pytorch_model-*.safetensors"))[-1]
    last.unlink()
    with pytest.raises(WanInputError, match=f"shards missing: \\['{last.name}'\\]"):
        load_transformer(copy / "diffusion_pytorch_model.safetensors.index.json")


# ---- precisions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_equal_the_fp32_file_rounded_to_them(tiny_paths, tmp_path, dtype):
    path = tmp_path / "half.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(tiny_paths["i2v"]).items()}, str(path))
    from_half, rounded = load_transformer(path, dtype), load_transformer(tiny_paths["i2v"], dtype)
    with torch.no_grad():  # formula: every weight is the fp32 weight rounded to the file's dtype
        for parameter in rounded.parameters():
            parameter.copy_(parameter.to(dtype).to(parameter.dtype))
    assert rounded.scale_shift_table.dtype == torch.float32  # the fp32 modules stay fp32, with rounded values
    assert_same_weights(from_half, rounded)
    assert torch.equal(transformer_output(from_half), transformer_output(rounded))


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8_e4m3fn", "fp8_scaled"])
def test_fp8_files_dequantise_by_the_formula(tiny_paths, tmp_path, tiny_i2v, scaled):
    written = comfy_fp8(load_file(tiny_paths["i2v"]), scaled)
    path = tmp_path / "fp8.safetensors"
    save_file(written, str(path))
    model = load_transformer(path)
    q = written["model.diffusion_model.blocks.0.self_attn.q.weight"]
    scale = written.get("model.diffusion_model.blocks.0.self_attn.q.scale_weight", torch.tensor(1.0))
    assert torch.equal(model.blocks[0].attn1.to_q.weight, q.float() * scale.float())
    original = tiny_i2v.transformer.blocks[0].attn1.to_q.weight
    step = (original.abs() * 2.0 ** -4).clamp_min(float(scale) * 2.0 ** -9)  # one fp8 rounding step
    assert bool(((model.blocks[0].attn1.to_q.weight - original).abs() <= step).all())
    error = relative_error(transformer_output(model), transformer_output(tiny_i2v.transformer))
    assert 0 < error < FP8_OUTPUT_TOLERANCE


def test_fp8_storage_keeps_fp8_parameters_and_upcasts_per_layer(tiny_paths, tiny_i2v):
    model = load_transformer(tiny_paths["i2v"], torch.float32, weight_storage="fp8")
    weight = model.blocks[0].attn1.to_q.weight
    assert isinstance(weight, torch.nn.Parameter) and weight.dtype == FP8  # LoRA patching sees a plain Parameter
    assert model.patch_embedding.weight.dtype == torch.float32 and model.scale_shift_table.dtype == torch.float32
    # Reference by formula: the fp32 model with each fp8-stored weight rounded through fp8.
    rounded = load_transformer(tiny_paths["i2v"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dtype == FP8:
                rounded.get_parameter(name).copy_(tiny_i2v.transformer.get_parameter(name).to(FP8).float())
    assert torch.equal(transformer_output(model), transformer_output(rounded))
    assert model.blocks[0].attn1.to_q.weight.dtype == FP8  # cast back to storage after the forward pass
    assert relative_error(transformer_output(model), transformer_output(tiny_i2v.transformer)) < FP8_OUTPUT_TOLERANCE


def test_scaled_fp8_with_fp8_storage_folds_the_scale(tiny_paths, tmp_path):
    written = comfy_fp8(load_file(tiny_paths["i2v"]), scaled=True)
    path = tmp_path / "scaled.safetensors"
    save_file(written, str(path))
    model = load_transformer(path, torch.bfloat16, weight_storage="fp8")
    q = written["model.diffusion_model.blocks.1.cross_attn.k.weight"]
    scale = written["model.diffusion_model.blocks.1.cross_attn.k.scale_weight"]
    assert torch.equal(model.blocks[1].attn2.to_k.weight.float(), (q.float() * scale).to(FP8).float())


def test_scaled_fp8_text_encoder_loads_by_the_formula(tiny_paths, tmp_path, tiny_i2v):
    state = load_file(tiny_paths["text_encoder"])
    written = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 2 and "relative_attention" not in key and "shared" not in key:
            scale = value.abs().max() / 448.0
            written[key], written[key.removesuffix(".weight") + ".scale_weight"] = (value / scale).to(FP8), scale
        else:
            written[key] = value
    written["scaled_fp8"] = torch.tensor([], dtype=FP8)
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(written, str(path))
    model, tokenizer = load_text_encoder(path)
    key = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
    assert torch.equal(model.get_parameter(key), written[key].float() * written[key[:-7] + ".scale_weight"])
    assert tokenizer("a cat").input_ids == tiny_i2v.tokenizer("a cat").input_ids


def text_output(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(["a cat walks on the grass in the sun"], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).last_hidden_state.float()


def test_fp8_storage_keeps_the_text_encoders_linear_weights_in_fp8(tiny_paths, tiny_i2v):
    model, tokenizer = load_text_encoder(tiny_paths["text_encoder"], torch.float32, weight_storage="fp8")
    stored = {name for name, parameter in model.named_parameters() if parameter.dtype == FP8}
    linear = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    # every Linear but the feed-forward output wo, which UMT5 needs in the compute dtype; nothing else
    assert stored == {f"{name}.weight" for name in linear if not name.endswith(".wo")}
    assert model.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert model.shared.weight.dtype == torch.float32  # embeddings, position biases and norms stay in compute dtype
    assert model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.dtype == torch.float32
    assert model.encoder.final_layer_norm.weight.dtype == torch.float32
    # Reference by formula: the full-precision encoder with each fp8-stored weight rounded through fp8.
    rounded, _ = load_text_encoder(tiny_paths["text_encoder"])
    with torch.no_grad():
        for name in stored:
            rounded.get_parameter(name).copy_(tiny_i2v.text_encoder.get_parameter(name).to(FP8).float())
    assert torch.equal(text_output(model, tokenizer), text_output(rounded, tokenizer))
    assert all(model.get_parameter(name).dtype == FP8 for name in stored)  # cast back to storage after the pass
    error = relative_error(text_output(model, tokenizer), text_output(tiny_i2v.text_encoder, tokenizer))
    assert 0 < error < FP8_OUTPUT_TOLERANCE


def test_weight_storage_is_checked(tiny_paths):
    with pytest.raises(WanInputError, match="weight_storage='int4' is not allowed: choose one of compute, fp8"):
        load_models(tiny_paths["t2v"], tiny_paths["vae"], tiny_paths["text_encoder"], weight_storage="int4")


# ---- broken input ----------------------------------------------------------------------------------------------


def test_pth_files_that_are_not_plain_state_dicts_are_refused(tmp_path):
    corrupt = tmp_path / "Wan2.1_VAE.pth"
    corrupt.write_bytes(b"\x80\x02not really a pickle" * 10)
    with pytest.raises(WanInputError, match="Wan2.1_VAE.pth' is not a readable PyTorch state dict"):
        load_transformer(corrupt)
    code = tmp_path / "code.pth"
    torch.save({"weights": torch.zeros(2), "payload": Path("/")}, code)  # weights_only refuses arbitrary objects
    with pytest.raises(WanInputError, match="code.pth' is not a readable PyTorch state dict"):
        load_transformer(code)


def test_odd_or_truncated_open_clip_files_are_named(tmp_path, tiny_i2v):
    path = tmp_path / WAN_CLIP_FILE
    torch.save({"visual.transformer.0.attn.to_qkv.weight": torch.zeros(6, 2), "log_scale": torch.zeros(())}, path)
    with pytest.raises(WanInputError, match=f"CLIP vision file '.*{WAN_CLIP_FILE}' is an open-clip CLIP model but "
                                            "lacks 'vision_model.embeddings.patch_embedding.weight'"):
        load_clip_vision(path)
    wan = to_wan_clip(tiny_i2v.image_encoder.state_dict())
    del wan["visual.transformer.1.mlp.2.weight"]
    torch.save(wan, path)
    with pytest.raises(WanInputError, match=r"lacks 1 weights this CLIP vision needs, e.g. "
                                            r"\['encoder.layers.1.mlp.fc2.weight'\]"):
        load_clip_vision(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(WanInputError, match=f"{WAN_CLIP_FILE}' is not a readable PyTorch state dict"):
        load_clip_vision(path)


def test_the_clip_file_in_another_slot_is_named(wan_release_folder):
    with pytest.raises(WanInputError, match=f"VAE file '.*{WAN_CLIP_FILE}' is an open-clip CLIP model, not a Wan VAE"):
        load_vae(wan_release_folder / WAN_CLIP_FILE)


def test_text_encoder_without_tokenizer_offline_says_where_to_put_it(tiny_paths, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    path = tmp_path / "te" / "umt5.safetensors"
    path.parent.mkdir()
    save_file({k: v for k, v in load_file(tiny_paths["text_encoder"]).items() if k != "spiece_model"}, str(path))
    with pytest.raises(WanInputError, match=r"umt5.safetensors' carries no tokenizer .* tokenizer folder at "
                                            r"'.*te/tokenizer'.*google/umt5-xxl"):
        load_text_encoder(path)


def test_tokenizer_from_a_real_huggingface_hub_cache(tiny_paths, tmp_path, monkeypatch, tiny_i2v):
    """The cache is filled by huggingface_hub itself from a stand-in hub, then read with the network unreachable."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_home" / "hub"
    with HubStandIn({("google/umt5-xxl", "spiece.model"): tiny_tokenizer_model()}) as hub:
        hf_hub_download("google/umt5-xxl", "spiece.model", cache_dir=cache, endpoint=hub.url)
    assert (cache / "models--google--umt5-xxl" / "refs" / "main").is_file()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    path = tmp_path / "umt5.safetensors"
    save_file({k: v for k, v in load_file(tiny_paths["text_encoder"]).items() if k != "spiece_model"}, str(path))
    _, tokenizer = load_text_encoder(path)
    assert tokenizer("a cat walks").input_ids == tiny_i2v.tokenizer("a cat walks").input_ids


def test_loading_every_layout_changes_nothing_on_disk(diffusers_folder, wan_release_folder, tiny_cache):
    before = file_hashes(diffusers_folder) | file_hashes(wan_release_folder) | file_hashes(tiny_cache)
    for folder in (diffusers_folder, wan_release_folder):
        files = resolve_model_files(str(folder), "i2v")
        load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision,
                    tokenizer=files.tokenizer, weight_storage="fp8")
    after = file_hashes(diffusers_folder) | file_hashes(wan_release_folder) | file_hashes(tiny_cache)
    assert before == after


def test_command_line_models_dir_with_fp8_storage(tmp_path, tiny_paths, tiny_cache):
    from wan_core.cli.main import main
    from wan_core.video_io import read_video

    for component, name in [("i2v", "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors"),
                            ("vae", "vae/wan_2.1_vae.safetensors"),
                            ("text_encoder", "text_encoders/umt5_xxl_fp16.safetensors"),
                            ("clip_vision", "clip_vision/clip_vision_h.safetensors")]:
        (tmp_path / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / name).symlink_to(tiny_paths[component])
    image = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"
    common = ["i2v", "--image", str(image), "--prompt", "a valley", "--size", "64*64", "--frames", "5",
              "--steps", "2", "--seed", "9", "--device", "cpu"]
    assert main([*common, "--models-dir", str(tmp_path / "models"), "--out", str(tmp_path / "dir.mp4")]) == 0
    assert main([*common, "--model", "tiny", "--out", str(tmp_path / "tiny.mp4")]) == 0
    assert torch.equal(read_video(tmp_path / "dir.mp4")[0], read_video(tmp_path / "tiny.mp4")[0])
    assert main([*common, "--models-dir", str(tmp_path / "models"), "--weight-storage", "fp8",
                 "--out", str(tmp_path / "fp8.mp4")]) == 0
    assert read_video(tmp_path / "fp8.mp4")[0].shape == read_video(tmp_path / "dir.mp4")[0].shape
    assert main([*common, "--models-dir", str(tmp_path), "--out", str(tmp_path / "x.mp4")]) == 2  # no layout
