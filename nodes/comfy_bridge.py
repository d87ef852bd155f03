"""What every WanFlow node shares with ComfyUI: its types, model folders, memory manager, progress bar and Cancel."""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import folder_paths
import latent_preview
import torch
from comfy_api.v0_0_2 import io

from ..wan_core.errors import WanInputError
from ..wan_core.lora.stack import LoraStack
from ..wan_core.sampling.params import DTYPES

CATEGORY = "WanFlow"
WanModelType = io.Custom("WAN_MODEL")
WanLorasType = io.Custom("WAN_LORAS")
NONE = "none"
log = logging.getLogger("wanflow")


def folder_choices(kind: str, optional: bool = False) -> list[str]:
    """The files of one of ComfyUI's model folders, for a dropdown; `none` first where the input may be left empty."""
    return ([NONE] if optional else []) + folder_paths.get_filename_list(kind)


def missing_from_folders(*choices: tuple[str, str]) -> bool | str:
    """For validate_inputs, given (folder kind, file name) pairs: True, or a message naming each chosen file that
    is not in its folder. (ComfyUI 0.3.x does not check V3 dropdown values against their options itself.)"""
    missing = [f"{kind} file {name!r} is not in ComfyUI's {kind} folder ({', '.join(folder_paths.get_folder_paths(kind))})"
               for kind, name in choices if name != NONE and name not in folder_paths.get_filename_list(kind)]
    return "; ".join(missing) or True


def folder_file(kind: str, name: str) -> Path | None:
    """The chosen file's path (None for `none`); it may have gone since the prompt was validated."""
    if name == NONE:
        return None
    path = folder_paths.get_full_path(kind, name)
    if path is None:
        raise WanInputError(missing_from_folders((kind, name)))
    return Path(path)


# ---- progress, previews and Cancel ------------------------------------------------------------------------------


def step_progress(total_steps: int):
    """A wan_core progress callback: ComfyUI's bar advances each step with a latent preview, and a Cancel pressed
    in the queue raises here, so sampling stops within one step."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    bar = comfy.utils.ProgressBar(total_steps)
    previewer = latent_preview.get_previewer(compute_device(), comfy.latent_formats.Wan21())

    def progress(step):  # a wan_core SamplerStep
        # step.denoised [1, 16, T, h, w] is normalised like ComfyUI's Wan21 latent format, which its previewers expect
        preview = previewer.decode_latent_to_preview_image("JPEG", step.denoised) if previewer else None
        bar.update_absolute(step.i + 1, step.total, preview)

    return progress


# ---- loaded models -----------------------------------------------------------------------------------------------


class _Network(torch.nn.Module):
    """One network as ComfyUI's memory manager handles it. The wrapper is there because a ModelPatcher sets
    `.device` on its model, which diffusers' and transformers' modules have as a read-only property."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network


class _Streamed(torch.nn.Module):
    """A block-swapped transformer as ComfyUI's memory manager sees it (speed.enable_block_swap). Its swapped blocks
    wait on the CPU and diffusers' group offloading hooks copy each in for its turn, so ComfyUI must neither move
    them (a full load is `.to(device)` on the module) nor count all of the transformer: the transformer is held
    outside the module tree (a plain attribute, not a registered submodule), and the ModelPatcher is given the size
    the hooks and the resident blocks keep on the GPU at most (ModelPatcher's public `size` argument, what
    model_size() then reports), so ComfyUI frees that much before sampling and no more. The resident blocks are
    its one registered submodule: ComfyUI's load and unload move them, as a stage's placement does elsewhere."""

    def __init__(self, network: torch.nn.Module, resident: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "network", network)  # bypasses nn.Module's registration on purpose
        self.resident = resident


def network_patcher(name: str, network: torch.nn.Module, block_swap: bool,
                    resident_blocks: int = 0) -> comfy.model_patcher.ModelPatcher:
    devices = compute_device(), comfy.model_management.unet_offload_device()
    if name == "transformer" and block_swap:
        from ..wan_core.sampling.speed import block_swap_resident_bytes, resident_part

        return comfy.model_patcher.ModelPatcher(_Streamed(network, resident_part(network, resident_blocks)),
                                                *devices, size=block_swap_resident_bytes(network, resident_blocks))
    return comfy.model_patcher.ModelPatcher(_Network(network), *devices)


class _Stages:
    """WanModels.placement in ComfyUI: one ModelPatcher per network, and each stage has ComfyUI load the ones it
    names. So a stage's networks alone need to fit: ComfyUI evicts the others (and any other model) when VRAM is
    short, as it does between its own CLIPLoader, CLIPVisionLoader, UNETLoader and VAELoader models."""

    def __init__(self, models):
        self.patchers = {name: network_patcher(name, network, models.offload == "blocks", models.resident_blocks)
                         for name, network in models.networks().items()}
        self.changing = False  # True while a stage's own load makes room

    def __call__(self, _models, names: tuple[str, ...]):
        self.changing = True
        try:
            # force_full_load: ComfyUI loads a model partly by leaving layers on the offload device for comfy.ops
            # layers to cast on the fly; diffusers' and transformers' layers have no such casting, so a partial
            # load would compute with weights (and buffers) on two devices.
            comfy.model_management.load_models_gpu([self.patchers[name] for name in names], force_full_load=True)
        finally:
            self.changing = False


class LoadedWan:
    """One set of base weights in memory, registered with ComfyUI's memory manager one network at a time."""

    def __init__(self, models):
        self.models = models
        self.stages = models.placement = _Stages(models)
        models.device = compute_device()
        _release_when_unloaded(self)


# Every set of weights still held, by a WAN_MODEL output in ComfyUI's node cache or by kept_weights below: another
# LoadWanModel of the same files reuses it. Weak, so that what neither holds (after Free memory) is freed.
_loaded: weakref.WeakValueDictionary[tuple, LoadedWan] = weakref.WeakValueDictionary()
# ComfyUI's node cache drops a LoadWanModel's output before that node runs again with changed inputs (its LoRA
# stack, attention kernel, compile), which would leave nothing to reuse. So the weights handed out last are also
# kept here, until a LoadWanModel needs other files or ComfyUI's memory manager unloads them.
kept_weights: list[LoadedWan] = []


def _release_when_unloaded(loaded: LoadedWan):
    """Stop keeping the weights when ComfyUI unloads any of their networks (Free memory, room for other models):
    its memory manager detaches a model with unpatch_all=True then, and with False when it only loads the same
    model again. A network evicted to make room for this bundle's next stage is still in use: that one is kept."""
    this = weakref.ref(loaded)  # a strong reference from its own patchers would keep the weights past their use

    def on_detach(_patcher, unpatch_all: bool):
        if unpatch_all and this() in kept_weights and not this().stages.changing:
            kept_weights.remove(this())

    for patcher in loaded.stages.patchers.values():
        patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, on_detach)


def load_wan(files: tuple[Path, Path, Path, Path | None], dtype: torch.dtype, weight_storage: str,
             offload: str = "none", resident_blocks: int = 0) -> LoadedWan:
    """offload "blocks": the transformer's blocks stream to the GPU, all but the first `resident_blocks`
    (speed.enable_block_swap; checked by the node)."""
    from ..wan_core.sampling.models import load_models
    from ..wan_core.sampling.speed import enable_block_swap

    key = (*files, *(path.stat().st_mtime_ns for path in files if path), dtype, weight_storage, offload,
           resident_blocks)
    loaded = _loaded.get(key)
    if loaded is None:
        kept_weights.clear()  # the kept weights go first, unless a graph still holds them: not two models at once
        started = time.perf_counter()
        models = load_models(*files, dtype=dtype, device=comfy.model_management.unet_offload_device(),
                             weight_storage=weight_storage)
        if offload == "blocks":  # on the offload device now; the hooks copy each swapped block to the GPU for its turn
            enable_block_swap(models.transformer, compute_device(), resident_blocks)
            models.offload, models.resident_blocks = "blocks", resident_blocks
        loaded = _loaded[key] = LoadedWan(models)
        log.info("WanFlow: loaded %s in %.1f s", files[0].name, time.perf_counter() - started)
    else:
        log.info("WanFlow: reusing the loaded %s", files[0].name)
    kept_weights[:] = [loaded]
    return loaded


@dataclass
class WanModel:
    """The WAN_MODEL value: loaded weights plus the LoRA stack and speed settings this graph branch wants on them."""

    loaded: LoadedWan
    loras: LoraStack = field(default_factory=tuple)
    attention: str = "auto"
    compile: bool = False

    @contextmanager
    def configured(self, **run_settings):
        """The loaded WanModels with this branch's LoRAs and speed settings, plus run_settings (step_cache,
        vae_tiling), for the block (WanModels.configured); each stage then has ComfyUI load the networks it runs."""
        models = self.loaded.models
        with models.configured(loras=self.loras, attention=self.attention, compile=self.compile, **run_settings):
            if self.loras:
                log.info("WanFlow: %s", models.lora_report.summary())
            yield models


def compute_device() -> torch.device:
    return comfy.model_management.get_torch_device()


def compute_dtype(choice: str) -> torch.dtype:
    if choice != "auto":
        return DTYPES[choice]
    device = compute_device()
    if comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if comfy.model_management.should_use_fp16(device) else torch.float32
