"""LoRA key formats -> one internal naming: the diffusers WanTransformer3DModel module names of the loaded model.

A LoRA key is <prefix><module path>.<part>. The prefix says the trainer:
  diffusion_model. / model.diffusion_model.   ComfyUI and the original Wan release: original Wan names
  pipe.dit.                                   DiffSynth-Studio: original Wan names
  lora_unet_ / lora_unet__ / lycoris_         kohya, musubi-tuner, VideoX-Fun, LyCORIS / ai-toolkit: a name with
                                              every dot turned into an underscore
  transformer. / base_model.model. / none     diffusers, PEFT: diffusers names (or original names under PEFT)
The part is a low-rank pair (lora_A/lora_B, lora_down/lora_up, PEFT's lora_A.<adapter>) with an optional .alpha, or a
full delta (.diff for the weight, .diff_b or lora_B.bias for the bias, .diff_m for a block's or the head's AdaLN
modulation: the parameter diffusers calls scale_shift_table). lightx2v's and CausVid's distill LoRAs are extracted by
SVD from a distilled model: low-rank pairs without .alpha on the large Linear layers, full deltas on everything
small (norms, biases, head, patch embedding, modulation).

Module names are matched against the model itself: each of its modules is known under its diffusers name, its
original Wan name (diffusers' own convert_wan_transformer_to_diffusers is the reference for that naming, see
wan_names.py) and both with dots turned into underscores. That is one rule for every format instead of one
converter per trainer.

Why not diffusers' LoRA converters (_convert_non_diffusers_wan_lora_to_diffusers, _convert_musubi_wan_lora_to_diffusers,
reached through WanLoraLoaderMixin.lora_state_dict): in diffusers 0.42 they raise on any key they do not know (so
unmatched keys could not be counted and reported), on an .alpha for text_embedding / time_embedding / head, on a
k_img without v_img, and on a LoRA without block keys; the musubi one raises on a LoRA that trains only some of
a block's layers; `.diff` weight deltas and norm deltas are dropped with a log line. The tests use
WanLoraLoaderMixin.lora_state_dict as an independent reference on the layouts it does read, and peft's own
get_delta_weight for a LoRA that diffusers' WanPipeline.save_lora_weights wrote.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import torch

from ..errors import WanInputError
from ..files.wan_names import transformer_key_to_wan

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "pipe.dit.", "base_model.model.", "transformer.",
            "lora_unet__", "lora_unet_", "lycoris_")
LOW_RANK_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.[\w-]+)?\.(?P<kind>weight|bias)$")
DELTA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>alpha|diff|diff_b|diff_m)$")
MODULATION = "scale_shift_table"  # diffusers' name of Wan's AdaLN `modulation` parameter (blocks and head)
PART_NAMES = {"lora_A": "down", "lora_down": "down", "lora_B": "up", "lora_up": "up"}
# Modules only the image-to-video model has: cross-attention to the CLIP image tokens and the image projection.
LATENT_CHANNELS = 16  # a text-to-video model's input channels; image-to-video adds a mask and a frame: 36
IMAGE_ONLY = re.compile(r"(^|[._])(k_img|v_img|norm_k_img|img_emb|add_k_proj|add_v_proj|norm_added_k|image_embedder)"
                        r"([._]|$)")
PEFT_METADATA = "lora_adapter_metadata"  # what diffusers' save_lora_weights writes: the LoraConfig as JSON
EXAMPLES = 3


@dataclass
class ModuleDelta:
    """Everything one LoRA changes in one module: a low-rank pair and/or full deltas, plus the keys they came from."""

    down: torch.Tensor | None = None  # A: [rank, in] (conv: [rank, in, *kernel])
    up: torch.Tensor | None = None  # B: [out, rank]
    alpha: float | None = None  # None: alpha = rank, the PEFT/diffusers convention
    diff: torch.Tensor | None = None  # [out, in]: added to the weight
    diff_b: torch.Tensor | None = None  # [out]: added to the bias
    diff_m: torch.Tensor | None = None  # [1, 6 or 2, dim]: added to the module's scale_shift_table (MODULATION)
    keys: list[str] = field(default_factory=list)

    @property
    def has_pair(self) -> bool:
        return self.down is not None and self.up is not None

    @property
    def changes_anything(self) -> bool:
        return self.has_pair or any(part is not None for part in (self.diff, self.diff_b, self.diff_m))

    def add_to_weight(self, weight: torch.Tensor, scale: float, rows: slice = slice(None)):
        """weight += scale * (alpha/rank * B @ A + diff), in place and in weight's dtype; addmm_ forms B @ A straight
        into the weight, so no full-size delta is ever allocated. `weight` may be rows `rows` of the layer's weight
        (each row of B @ A is its own dot products, so the rows come out as in one product)."""
        if self.has_pair:
            rank = self.down.shape[0]
            ratio = (self.alpha if self.alpha is not None else rank) / rank
            up, down = self.up[rows].flatten(1).to(weight), self.down.flatten(1).to(weight)  # [out, rank], [rank, in*k]
            weight.view(weight.shape[0], -1).addmm_(up, down, alpha=scale * ratio)
        if self.diff is not None:
            weight.add_(self.diff[rows].to(weight), alpha=scale)


@dataclass
class ParsedLora:
    """One LoRA file in the model's own module names, with the keys it could not place."""

    label: str
    modules: dict[str, ModuleDelta]  # diffusers module name -> its change
    unmatched: list[str]  # file keys that match no module of this model, or are not LoRA parts
    # keys for the other kind of Wan 2.1 model, skipped as ComfyUI skips them: image-conditioning keys on a
    # text-to-video model; on an image-to-video model, a delta of the text-to-video input layer (16 channels, where
    # image-to-video's takes 36), as in CausVid's T2V LoRA, which people run on I2V models
    other_model: list[str]

    @property
    def applied_keys(self) -> int:
        return sum(len(delta.keys) for delta in self.modules.values())


def model_module_names(transformer: torch.nn.Module) -> dict[str, str]:
    """Every name a LoRA may use for a weight-carrying module -> the module's diffusers name. A module holding a
    modulation (a block, or the model itself for the head's) is known by its Wan owner's name: `blocks.N.diff_m`
    and `head.diff_m` name the owner of `blocks.N.modulation` and `head.modulation`."""
    names = {}
    for name, module in transformer.named_modules():
        for parameter, wan_suffix in (("weight", ".weight"), (MODULATION, ".modulation")):
            if isinstance(getattr(module, parameter, None), torch.Tensor):
                full = f"{name}.{parameter}" if name else parameter
                wan = transformer_key_to_wan(full).removesuffix(wan_suffix)
                for alias in filter(None, (name, wan)):
                    names[alias] = names[alias.replace(".", "_")] = name
    return names


def parse_lora(state: dict[str, torch.Tensor], metadata: dict[str, str] | None, label: str,
               module_names: dict[str, str], image_model: bool) -> ParsedLora:
    """Group the file's keys per model module; raise if nothing in it is a LoRA key at all."""
    modules: dict[str, ModuleDelta] = {}
    unmatched, other_model, lora_keys = [], [], 0
    for key, tensor in state.items():
        match = LOW_RANK_KEY.match(key) or DELTA_KEY.match(key)
        if match is None:
            unmatched.append(key)
            continue
        lora_keys += 1
        module = module_names.get(_strip_prefix(match["module"]))
        if module is None:
            (other_model if not image_model and IMAGE_ONLY.search(match["module"]) else unmatched).append(key)
            continue
        if image_model and module == "patch_embedding" and tensor.ndim == 5 and tensor.shape[1] == LATENT_CHANNELS:
            other_model.append(key)
            continue
        if not _add_part(modules.setdefault(module, ModuleDelta()), match, key, tensor):
            unmatched.append(key)
    if not lora_keys:
        raise WanInputError(f"LoRA {label!r} has no LoRA keys (lora_A/lora_B, lora_down/lora_up, diff): "
                            f"it holds {len(state)} tensors such as {list(state)[:EXAMPLES]}")
    _apply_peft_alpha(modules, metadata)
    for name in [name for name, delta in modules.items() if not delta.changes_anything]:
        unmatched.extend(modules.pop(name).keys)  # half a pair, or an alpha alone: nothing to apply
    if not modules and not other_model:
        raise WanInputError(f"LoRA {label!r} matches no layer of this Wan 2.1 model (made for another model?): "
                            f"its keys look like {unmatched[:EXAMPLES]}")
    return ParsedLora(label, modules, unmatched, other_model)


def _strip_prefix(module: str) -> str:
    for prefix in PREFIXES:
        if module.startswith(prefix):
            return module[len(prefix):]
    return module


def _add_part(delta: ModuleDelta, match: re.Match, key: str, tensor: torch.Tensor) -> bool:
    """Store one key's tensor in its module's delta; False for a part no trainer writes (e.g. lora_A.bias)."""
    part, kind = match["part"], match.groupdict().get("kind")
    if part == "alpha":
        delta.alpha = float(tensor.item())
    elif part == "diff_b" or (part == "lora_B" and kind == "bias"):  # diffusers stores a bias delta as lora_B.bias
        delta.diff_b = tensor
    elif part == "diff":
        delta.diff = tensor
    elif part == "diff_m":
        delta.diff_m = tensor
    elif kind == "weight":
        setattr(delta, PART_NAMES[part], tensor)
    else:
        return False
    delta.keys.append(key)
    return True


def _apply_peft_alpha(modules: dict[str, ModuleDelta], metadata: dict[str, str] | None):
    """diffusers/PEFT files keep alpha in the LoraConfig saved as metadata, not per module: lora_alpha, per-module
    alpha_pattern (rank_pattern needs nothing: each module's rank is its tensors' own), and use_rslora, whose scale
    is alpha / sqrt(rank) instead of alpha / rank. A per-module .alpha key in the file wins."""
    config = _peft_config(metadata)
    alpha, patterns = config.get("lora_alpha"), config.get("alpha_pattern") or {}
    for name, delta in modules.items():
        module_alpha = _pattern_value(patterns, name, alpha)
        if delta.alpha is not None or module_alpha is None:
            continue
        rank = delta.down.shape[0] if delta.has_pair else None
        # add_to_weight scales by alpha / rank: rsLoRA's alpha / sqrt(rank) is that with alpha * sqrt(rank)
        delta.alpha = float(module_alpha) * (math.sqrt(rank) if config.get("use_rslora") and rank else 1.0)


def _peft_config(metadata: dict[str, str] | None) -> dict:
    """The LoraConfig fields; diffusers' save_lora_weights prefixes them with the component ("transformer.")."""
    config = json.loads((metadata or {}).get(PEFT_METADATA) or "{}")
    return {key.removeprefix("transformer."): value for key, value in config.items()}


def _pattern_value(patterns: dict[str, float], module: str, default):
    """PEFT's rule for alpha_pattern / rank_pattern keys: the first key that matches the end of the module name at
    a dot boundary (a regular expression), else the default."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default
