"""Apply a LoRA stack to a loaded Wan model, reversibly: W' = W + sum(scale * alpha/rank * B @ A + scale * diff),
and the same sum of full deltas for biases (diff_b) and AdaLN modulations (diff_m, on scale_shift_table).

Every patched weight is computed from its base value, never from an already patched weight, so switching stacks
does not accumulate rounding, and removing the stack writes the base values back bit-exactly (subtracting the
delta again would not be exact in bf16 or fp8). The base value of a weight loaded from a file is read again from
that file when it is needed (a positioned read of that one tensor, cast as at load: files/loading.WeightSources),
so no copy of the touched weights is kept in RAM; 14B in bf16 would need up to 28 GB for one. A model whose
weights came from no file the loader can read again (the tests' and benchmarks' in-memory models, a .pth file)
keeps a CPU copy of each weight it patches instead, as ComfyUI's ModelPatcher keeps its backups, dropped when no
stack needs it.

That patch state (the weights' sources or backups, the patched names, the applied stack) belongs to the
WanModels that owns the transformer (`models.lora`, a LoraPatches): WanModels.configured is the one caller of
set_lora_stack in a run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open

from ..errors import WanInputError
from .formats import EXAMPLES, MODULATION, ModuleDelta, ParsedLora, model_module_names, parse_lora
from .sources import local_lora_file, resolve_lora_file
from .stack import LoraEntry, LoraStack

if TYPE_CHECKING:
    from ..files.loading import WeightSources
    from ..sampling.models import WanModels

log = logging.getLogger("wanflow")
COMPUTE_DTYPE = torch.float32  # the sum is formed in float32 whatever the storage dtype (bf16, fp16, fp8), then cast
CHUNK_ELEMENTS = 2**21  # values per chunk of rows patched at once: 8 MB in float32


@dataclass
class LoraResult:
    """How one LoRA of the stack went."""

    source: str
    scale: float
    applied_keys: int
    unmatched_keys: int
    unmatched_examples: list[str]
    skipped_other_model_keys: int  # ParsedLora.other_model

    def line(self) -> str:
        text = f"{self.source} x{self.scale:g}: {self.applied_keys} keys applied"
        if self.unmatched_keys:
            text += f", {self.unmatched_keys} unmatched (e.g. {', '.join(self.unmatched_examples)})"
        if self.skipped_other_model_keys:
            text += f", {self.skipped_other_model_keys} keys for the other model kind (I2V / T2V) skipped"
        return text


@dataclass
class LoraReport:
    loras: list[LoraResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patched_weights: int = 0  # parameters that now differ from the base model's

    def summary(self) -> str:
        if not self.loras:
            return "no LoRA: base weights"
        return "\n".join([f"{len(self.loras)} LoRA(s), {self.patched_weights} weights patched"]
                         + [result.line() for result in self.loras])


@dataclass
class LoraPatches:
    """What a transformer's weights hold beyond the base model: kept by the WanModels that owns the transformer."""

    sources: WeightSources | None = None  # set at load; None: base values are kept in `backups` (module docstring)
    backups: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> its base value, on the CPU
    patched: set[str] = field(default_factory=set)  # parameters that now differ from their base value
    signature: tuple = ()  # the applied stack (stack_signature); () is the base model
    report: LoraReport = field(default_factory=LoraReport)


def stack_signature(entries: tuple[LoraEntry, ...], loras_dir: Path | None) -> tuple:
    """What decides the patched weights, found without the network: a local file by path, size and time; a hub
    file or URL by its name (a URL's cached file never changes; a hub file is looked up again only for a new
    stack), each with its scale."""
    signature = []
    for entry in entries:
        path = local_lora_file(entry, loras_dir)  # None for a URL or a hub repo
        if path is None:
            signature.append((entry.source, entry.weight_name, entry.scale))
        else:
            signature.append((str(path), path.stat().st_mtime_ns, path.stat().st_size, entry.scale))
    return tuple(signature)


def set_lora_stack(models: WanModels, stack: LoraStack | None, loras_dir: Path | None = None) -> LoraReport:
    """Make the transformer's weights equal the base weights plus this stack (None or empty: the base weights).

    The same stack as the one applied changes nothing and contacts no hub. Every entry of a new stack is resolved,
    read and checked against the model before any weight changes; a failure or an interrupt while weights are
    being written puts the base weights back, so the transformer is always in a known state.
    """
    transformer, state = models.transformer, models.lora
    entries = tuple(stack or ())
    signature = stack_signature(entries, loras_dir)
    if signature == state.signature:
        return state.report
    files = [resolve_lora_file(entry, loras_dir) for entry in entries]
    names = model_module_names(transformer)
    parsed = [read_lora(path, _label(entry), names, models.is_i2v) for path, entry in zip(files, entries)]
    for lora in parsed:
        check_shapes(lora, transformer)
    report = _report(parsed, entries)
    if state.sources is not None:
        state.sources.check_unchanged()  # before any weight changes: the file must still hold the base weights
    try:
        report.patched_weights = _patch(transformer, state, _contributions(parsed, entries))
    except BaseException:  # KeyboardInterrupt and ComfyUI's interrupt included: half-written weights never stay
        _restore_base(transformer, state)
        raise
    state.signature, state.report = signature, report
    return report


def _label(entry: LoraEntry) -> str:
    return f"{entry.source}:{entry.weight_name}" if entry.weight_name else entry.source


def read_lora(path: Path, label: str, module_names: dict[str, str], image_model: bool) -> ParsedLora:
    try:
        with safe_open(str(path), framework="pt") as file:
            state = {key: file.get_tensor(key) for key in file.keys()}
            metadata = file.metadata()
    except (SafetensorError, OSError) as error:
        raise WanInputError(f"LoRA {label!r}: {str(path)!r} is not a readable .safetensors file ({error})") from None
    return parse_lora(state, metadata, label, module_names, image_model)


def check_shapes(lora: ParsedLora, transformer: torch.nn.Module):
    """Raise if a delta does not fit its layer: a LoRA for another model size (14B on 1.3B, say), or a delta for a
    parameter the layer does not have (a bias delta on an RMSNorm, which has a weight only)."""
    for name, delta in lora.modules.items():
        module = transformer.get_submodule(name)
        weight, bias, modulation = (_shape(getattr(module, attr, None)) for attr in ("weight", "bias", MODULATION))
        problems = []
        if delta.has_pair and (delta.up.shape[0], math.prod(delta.down.shape[1:])) != (weight[0], math.prod(weight[1:])):
            problems.append(f"B @ A is {delta.up.shape[0]}x{math.prod(delta.down.shape[1:])}")
        if delta.has_pair and delta.up.shape[1] != delta.down.shape[0]:
            problems.append(f"B has rank {delta.up.shape[1]} but A has rank {delta.down.shape[0]}")
        for part, target, target_name in ((delta.diff, weight, "weight"), (delta.diff_b, bias, "bias"),
                                          (delta.diff_m, modulation, "modulation")):
            if part is not None and tuple(part.shape) != target:
                problems.append(f"{target_name} delta is {tuple(part.shape)} but the {target_name} is "
                                + (str(target) if target else f"absent from {type(module).__name__} {name or 'head'}"))
        if problems:
            raise WanInputError(f"LoRA {lora.label!r} does not fit this model at {name or 'head'} (weight {weight}): "
                                f"{'; '.join(problems)}; it was made for another Wan model size or layout "
                                f"(keys {delta.keys[:EXAMPLES]})")


def _shape(tensor: torch.Tensor | None) -> tuple | None:
    return None if tensor is None else tuple(tensor.shape)


def _report(parsed: list[ParsedLora], entries: tuple[LoraEntry, ...]) -> LoraReport:
    report = LoraReport()
    for lora, entry in zip(parsed, entries):
        examples = lora.unmatched[:EXAMPLES]
        report.loras.append(LoraResult(lora.label, entry.scale, lora.applied_keys, len(lora.unmatched), examples,
                                       len(lora.other_model)))
        if lora.unmatched:
            report.warnings.append(f"LoRA {lora.label!r}: {len(lora.unmatched)} keys match no layer of this model "
                                   f"and were not applied, e.g. {examples}")
        if lora.other_model:
            report.warnings.append(_other_model_warning(lora))
    for warning in report.warnings:
        log.warning(warning)
    return report


def _other_model_warning(lora: ParsedLora) -> str:
    keys = f"{len(lora.other_model)} keys, e.g. {lora.other_model[:EXAMPLES]}"
    if "patch_embedding" in lora.other_model[0]:
        return (f"LoRA {lora.label!r} was made for the text-to-video model: its input-layer delta ({keys}) takes 16 "
                "channels where this image-to-video model takes 36, and was skipped; the rest applies")
    return (f"LoRA {lora.label!r} was made for the image-to-video model: its image-conditioning keys (k_img, v_img, "
            f"img_emb; {keys}) were skipped on this text-to-video model")


def _contributions(parsed: list[ParsedLora], entries) -> dict[str, list[tuple[float, ModuleDelta, str]]]:
    """parameter name -> [(scale, delta, 'weight', 'bias' or 'modulation')], in stack order; zero scales change nothing."""
    wanted: dict[str, list] = {}
    for lora, entry in zip(parsed, entries):
        if entry.scale == 0:
            continue
        for module, delta in lora.modules.items():
            if delta.has_pair or delta.diff is not None:
                wanted.setdefault(f"{module}.weight", []).append((entry.scale, delta, "weight"))
            if delta.diff_b is not None:
                wanted.setdefault(f"{module}.bias", []).append((entry.scale, delta, "bias"))
            if delta.diff_m is not None:  # a parameter of the block (or of the model, for the head's)
                wanted.setdefault(f"{module}.{MODULATION}".lstrip("."), []).append((entry.scale, delta, "modulation"))
    return wanted


def _base_value(state: LoraPatches, name: str, param: torch.Tensor, rows: slice) -> torch.Tensor:
    """Rows of the parameter's base value on the CPU: read again from the model file, or cut from its kept copy
    (the whole parameter, taken on first use, while it still holds the base value)."""
    if state.sources is not None:
        return state.sources.read(name, param.dtype, rows)
    if name not in state.backups:
        state.backups[name] = param.detach().to("cpu", copy=True)
    return state.backups[name][rows]


def _row_chunks(param: torch.Tensor) -> list[slice]:
    """Slices of dim 0 of at most CHUNK_ELEMENTS values each: a weight is read, summed and written a few MB at a
    time, so the memory beyond the model's stays a few MB whatever the layer (a 14B FFN weight is 70M values)."""
    step = max(1, CHUNK_ELEMENTS // max(1, param[0].numel()))
    return [slice(start, min(start + step, param.shape[0])) for start in range(0, param.shape[0], step)]


# inference_mode, not no_grad: fp8 storage's casting hooks reassign weights during inference-mode forward passes,
# which makes them inference tensors, and those (and views of them, as the row chunks are) may be written in place
# only inside inference mode; ordinary weights may be written there as well.
@torch.inference_mode()
def _restore(params: dict[str, torch.Tensor], state: LoraPatches, names) -> None:
    for name in list(names):
        for rows in _row_chunks(params[name]):
            params[name][rows].copy_(_base_value(state, name, params[name], rows))
        state.patched.discard(name)
        state.backups.pop(name, None)


@torch.inference_mode()
def _restore_base(transformer: torch.nn.Module, state: LoraPatches) -> None:
    _restore(dict(transformer.named_parameters()), state, state.patched | state.backups.keys())
    state.signature, state.report = (), LoraReport()


@torch.inference_mode()
def _patch(transformer: torch.nn.Module, state: LoraPatches, wanted: dict[str, list]) -> int:
    """Restore the weights the new stack leaves alone, then write base + deltas into the ones it changes, one
    chunk of rows at a time (_row_chunks)."""
    params = dict(transformer.named_parameters())
    _restore(params, state, [name for name in state.patched if name not in wanted])
    for name, contributions in wanted.items():
        param = params[name]
        state.patched.add(name)  # before the first write: an interrupt inside it still restores this weight
        for rows in _row_chunks(param):
            patched = _base_value(state, name, param, rows).to(param.device, COMPUTE_DTYPE, copy=True)
            for scale, delta, kind in contributions:
                if kind == "weight":
                    delta.add_to_weight(patched, scale, rows)
                else:  # a bias or a modulation table: a whole-tensor delta
                    patched.add_((delta.diff_b if kind == "bias" else delta.diff_m)[rows].to(patched), alpha=scale)
            param[rows].copy_(patched)  # fp8 and other storage dtypes: cast once, after the sum, into the weight
            del patched  # freed before the next chunk's base value is read
    return len(wanted)
