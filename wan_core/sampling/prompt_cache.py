"""Prompt embeddings computed once: UMT5-XXL (11 GB in bf16) runs only for a prompt it has not encoded before.

A run that changes only the seed, steps, LoRA stack, size or image asks for the same embeddings again, so they are
kept, keyed by what decides them: the text encoder's files (path, size, modification time: files/checkpoint.
file_identity), how its weights are stored and computed (weight storage, compute dtype, device type) and the text
itself. Kept are the states of the prompt's real tokens only (the 512-token padding is zeros, added back on use),
so an entry is a few hundred KB.

Two levels. Memory: a process-wide LRU of MEMORY_ENTRIES entries (ComfyUI, Python callers). Disk (the command line,
whose process ends after one run): one small safetensors file per prompt under $WANFLOW_CACHE/prompts, the least
recently used removed beyond `max_bytes`, all of them removed by `python -m wan_core cache clear`. The key needs no
loaded encoder, so a command line run whose prompts are all on disk never reads the text encoder's file
(models.load_models' lazy_text_encoder).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..cache import wanflow_cache_dir

log = logging.getLogger("wanflow")
MEMORY_ENTRIES = 64
DISK_LIMIT_MB = 256  # default bound of the on-disk cache; $WANFLOW_PROMPT_CACHE_MB overrides it
TENSOR = "states"


def disk_folder() -> Path:
    return wanflow_cache_dir() / "prompts"


def disk_limit_bytes() -> int:
    return int(float(os.environ.get("WANFLOW_PROMPT_CACHE_MB") or DISK_LIMIT_MB) * 2**20)


class PromptCache:
    """Prompt states by key (a tuple of str / int values, see conditioning.prompt_key), in memory and optionally on
    disk. Values are CPU tensors; callers move them where they compute."""

    def __init__(self, entries: int = MEMORY_ENTRIES, folder: Path | None = None, max_bytes: int | None = None):
        self.entries, self.folder = entries, None if folder is None else Path(folder)
        self.max_bytes = disk_limit_bytes() if max_bytes is None else max_bytes
        self._memory: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, key: tuple) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        states = self._read(key)
        if states is not None:
            self._remember(key, states)
        return states

    def put(self, key: tuple, states: torch.Tensor) -> None:
        states = states.detach().to("cpu", copy=True).contiguous()
        self._remember(key, states)
        if self.folder is not None:
            self._write(key, states)

    def clear(self) -> int:
        """Forget every prompt, in memory and on disk; returns the number of files removed."""
        self._memory.clear()
        return clear_folder(self.folder) if self.folder is not None else 0

    def _remember(self, key: tuple, states: torch.Tensor) -> None:
        self._memory[key] = states
        self._memory.move_to_end(key)
        while len(self._memory) > self.entries:
            self._memory.popitem(last=False)

    def _path(self, key: tuple) -> Path:
        return self.folder / (hashlib.sha256(repr(key).encode()).hexdigest() + ".safetensors")

    def _read(self, key: tuple) -> torch.Tensor | None:
        if self.folder is None or not self._path(key).is_file():
            return None
        path = self._path(key)
        try:
            states = load_file(str(path))[TENSOR]
            os.utime(path)  # recently used: evicted last
        except (SafetensorError, OSError, KeyError) as error:  # a half-written or foreign file: encode again
            log.warning("WanFlow: ignoring the unreadable cached prompt %s (%s)", path, error)
            return None
        return states

    def _write(self, key: tuple, states: torch.Tensor) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self._path(key).with_suffix(".partial")
            save_file({TENSOR: states}, str(partial))
            partial.replace(self._path(key))  # atomic: a reader never sees half a file
            self._evict()
        except OSError as error:  # a full or read-only disk costs the next run an encoding, not this run
            log.warning("WanFlow: could not write the prompt cache in %s (%s)", self.folder, error)

    def _evict(self) -> None:
        """Remove the least recently used files until the folder is within max_bytes."""
        files = sorted(self.folder.glob("*.safetensors"), key=lambda path: path.stat().st_mtime_ns)
        total = sum(path.stat().st_size for path in files)
        for path in files:
            if total <= self.max_bytes:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)


def clear_folder(folder: Path) -> int:
    removed = 0
    for path in [*Path(folder).glob("*.safetensors"), *Path(folder).glob("*.partial")]:
        path.unlink(missing_ok=True)
        removed += 1
    return removed


# Shared by every loaded model of the process: its keys name the text encoder, so models that share one (ComfyUI
# graphs with different diffusion models, a reloaded model) share its prompts.
SHARED_PROMPTS = PromptCache()
