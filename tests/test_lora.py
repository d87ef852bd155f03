"""LoRA stacks on the tiny real-architecture model: every key format against the formula, reversibility, reports,
errors, fp8 storage, the hub cache and a real HTTP server on 127.0.0.1."""

import copy
import http.server
import json
import logging
import os
import re
import subprocess
import sys
import socket
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wan_core.errors import WanInputError
from wan_core.files.loading import load_transformer_with_sources
from wan_core.sampling.models import WanModels
from wan_core.lora.apply import set_lora_stack
from wan_core.lora.sources import download_lora_url, resolve_lora_file, url_cache_path
from wan_core.lora.stack import LoraEntry, extend_stack
from wan_core.tiny import write_tiny_lora

from helpers import comfy_fp8
from hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parents[1]
RANK = 4
# (diffusers module name, the original Wan name), written out by hand so that the tests do not use the code under test
# to name things. The last two exist only in the image-to-video model.
MODULES = [
    ("blocks.1.attn1.to_q", "blocks.1.self_attn.q"),
    ("blocks.0.attn2.to_out.0", "blocks.0.cross_attn.o"),
    ("blocks.0.ffn.net.0.proj", "blocks.0.ffn.0"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("blocks.1.attn2.add_k_proj", "blocks.1.cross_attn.k_img"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
]


def _flat(name):
    return name.replace(".", "_")


# Each format: (diffusers name, Wan name) -> (key of A, key of B, key of alpha or None: alpha folded into B)
FORMATS = {
    "comfyui": lambda d, w: (f"diffusion_model.{w}.lora_A.weight", f"diffusion_model.{w}.lora_B.weight",
                             f"diffusion_model.{w}.alpha"),
    "comfyui_down_up": lambda d, w: (f"diffusion_model.{w}.lora_down.weight", f"diffusion_model.{w}.lora_up.weight",
                                     f"diffusion_model.{w}.alpha"),
    "kohya_musubi": lambda d, w: (f"lora_unet_{_flat(w)}.lora_down.weight", f"lora_unet_{_flat(w)}.lora_up.weight",
                                  f"lora_unet_{_flat(w)}.alpha"),
    "videox_fun": lambda d, w: (f"lora_unet__{_flat(w)}.lora_down.weight", f"lora_unet__{_flat(w)}.lora_up.weight",
                                f"lora_unet__{_flat(w)}.alpha"),
    "lycoris": lambda d, w: (f"lycoris_{_flat(w)}.lora_down.weight", f"lycoris_{_flat(w)}.lora_up.weight",
                             f"lycoris_{_flat(w)}.alpha"),
    "diffusers": lambda d, w: (f"transformer.{d}.lora_A.weight", f"transformer.{d}.lora_B.weight", None),
    "raw_peft": lambda d, w: (f"base_model.model.{d}.lora_A.default.weight",
                              f"base_model.model.{d}.lora_B.default.weight", None),
    "diffsynth": lambda d, w: (f"pipe.dit.{w}.lora_A.weight", f"pipe.dit.{w}.lora_B.weight", f"pipe.dit.{w}.alpha"),
}


# ---- helpers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def i2v(tiny_i2v):
    yield tiny_i2v
    set_lora_stack(tiny_i2v, None)


@pytest.fixture
def t2v(tiny_t2v):
    yield tiny_t2v
    set_lora_stack(tiny_t2v, None)


def weights(models):
    return {name: param.detach().clone() for name, param in models.transformer.named_parameters()}


def known_pairs(transformer, modules=MODULES, seed=0, alpha=2.0):
    """{diffusers name: (A [rank, in], B [out, rank], alpha)} with random, known values."""
    generator = torch.Generator().manual_seed(seed)
    pairs = {}
    for name, _wan in modules:
        out_features, in_features = transformer.get_submodule(name).weight.shape
        pairs[name] = (torch.randn(RANK, in_features, generator=generator),
                       torch.randn(out_features, RANK, generator=generator), alpha)
    return pairs


def lora_file(path, pairs, layout, modules=MODULES):
    """Write pairs in one of FORMATS' layouts; formats without alpha get it folded into B, as diffusers does."""
    wan_names = dict(modules)
    state = {}
    for name, (down, up, alpha) in pairs.items():
        key_a, key_b, key_alpha = FORMATS[layout](name, wan_names[name])
        state[key_a] = down
        state[key_b] = up if key_alpha else up * (alpha / RANK)
        if key_alpha:
            state[key_alpha] = torch.tensor(alpha)
    save_file(state, str(path))
    return str(path)


def formula(base, pairs_and_scales):
    """W + sum(scale * alpha/rank * B @ A), in float64 so the reference is more exact than what it checks."""
    expected = {name: tensor.double() for name, tensor in base.items()}
    for pairs, scale in pairs_and_scales:
        for module, (down, up, alpha) in pairs.items():
            expected[f"{module}.weight"] += scale * alpha / RANK * (up.double() @ down.double())
    return expected


def assert_weights(models, expected, atol=1e-5):
    for name, param in models.transformer.named_parameters():
        torch.testing.assert_close(param.double(), expected[name].double(), atol=atol, rtol=1e-6, msg=name)


def assert_bit_exact(models, base):
    for name, param in models.transformer.named_parameters():
        assert torch.equal(param, base[name]), name


# ---- formats and the formula -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", FORMATS)
def test_every_format_patches_by_the_formula_and_unpatches_bit_exact(i2v, tmp_path, layout):
    base = weights(i2v)
    pairs = known_pairs(i2v.transformer)
    path = lora_file(tmp_path / f"{layout}.safetensors", pairs, layout)
    report = set_lora_stack(i2v, (LoraEntry(path, 0.7),))
    assert_weights(i2v, formula(base, [(pairs, 0.7)]))
    (result,) = report.loras
    assert result.unmatched_keys == 0 and result.skipped_other_model_keys == 0
    assert result.applied_keys == len(safe_open(path, "pt").keys())
    assert report.patched_weights == len(MODULES)
    set_lora_stack(i2v, None)
    assert_bit_exact(i2v, base)


def test_the_same_lora_in_two_formats_patches_identically(i2v, tmp_path):
    pairs = known_pairs(i2v.transformer, seed=3)
    set_lora_stack(i2v, (LoraEntry(lora_file(tmp_path / "a.safetensors", pairs, "comfyui"), 1.3),))
    from_comfy = weights(i2v)
    set_lora_stack(i2v, (LoraEntry(lora_file(tmp_path / "b.safetensors", pairs, "kohya_musubi"), 1.3),))
    assert all(torch.equal(param, from_comfy[name]) for name, param in i2v.transformer.named_parameters())


def test_full_deltas_diff_and_diff_b_including_a_norm(i2v, tmp_path):
    base = weights(i2v)
    generator = torch.Generator().manual_seed(5)
    q = base["blocks.0.attn1.to_q.weight"]
    diff, diff_b = torch.randn(q.shape, generator=generator), torch.randn(q.shape[0], generator=generator)
    norm_diff = torch.randn(base["blocks.0.norm2.weight"].shape, generator=generator)
    save_file({"diffusion_model.blocks.0.self_attn.q.diff": diff, "diffusion_model.blocks.0.self_attn.q.diff_b": diff_b,
               # the original norm3 is diffusers' norm2 (the cross-attention norm)
               "diffusion_model.blocks.0.norm3.diff": norm_diff}, str(tmp_path / "diff.safetensors"))
    set_lora_stack(i2v, (LoraEntry(str(tmp_path / "diff.safetensors"), 2.0),))
    expected = dict(base)
    expected["blocks.0.attn1.to_q.weight"] = q + 2.0 * diff
    expected["blocks.0.attn1.to_q.bias"] = base["blocks.0.attn1.to_q.bias"] + 2.0 * diff_b
    expected["blocks.0.norm2.weight"] = base["blocks.0.norm2.weight"] + 2.0 * norm_diff
    assert_weights(i2v, expected)


def test_diffusers_reference_conversion_agrees_on_comfyui_and_musubi_files(i2v, tmp_path):
    """diffusers' own Wan LoRA converter (WanLoraLoaderMixin.lora_state_dict) as an independent reference."""
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    comfy = write_tiny_lora(tmp_path / "comfy.safetensors", "i2v", rank=RANK, seed=1)
    with safe_open(str(comfy), "pt") as file:  # the same LoRA renamed by musubi-tuner's rule (see musubi_state)
        musubi = musubi_state({key: file.get_tensor(key) for key in file.keys()})
    save_file(musubi, str(tmp_path / "musubi.safetensors"))
    for path in (comfy, tmp_path / "musubi.safetensors"):
        base = weights(i2v)
        report = set_lora_stack(i2v, (LoraEntry(str(path), 0.5),))
        assert report.loras[0].unmatched_keys == 0
        with safe_open(str(path), "pt") as file:
            reference = WanLoraLoaderMixin.lora_state_dict({key: file.get_tensor(key) for key in file.keys()})
        expected = {name: tensor.double() for name, tensor in base.items()}
        for key in [key for key in reference if key.endswith("lora_A.weight")]:
            module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            b_key = key.replace("lora_A", "lora_B")
            expected[f"{module}.weight"] += 0.5 * (reference[b_key].double() @ reference[key].double())
        assert_weights(i2v, expected)
        set_lora_stack(i2v, None)


MUSUBI_PARTS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight", "alpha": "alpha"}


def musubi_state(comfy_state):
    """musubi-tuner's naming (networks/lora_wan.py on kohya's lora.py): 'lora_unet_' + the original module path with
    every '.' replaced by '_', then '.lora_down.weight' / '.lora_up.weight' / '.alpha'."""
    renamed = {}
    for key, tensor in comfy_state.items():
        module, part = re.match(r"diffusion_model\.(.+)\.(lora_A\.weight|lora_B\.weight|alpha)$", key).groups()
        renamed[f"lora_unet_{module.replace('.', '_')}.{MUSUBI_PARTS[part]}"] = tensor
    return renamed


# ---- files written outside the project -------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    {},
    {"use_rslora": True},  # scale alpha / sqrt(r)
    {"alpha_pattern": {"to_q": 2, "ffn.net.2": 16}},  # per-module alpha
    {"rank_pattern": {"to_k": 2, "linear_1": 6}, "alpha_pattern": {"to_k": 3}},  # per-module rank and alpha
    {"use_rslora": True, "rank_pattern": {"ffn.net.0.proj": 8}, "alpha_pattern": {"time_proj": 5}},
])
def test_a_peft_lora_saved_by_diffusers_applies_with_zero_unmatched_keys(i2v, tmp_path, settings):
    """peft injects the adapter into a copy of the tiny transformer; diffusers' WanPipeline saves it. The deltas
    must be peft's own, whatever scaling the LoraConfig asks for."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    trained = copy.deepcopy(i2v.transformer)
    config = LoraConfig(r=RANK, lora_alpha=8, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj",
                                        "ffn.net.0.proj", "ffn.net.2", "linear_1", "time_proj"], **settings)
    trained.add_adapter(config)
    WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(trained),
                                  transformer_lora_adapter_metadata=config.to_dict())
    base = weights(i2v)
    report = set_lora_stack(i2v, (LoraEntry(str(tmp_path), 1.5),))  # the folder diffusers wrote
    assert report.loras[0].unmatched_keys == 0 and report.loras[0].applied_keys > 0
    expected = dict(base)
    for name, module in trained.named_modules():
        if hasattr(module, "get_delta_weight"):  # peft's own delta: scaling * B @ A, with its per-module scaling
            expected[f"{name}.weight"] = base[f"{name}.weight"] + 1.5 * module.get_delta_weight("default")
    assert report.patched_weights == sum(hasattr(m, "get_delta_weight") for m in trained.modules())
    assert_weights(i2v, expected)


def test_a_musubi_lora_named_from_the_model_file_applies_with_zero_unmatched_keys(i2v, tiny_paths, tmp_path):
    """Names come from the ComfyUI model file on disk (original Wan names), renamed by musubi's rule; musubi trains
    the linear layers of the attention blocks (WanAttentionBlock) and excludes norms and embeddings."""
    generator = torch.Generator().manual_seed(9)
    state = {}
    with safe_open(str(tiny_paths["i2v"]), "pt") as model_file:
        for key in model_file.keys():
            shape = model_file.get_slice(key).get_shape()
            if key.startswith("blocks.") and key.endswith(".weight") and len(shape) == 2 and "norm" not in key:
                name = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
                state[f"{name}.lora_down.weight"] = torch.randn(8, shape[1], generator=generator)
                state[f"{name}.lora_up.weight"] = torch.randn(shape[0], 8, generator=generator)
                state[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(state, str(tmp_path / "musubi.safetensors"))
    report = set_lora_stack(i2v, (LoraEntry(str(tmp_path / "musubi.safetensors")),))
    assert report.loras[0].unmatched_keys == 0
    assert report.loras[0].applied_keys == len(state) and report.patched_weights == len(state) // 3


# ---- stacks, reuse, reports ------------------------------------------------------------------------------------


def test_switching_stacks_without_reloading_and_reapplying_is_a_no_op(i2v, tmp_path):
    base = weights(i2v)
    first, second = known_pairs(i2v.transformer, seed=1), known_pairs(i2v.transformer, MODULES[:3], seed=2)
    a = lora_file(tmp_path / "a.safetensors", first, "comfyui")
    b = lora_file(tmp_path / "b.safetensors", second, "diffusers")
    set_lora_stack(i2v, extend_stack(None, [LoraEntry(a, 1.0), LoraEntry(b, 0.5)]))
    assert_weights(i2v, formula(base, [(first, 1.0), (second, 0.5)]))
    report = set_lora_stack(i2v, (LoraEntry(b, 2.0),))
    assert_weights(i2v, formula(base, [(second, 2.0)]))
    patched = weights(i2v)
    assert set_lora_stack(i2v, (LoraEntry(b, 2.0),)) is report
    assert_bit_exact(i2v, patched)
    set_lora_stack(i2v, ())
    assert_bit_exact(i2v, base)


def test_an_i2v_lora_on_the_t2v_model_skips_image_keys_and_says_so(t2v, tmp_path, caplog):
    path = write_tiny_lora(tmp_path / "i2v.safetensors", "i2v")
    with safe_open(str(path), "pt") as file:
        image_keys = [key for key in file.keys() if "_img." in key]
        other_keys = len(file.keys()) - len(image_keys)
    with caplog.at_level(logging.WARNING, logger="wanflow"):
        report = set_lora_stack(t2v, (LoraEntry(str(path)),))
    (result,) = report.loras
    assert image_keys and result.skipped_other_model_keys == len(image_keys)
    assert result.applied_keys == other_keys and result.unmatched_keys == 0
    assert "image-to-video" in caplog.text and "skipped" in report.summary()


def test_a_t2v_lora_works_on_the_i2v_model(i2v, tmp_path):
    base = weights(i2v)
    path = write_tiny_lora(tmp_path / "t2v.safetensors", "t2v")
    report = set_lora_stack(i2v, (LoraEntry(str(path)),))
    assert report.loras[0].unmatched_keys == 0 and not report.warnings
    changed = sum(not torch.equal(param, base[name]) for name, param in i2v.transformer.named_parameters())
    assert report.patched_weights == changed == 20  # 10 linear layers in each of the 2 blocks, no image layers


def test_unmatched_keys_are_counted_named_and_warned(i2v, tmp_path, caplog):
    pairs = known_pairs(i2v.transformer, MODULES[:1])
    path = lora_file(tmp_path / "some.safetensors", pairs, "comfyui")
    with safe_open(path, "pt") as file:
        state = {key: file.get_tensor(key) for key in file.keys()}
    state["diffusion_model.blocks.7.self_attn.q.lora_A.weight"] = torch.zeros(RANK, 256)  # no block 7 in the model
    state["diffusion_model.blocks.7.self_attn.q.lora_B.weight"] = torch.zeros(256, RANK)
    state["diffusion_model.blocks.0.self_attn.k.lora_A.weight"] = torch.zeros(RANK, 256)  # half a pair
    save_file(state, path)
    with caplog.at_level(logging.WARNING, logger="wanflow"):
        report = set_lora_stack(i2v, (LoraEntry(path),))
    (result,) = report.loras
    assert result.unmatched_keys == 3 and result.applied_keys == 3
    assert "diffusion_model.blocks.7.self_attn.q.lora_A.weight" in result.unmatched_examples
    assert "3 keys match no layer" in caplog.text and report.warnings


# ---- errors ----------------------------------------------------------------------------------------------------


def test_scale_and_count_limits_name_the_lora():
    with pytest.raises(WanInputError, match=r"scale of LoRA 'style.safetensors'=4.5.*0.0 to 4.0"):
        LoraEntry("style.safetensors", 4.5)
    with pytest.raises(WanInputError, match="4 LoRAs given to one stack node: allowed at most 3"):
        extend_stack(None, [LoraEntry(f"{n}.safetensors") for n in range(4)])


def test_bad_files_are_refused_before_any_weight_changes(i2v, tmp_path):
    good = lora_file(tmp_path / "good.safetensors", known_pairs(i2v.transformer), "comfyui")
    set_lora_stack(i2v, (LoraEntry(good, 1.0),))
    patched = weights(i2v)
    (tmp_path / "broken.safetensors").write_bytes(b"this is not a safetensors file")
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    big = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 512),
           "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(512, RANK)}
    save_file(big, str(tmp_path / "other_size.safetensors"))
    cases = {"broken.safetensors": "not a readable .safetensors file", "model.safetensors": "has no LoRA keys",
             "missing.safetensors": "no such file", "other_size.safetensors": "made for another Wan model size"}
    for name, message in cases.items():
        with pytest.raises(WanInputError, match=rf"LoRA '{name}'.*{message}"):
            set_lora_stack(i2v, (LoraEntry(good, 2.0), LoraEntry(name)), loras_dir=tmp_path)
        assert_bit_exact(i2v, patched)


# ---- fp8 storage -----------------------------------------------------------------------------------------------


def bits(tensor):
    return tensor.view(torch.uint8) if tensor.dtype == torch.float8_e4m3fn else tensor


def test_fp8_stored_weights_patch_in_float32_and_cast_back(tiny_i2v, tmp_path):
    transformer = copy.deepcopy(tiny_i2v.transformer)
    for name, param in transformer.named_parameters():
        if name.startswith("blocks.") and param.dim() == 2:
            param.data = param.data.to(torch.float8_e4m3fn)
    models = WanModels(transformer, tiny_i2v.vae, tiny_i2v.text_encoder, tiny_i2v.tokenizer)
    base = weights(models)
    pairs = known_pairs(transformer, MODULES[:3], seed=4)
    set_lora_stack(models, (LoraEntry(lora_file(tmp_path / "a.safetensors", pairs, "comfyui"), 0.8),))
    exact = formula(base, [(pairs, 0.8)])
    for name, param in transformer.named_parameters():
        assert param.dtype == base[name].dtype, name
        if param.dtype == torch.float8_e4m3fn:  # within half a step of e4m3's 3-bit mantissa of the exact sum
            assert ((param.double() - exact[name]).abs() <= 2 ** -4 * exact[name].abs() + 2 ** -10).all(), name
    assert not torch.equal(bits(transformer.blocks[1].attn1.to_q.weight), bits(base["blocks.1.attn1.to_q.weight"]))
    set_lora_stack(models, None)
    for name, param in transformer.named_parameters():
        assert torch.equal(bits(param), bits(base[name])), name


# ---- base weights read back from the model file ------------------------------------------------------------------


def test_a_model_loaded_from_a_file_keeps_no_copies_and_restores_from_it(i2v, tmp_path):
    base = weights(i2v)
    pairs = known_pairs(i2v.transformer, seed=5)
    set_lora_stack(i2v, (LoraEntry(lora_file(tmp_path / "a.safetensors", pairs, "comfyui"), 0.9),))
    assert i2v.lora.sources is not None and not i2v.lora.backups  # nothing kept in RAM beyond the model
    assert i2v.lora.patched == {f"{name}.weight" for name, _ in MODULES}
    assert_weights(i2v, formula(base, [(pairs, 0.9)]))
    set_lora_stack(i2v, None)
    assert_bit_exact(i2v, base)
    assert not i2v.lora.patched


def file_model(path, dtype, weight_storage, like):
    """A WanModels whose transformer comes from `path`, with its sources recorded, as load_models makes it."""
    transformer, sources = load_transformer_with_sources(path, dtype, weight_storage)
    models = WanModels(transformer, like.vae, like.text_encoder, like.tokenizer)
    models.lora.sources = sources
    return models


@pytest.mark.parametrize("scaled, dtype, storage", [(True, torch.bfloat16, "fp8"), (True, torch.bfloat16, None),
                                                    (False, torch.float16, "fp8")],
                         ids=["fp8_scaled-fp8_storage", "fp8_scaled-bf16", "fp8-fp8_storage"])
def test_fp8_files_restore_bit_exact_from_the_file(tiny_paths, tiny_i2v, tmp_path, scaled, dtype, storage):
    path = tmp_path / "comfy_fp8.safetensors"
    save_file(comfy_fp8(load_file(tiny_paths["i2v"]), scaled), str(path))
    models = file_model(path, dtype, storage, tiny_i2v)
    base = weights(models)
    pairs = known_pairs(models.transformer, MODULES[:3], seed=6)
    set_lora_stack(models, (LoraEntry(lora_file(tmp_path / "a.safetensors", pairs, "comfyui"), 0.8),))
    changed = models.transformer.blocks[1].attn1.to_q.weight
    assert not torch.equal(bits(changed), bits(base["blocks.1.attn1.to_q.weight"])) and not models.lora.backups
    set_lora_stack(models, None)
    for name, param in models.transformer.named_parameters():
        assert param.dtype == base[name].dtype and torch.equal(bits(param), bits(base[name])), name


def test_a_model_file_changed_since_loading_is_refused_before_any_weight_changes(tiny_paths, tiny_i2v, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(Path(tiny_paths["i2v"]).read_bytes())
    models = file_model(path, torch.float32, None, tiny_i2v)
    lora = lora_file(tmp_path / "a.safetensors", known_pairs(models.transformer, seed=7), "comfyui")
    set_lora_stack(models, (LoraEntry(lora, 1.0),))
    patched = weights(models)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # rewritten, as far as we can tell
    with pytest.raises(WanInputError, match="changed on disk since the model was loaded"):
        set_lora_stack(models, None)
    assert_bit_exact(models, patched)  # still the stack it says is on
    assert models.lora.signature


# ---- hub cache -------------------------------------------------------------------------------------------------

HUB_SCRIPT = """
import json, sys
from wan_core.errors import WanInputError
from wan_core.lora.sources import resolve_lora_file
from wan_core.lora.stack import LoraEntry
results = {}
for repo, weight_name in [("owner/one", None), ("owner/two", None), ("owner/two", "b.safetensors"), ("owner/gone", None)]:
    try:
        results[f"{repo}:{weight_name}"] = str(resolve_lora_file(LoraEntry(repo, weight_name=weight_name)))
    except WanInputError as error:
        results[f"{repo}:{weight_name}"] = "error: " + str(error)
print(json.dumps(results))
"""


def _cache_repo(hub_cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """huggingface_hub's on-disk cache layout: models--owner--name/{refs/main, snapshots/<commit>/<file>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = hub_cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def test_hub_repos_come_from_huggingface_hubs_cache_offline(tmp_path):
    lora = write_tiny_lora(tmp_path / "x.safetensors").read_bytes()
    hf_home = tmp_path / "hf"
    one = _cache_repo(hf_home / "hub", "owner/one", {"style.safetensors": lora, "README.md": b"hi"})
    two = _cache_repo(hf_home / "hub", "owner/two", {"a.safetensors": lora, "b.safetensors": lora})
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True, check=True)
    results = json.loads(done.stdout)
    assert results["owner/one:None"] == str(one / "style.safetensors")
    assert results["owner/two:None"].startswith("error: LoRA 'owner/two' holds 2 .safetensors files")
    assert "a.safetensors, b.safetensors" in results["owner/two:None"]
    assert results["owner/two:b.safetensors"] == str(two / "b.safetensors")
    assert results["owner/gone:None"].startswith("error: LoRA 'owner/gone': the hub cannot be reached (offline")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """huggingface_hub's cache in a folder of this test's own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_the_same_hub_lora_again_makes_no_request(t2v, tmp_path, hub_cache, monkeypatch):
    lora = write_tiny_lora(tmp_path / "style.safetensors", "t2v").read_bytes()
    with HubStandIn({("owner/style", "style.safetensors"): lora}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        stack = (LoraEntry.from_text("owner/style/style.safetensors", 0.8),)
        with t2v.configured(loras=stack):
            patched = weights(t2v)
        asked = len(hub.log)
        assert asked and t2v.lora_report.loras[0].applied_keys > 0
        with t2v.configured(loras=stack):  # a second sampler run with the same stack
            assert all(torch.equal(patched[name], value) for name, value in weights(t2v).items())
        assert len(hub.log) == asked


def test_a_missing_repo_with_the_hub_down_fails_at_once(tmp_path, hub_cache, monkeypatch):
    """No retries: each source asks the hub once, and the error says it is unreachable and not cached."""
    with HubStandIn({}) as hub:
        hub.down = True
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        for text in ("owner/gone", "owner/gone/style.safetensors"):
            hub.log.clear()
            with pytest.raises(WanInputError, match="the hub cannot be reached .* not in the Hugging Face cache"):
                resolve_lora_file(LoraEntry.from_text(text))
            assert len(hub.log) == 1, hub.log


def test_a_hub_that_drops_connections_is_asked_once_per_source(tmp_path, hub_cache, monkeypatch):
    """A host that accepts and at once closes every connection (a broken network path): each source tries it once
    and fails with our message, where huggingface_hub's own retries would try it again and again for about 25 s."""
    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def drop_connections():
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:  # the listener closed: the test is over
                    return
                accepted.append(connection)
                connection.close()

        threading.Thread(target=drop_connections, daemon=True).start()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        for text in ("owner/gone", "owner/gone/style.safetensors"):
            with pytest.raises(WanInputError, match="the hub cannot be reached"):
                resolve_lora_file(LoraEntry.from_text(text))
    assert len(accepted) == 2, f"{len(accepted)} connections for 2 sources: the hub client retried"


def test_a_missing_relative_path_is_no_such_file_not_a_hub_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_loras").mkdir()
    with pytest.raises(WanInputError, match=r"^LoRA 'my_loras/wan/style.safetensors': no such file"):
        resolve_lora_file(LoraEntry.from_text("my_loras/wan/style.safetensors"))


# ---- URL downloads ---------------------------------------------------------------------------------------------


class LoraServer(http.server.ThreadingHTTPServer):
    """Serves one file with Range support; cut_after makes the next full response stop after that many bytes."""

    def __init__(self, data: bytes):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.data, self.cut_after, self.requests = data, None, []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/files/style.safetensors"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server, data = self.server, self.server.data
        server.requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if server.cut_after is not None:
            body, server.cut_after = body[:server.cut_after], None
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def lora_server(tmp_path):
    server = LoraServer(write_tiny_lora(tmp_path / "served.safetensors", "t2v").read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_url_download_resumes_after_a_cut_off_and_is_reused(lora_server, tmp_path):
    cache = tmp_path / "loras"
    lora_server.cut_after = len(lora_server.data) // 2
    with pytest.raises(WanInputError, match=rf"LoRA '{lora_server.url}': download failed.*resumes"):
        download_lora_url(lora_server.url, cache)
    partial = url_cache_path(lora_server.url, cache).with_suffix(".safetensors.part")
    kept = partial.stat().st_size  # the whole chunks that arrived before the cut
    assert 0 < kept <= len(lora_server.data) // 2
    path = download_lora_url(lora_server.url, cache)
    assert lora_server.requests == [None, f"bytes={kept}-"]
    assert path.read_bytes() == lora_server.data and not partial.exists()
    assert download_lora_url(lora_server.url, cache) == path and len(lora_server.requests) == 2


def test_a_url_lora_applies_through_the_stack(lora_server, t2v):
    base = weights(t2v)
    report = set_lora_stack(t2v, (LoraEntry(lora_server.url, 1.0),))
    assert report.loras[0].applied_keys > 0 and report.loras[0].unmatched_keys == 0
    assert not all(torch.equal(param, base[name]) for name, param in t2v.transformer.named_parameters())


def test_a_corrupt_download_is_refused_and_dropped(lora_server, tmp_path):
    lora_server.data = b"\x10" + lora_server.data[1:]  # the header length no longer matches the file
    with pytest.raises(WanInputError, match="not a complete .safetensors file"):
        download_lora_url(lora_server.url, tmp_path / "loras")
    assert not list((tmp_path / "loras").iterdir())


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/style.safetensors"
    server.server_close()  # the port is now closed: nothing answers there
    with pytest.raises(WanInputError, match=rf"LoRA '{url}': download failed"):
        download_lora_url(url, tmp_path)


# ---- command line ----------------------------------------------------------------------------------------------

CLI_SMALL = ["--model", "tiny", "--image", str(ROOT / "examples" / "first_frame.png"), "--prompt", "a valley",
             "--size", "80*64", "--frames", "9", "--steps", "2", "--seed", "3"]


def test_cli_lora_option_changes_the_video_and_reports(tiny_cache, tmp_path, capsys):
    from wan_core.cli.main import main
    from wan_core.video_io import read_video

    lora = write_tiny_lora(tmp_path / "style.safetensors", "i2v", seed=7)
    assert main(["i2v", *CLI_SMALL, "--out", str(tmp_path / "base.mp4")]) == 0
    assert main(["i2v", *CLI_SMALL, "--lora", f"{lora}:4", "--out", str(tmp_path / "lora.mp4")]) == 0
    assert f"{lora} x4: 72 keys applied" in capsys.readouterr().err  # 2 blocks x 12 linear layers x (A, B, alpha)
    base, styled = read_video(tmp_path / "base.mp4")[0], read_video(tmp_path / "lora.mp4")[0]
    assert (base - styled).abs().mean() > 1e-3


def test_cli_refuses_a_missing_lora_before_loading(tiny_cache, tmp_path, capsys):
    from wan_core.cli.main import main

    assert main(["i2v", *CLI_SMALL, "--lora", "nothing.safetensors:0.5", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "LoRA 'nothing.safetensors': no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_lora_text_names_a_repo_file_a_url_or_a_path(tmp_path):
    in_repo = LoraEntry.from_text("motimalu/wan-flat-color-v2/flat_color.safetensors", 0.5)
    assert (in_repo.source, in_repo.weight_name, in_repo.scale) == ("motimalu/wan-flat-color-v2", "flat_color.safetensors", 0.5)
    assert in_repo.is_hub_repo and not in_repo.is_url
    url = LoraEntry.from_text("https://example.com/loras/style.safetensors")
    assert url.is_url and url.weight_name is None and not url.is_hub_repo
    local = tmp_path / "a" / "b.safetensors"
    local.parent.mkdir()
    local.write_bytes(b"")
    entry = LoraEntry.from_text(str(local))
    assert (entry.source, entry.weight_name, entry.is_hub_repo) == (str(local), None, False)
    assert not LoraEntry.from_text("style.safetensors").is_hub_repo


# ---- step-distill LoRAs: lightx2v's and CausVid's layouts --------------------------------------------------------

# The full deltas diffusers' converter drops (norm diffs, .diff on non-norm weights, diff_m): the Wan key's tail ->
# the diffusers parameter, written out by hand (diffusers' convert_wan_transformer_to_diffusers naming: norm3 is
# diffusers' norm2, modulation is scale_shift_table, img_emb.proj.0/4 the image embedder's norm1/norm2).
DROPPED_BY_DIFFUSERS = {
    "patch_embedding.diff": "patch_embedding.weight", "patch_embedding.diff_b": "patch_embedding.bias",
    "img_emb.proj.0.diff": "condition_embedder.image_embedder.norm1.weight",
    "img_emb.proj.0.diff_b": "condition_embedder.image_embedder.norm1.bias",
    "img_emb.proj.4.diff": "condition_embedder.image_embedder.norm2.weight",
    "img_emb.proj.4.diff_b": "condition_embedder.image_embedder.norm2.bias",
    **{f"blocks.{i}.{wan}": f"blocks.{i}.{ours}" for i in (0, 1) for wan, ours in {
        "self_attn.norm_q.diff": "attn1.norm_q.weight", "self_attn.norm_k.diff": "attn1.norm_k.weight",
        "cross_attn.norm_q.diff": "attn2.norm_q.weight", "cross_attn.norm_k.diff": "attn2.norm_k.weight",
        "cross_attn.norm_k_img.diff": "attn2.norm_added_k.weight",
        "norm3.diff": "norm2.weight", "norm3.diff_b": "norm2.bias", "diff_m": "scale_shift_table"}.items()},
}


def diffusers_fused(models, path, t2v: bool) -> dict[str, torch.Tensor]:
    """The tiny transformer's weights after diffusers' own loader reads the file and fuses it (scale 1)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    transformer = copy.deepcopy(models.transformer)
    pipe_class = WanPipeline if t2v else WanImageToVideoPipeline
    parts = dict(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=transformer)
    pipe = pipe_class(**parts) if t2v else pipe_class(image_processor=None, image_encoder=None, **parts)
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return {name: param.detach().clone() for name, param in transformer.named_parameters()}


@pytest.mark.parametrize("layout,model", [("lightx2v", "i2v"), ("causvid", "t2v")])
def test_distill_loras_apply_with_zero_unmatched_keys_as_diffusers_and_the_formula_say(layout, model, request,
                                                                                      tmp_path):
    from wan_core.tiny import write_tiny_distill_lora

    models = request.getfixturevalue(model)
    path = write_tiny_distill_lora(tmp_path / f"{layout}.safetensors", "t2v" if layout == "causvid" else "i2v", layout)
    base = weights(models)
    reference = diffusers_fused(models, path, t2v=model == "t2v")
    report = set_lora_stack(models, (LoraEntry(str(path)),))
    with safe_open(str(path), "pt") as file:
        state = {key.removeprefix("diffusion_model."): file.get_tensor(key) for key in file.keys()}

    assert report.loras[0].unmatched_keys == 0 and report.loras[0].skipped_other_model_keys == 0
    assert report.loras[0].applied_keys == len(state)
    expected = {name: tensor.double() for name, tensor in base.items()}
    read_by_diffusers = {name for name in base if not torch.equal(reference[name], base[name])}
    for name in read_by_diffusers:
        expected[name] = reference[name].double()
    by_hand = {DROPPED_BY_DIFFUSERS[key]: tensor for key, tensor in state.items() if key in DROPPED_BY_DIFFUSERS}
    for name, delta in by_hand.items():
        expected[name] = base[name].double() + delta.double().reshape(base[name].shape)
    assert read_by_diffusers and by_hand and not read_by_diffusers & set(by_hand)
    assert report.patched_weights == len(read_by_diffusers | set(by_hand))
    assert_weights(models, expected)
    assert (layout == "lightx2v") == ("blocks.0.scale_shift_table" in by_hand)


def test_a_bias_delta_for_a_norm_without_bias_is_a_clear_error(i2v, tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.norm_q.diff_b": torch.zeros(i2v.transformer.config.num_attention_heads
                                                                               * 128)}, str(path))
    base = weights(i2v)
    with pytest.raises(WanInputError, match=r"blocks\.0\.attn1\.norm_q.*bias.*absent.*RMSNorm"):
        set_lora_stack(i2v, (LoraEntry(str(path)),))
    assert_bit_exact(i2v, base)


def test_a_text_to_video_distill_lora_on_the_image_to_video_model_skips_only_its_input_layer(i2v, tmp_path, caplog):
    """CausVid's published LoRA is made for T2V 14B; people run it on I2V 14B, where ComfyUI skips the one delta that
    cannot fit (the patch embedding: 16 input channels against 36) and applies the rest."""
    from wan_core.tiny import write_tiny_distill_lora

    path = write_tiny_distill_lora(tmp_path / "causvid_t2v.safetensors", "t2v", "causvid")
    base = weights(i2v)
    report = set_lora_stack(i2v, (LoraEntry(str(path)),))
    with safe_open(str(path), "pt") as file:
        state = {key.removeprefix("diffusion_model."): file.get_tensor(key) for key in file.keys()}
    try:
        (result,) = report.loras
        assert result.unmatched_keys == 0 and result.skipped_other_model_keys == 1
        assert result.applied_keys == len(state) - 1
        assert any("input-layer delta" in warning and "patch_embedding.diff" in warning for warning in report.warnings)
        assert torch.equal(weights(i2v)["patch_embedding.weight"], base["patch_embedding.weight"])
        up, down = state["blocks.0.self_attn.q.lora_up.weight"], state["blocks.0.self_attn.q.lora_down.weight"]
        expected = base["blocks.0.attn1.to_q.weight"].double() + up.double() @ down.double()
        assert torch.allclose(weights(i2v)["blocks.0.attn1.to_q.weight"].double(), expected, atol=1e-6)
    finally:
        set_lora_stack(i2v, None)
    assert_bit_exact(i2v, base)
