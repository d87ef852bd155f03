"""The LoRA stack value shared by local sampling and the hosted APIs: an ordered list of (source, scale)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import WanInputError, check_range

MAX_LORAS_PER_NODE = 3
MAX_LORAS = 3  # in a whole stack, as the hosted APIs take them
SCALE_RANGE = (0.0, 4.0)
SCALE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)", re.ASCII)
HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA: source is a file path, a hub repo id (optionally with weight_name) or an http(s) URL."""

    source: str
    scale: float = 1.0
    weight_name: str | None = None

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source.strip():
            raise WanInputError(f"lora source={self.source!r} is empty: give a file, a hub repo id or a URL")
        check_range(f"scale of LoRA {self.source!r}", self.scale, *SCALE_RANGE)

    @classmethod
    def from_text(cls, text: str, scale: float = 1.0) -> LoraEntry:
        """'owner/name', 'owner/name/file.safetensors' (a repo holding several), an http(s) URL or a file path."""
        entry = cls(text.strip(), scale)
        parts = entry.source.split("/")  # a URL has an empty part after "https:"
        if len(parts) > 2 and all(parts) and not entry.is_local_path:
            in_repo = cls("/".join(parts[:2]), scale, "/".join(parts[2:]))
            if in_repo.is_hub_repo:
                return in_repo
        return entry

    @property
    def text(self) -> str:
        """The entry as written: owner/name/file.safetensors for a file of a hub repo."""
        return f"{self.source}/{self.weight_name}" if self.weight_name else self.source

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    @property
    def is_local_path(self) -> bool:
        return self.source.startswith(("/", ".", "~")) or Path(self.source).expanduser().exists()

    @property
    def is_hub_repo(self) -> bool:
        """owner/name, and neither a weight file's name nor a path on this machine."""
        return bool(HUB_REPO_ID.match(self.source)) and not self.source.endswith(WEIGHT_FILE_SUFFIXES) \
            and not self.is_local_path


LoraStack = tuple[LoraEntry, ...]


def extend_stack(stack: LoraStack | None, entries: list[LoraEntry],
                 given: str = "{} LoRAs given to one stack node") -> LoraStack:
    """A new stack: the incoming one followed by at most MAX_LORAS_PER_NODE new entries, MAX_LORAS in all. given
    words the count of new entries as the user gave them (a node's slots, a repeated option)."""
    if len(entries) > MAX_LORAS_PER_NODE:
        raise WanInputError(f"{given.format(len(entries))}: allowed at most {MAX_LORAS_PER_NODE}")
    combined = tuple(stack or ()) + tuple(entries)
    if len(combined) > MAX_LORAS:
        names = ", ".join(entry.source for entry in combined)
        raise WanInputError(f"a LoRA stack of {len(combined)} ({names}): allowed at most {MAX_LORAS}, "
                            "as the hosted Wan APIs take")
    return combined


def stack_from_options(values: list[str], option: str = "--lora") -> LoraStack:
    """Command-line SOURCE[:SCALE] values -> a stack; the scale is the text after the last ':' when it is a number,
    so URLs and Windows drives keep their own ':'."""
    entries = []
    for value in values:
        source, _, scale = value.rpartition(":")
        entries.append(LoraEntry.from_text(source, float(scale)) if source and SCALE_NUMBER.fullmatch(scale)
                       else LoraEntry.from_text(value))
    return extend_stack(None, entries, given=f"{option} given {{}} times")
