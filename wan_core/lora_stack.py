"""The LoRA stack value shared by local sampling and the hosted APIs: an ordered list of (source, scale)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import WanInputError, check_range

MAX_LORAS_PER_NODE = 3
SCALE_RANGE = (0.0, 4.0)


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

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


LoraStack = tuple[LoraEntry, ...]


def extend_stack(stack: LoraStack | None, entries: list[LoraEntry]) -> LoraStack:
    """A new stack: the incoming one followed by at most MAX_LORAS_PER_NODE new entries."""
    if len(entries) > MAX_LORAS_PER_NODE:
        raise WanInputError(f"{len(entries)} LoRAs given to one stack node: allowed at most {MAX_LORAS_PER_NODE}")
    return tuple(stack or ()) + tuple(entries)
