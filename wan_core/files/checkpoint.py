"""Checkpoint sources: one interface (`shapes`, `tensor(key)`) over every file format a Wan user may have.

- a single safetensors file (ComfyUI's repackaged files, diffusers' single files), memory-mapped;
- sharded safetensors (`diffusion_pytorch_model-00001-of-00007.safetensors` with its `.index.json`: the
  Wan-AI release and diffusers folders), each shard memory-mapped;
- the original release's `.pth` files, read with `torch.load(weights_only=True, mmap=True)`: no code runs and
  the data stays on disk until a tensor is asked for;
- ComfyUI's "fp8 scaled" files (e.g. `umt5_xxl_fp8_e4m3fn_scaled.safetensors`), in any of those: they carry a
  `scaled_fp8` marker tensor and, next to each quantised `X.weight`, a scalar `X.scale_weight` (and sometimes
  `X.scale_input`, used only by fp8 matrix multiplication). The real weight is `weight.float() * scale_weight`,
  what ComfyUI's `scaled_fp8_ops.convert_weight` computes; the reader applies that product in float32 as each
  tensor is read and hides the marker and scale tensors, so a scaled file loads exactly like an unscaled one.

Shapes are read without touching tensor data, so a wrong file is refused before anything heavy happens.
Every file is opened read-only: loading never changes anything on disk.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open

from ..errors import WanInputError

SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class TensorPart(NamedTuple):
    """Where a module parameter comes from when it is not a whole file tensor: rows `rows` (a slice(start, stop))
    of dim 0 of `key`, e.g. q, k or v of a fused projection, viewed in `shape`."""

    key: str
    shape: tuple
    rows: slice | None = None


def source_key(source: str | TensorPart) -> str:
    """The file tensor a parameter's source reads from."""
    return source if isinstance(source, str) else source.key


class Checkpoint:
    """Common part: where it is, which slot it was given for, and how to refuse it with both named."""

    path: Path
    role: str
    shapes: dict[str, tuple]
    # cheap to keep for reading some tensors again later: the safetensors readers hold only the header
    rereadable = True

    def tensor(self, key: str, rows: slice | None = None) -> torch.Tensor:
        """A fresh tensor; with rows, only those rows of dim 0 are read (the rest of the tensor is never copied)."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files this checkpoint reads from (file_identity tells whether any changed since)."""
        return [self.path]

    def shape_of(self, source: str | TensorPart) -> tuple:
        return self.shapes[source] if isinstance(source, str) else source.shape

    def read(self, source: str | TensorPart) -> torch.Tensor:
        if isinstance(source, str):
            return self.tensor(source)
        return self.tensor(source.key, source.rows).reshape(source.shape)  # a fresh tensor: reshape is a view

    def fail(self, message: str):
        raise WanInputError(f"{self.role} file {str(self.path)!r} {message}")


class SafetensorsFile(Checkpoint):
    """A safetensors file: keys and shapes from its header, then each tensor read once into a fresh buffer.

    safetensors' own reader validates the file (header, sizes, truncation) and gives the shapes. Tensor data is
    then read with plain positioned reads into a newly allocated tensor instead of returned as a view of
    safetensors' memory map: a mapped page that has been touched counts as resident memory for as long as the
    map lives, which would double the peak while loading; and a fresh allocation is aligned the same way
    whatever the file's layout, so the same weights give bit-identical outputs from every layout.
    """

    def __init__(self, path, role: str):
        self.path, self.role = Path(path), role
        if not self.path.is_file():
            raise WanInputError(f"{role} file {str(self.path)!r}: no such file")
        try:
            with safe_open(str(self.path), framework="pt") as checked:
                self.shapes = {key: tuple(checked.get_slice(key).get_shape()) for key in checked.keys()}
            self._entries, self._data_start = _read_header(self.path)
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise WanInputError(
                f"{role} file {str(self.path)!r} is not a readable safetensors file ({error}); "
                "give a .safetensors file such as ComfyUI's repackaged Wan 2.1 files"
            ) from None

    def tensor(self, key: str, rows: slice | None = None) -> torch.Tensor:
        entry = self._entries[key]
        begin, end = entry["data_offsets"]
        shape = self.shapes[key]
        if rows is not None:  # rows of dim 0 are one contiguous byte range
            row_bytes = (end - begin) // shape[0]
            begin, end = begin + rows.start * row_bytes, begin + rows.stop * row_bytes
            shape = (rows.stop - rows.start, *shape[1:])
        tensor = torch.empty(shape, dtype=SAFETENSORS_DTYPES[entry["dtype"]])
        buffer = tensor.view(-1).view(torch.uint8).numpy() if tensor.numel() else None
        if buffer is None:
            return tensor
        try:
            with open(self.path, "rb", buffering=0) as file:
                file.seek(self._data_start + begin)
                read = file.readinto(memoryview(buffer))
        except OSError as error:
            self.fail(f"could not be read at {key!r}: {error}")
        if read != end - begin:
            self.fail(f"is truncated or corrupt at {key!r}: {read} of {end - begin} bytes")
        return tensor


SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def _read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header (an 8-byte little-endian length, then JSON): {key: entry}, data start offset."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


class ShardedSafetensors(Checkpoint):
    """Several safetensors shards read as one checkpoint; the index json says which shard holds which key."""

    def __init__(self, path, role: str, shard_paths: list[Path]):
        self.path, self.role = Path(path), role
        self._shard_of, self.shapes = {}, {}
        for shard_path in shard_paths:
            shard = SafetensorsFile(shard_path, role)
            for key, shape in shard.shapes.items():
                self._shard_of[key], self.shapes[key] = shard, shape

    def files(self) -> list[Path]:
        return sorted({shard.path for shard in self._shard_of.values()})

    def tensor(self, key: str, rows: slice | None = None) -> torch.Tensor:
        return self._shard_of[key].tensor(key, rows)


class TorchPickleFile(Checkpoint):
    """A `.pth` state dict, memory-mapped; `weights_only=True` refuses anything that is not plain tensors."""

    rereadable = False  # kept alive, its memory map's touched pages stay counted as resident memory

    def __init__(self, path, role: str):
        self.path, self.role = Path(path), role
        if not self.path.is_file():
            raise WanInputError(f"{role} file {str(self.path)!r}: no such file")
        try:
            state = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WanInputError(
                f"{role} file {str(self.path)!r} is not a readable PyTorch state dict ({first_line}); "
                "give a .safetensors file or the original Wan-AI .pth file"
            ) from None
        for wrapper in ("state_dict", "model", "module"):  # some trainers nest the weights one level down
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        if not isinstance(state, dict):
            self.fail(f"holds a {type(state).__name__}, not a state dict of tensors")
        self._state = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
        self.shapes = {key: tuple(value.shape) for key, value in self._state.items()}

    def tensor(self, key: str, rows: slice | None = None) -> torch.Tensor:
        # a fresh, aligned copy: the mapped file stays read-only and the layout cannot change the numbers
        return (self._state[key] if rows is None else self._state[key][rows]).clone()


def _shards_for(path: Path, role: str) -> list[Path] | None:
    """The shard list when `path` is an index json, a folder of shards, or one shard of a set; else None."""
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        singles = sorted(path.glob("*.safetensors"))
        if indexes:
            path = indexes[0]
        elif len(singles) == 1:
            return [singles[0]]
        elif singles and all(SHARD_NAME.match(p.name) for p in singles):
            path = singles[0]
        else:
            raise WanInputError(
                f"{role} folder {str(path)!r} holds no safetensors weights we can read as one model "
                f"(found {[p.name for p in singles][:5] or 'no .safetensors files'}); give the model file itself"
            )
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise WanInputError(f"{role} index {str(path)!r} is not a safetensors index json ({error})") from None
        shards = [path.parent / name for name in sorted(set(weight_map.values()))]
    elif match := SHARD_NAME.match(path.name):
        count = int(match["count"])
        shards = [path.parent / f"{match['stem']}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    else:
        return None
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise WanInputError(f"{role} {str(path)!r} is a sharded checkpoint with shards missing: {missing}; "
                            "download every shard into the same folder")
    return shards


def open_checkpoint(path, role: str) -> Checkpoint:
    """The right reader for a file or folder, with scaled-fp8 weights presented already dequantised."""
    path = Path(path)
    if not path.exists():
        raise WanInputError(f"{role} file {str(path)!r}: no such file or folder")
    shards = _shards_for(path, role)
    if shards is not None and len(shards) > 1:
        checkpoint = ShardedSafetensors(path, role, shards)
    elif shards is not None:
        checkpoint = SafetensorsFile(shards[0], role)
    elif path.suffix.lower() in TORCH_SUFFIXES:
        checkpoint = TorchPickleFile(path, role)
    else:
        checkpoint = SafetensorsFile(path, role)
    return wrap_scaled_fp8(checkpoint)


def file_identity(paths) -> tuple:
    """(path, size, modification time) of each file, or of each file under a folder: equal identities mean the
    same bytes for every practical purpose (a rewritten or replaced file changes its time), without reading them."""
    identity = []
    for path in map(Path, paths):
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            stat = file.stat()
            identity.append((str(file.resolve()), stat.st_size, stat.st_mtime_ns))
    return tuple(identity)


# ---- ComfyUI's scaled fp8 ---------------------------------------------------------------------------------------

SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIXES = (".scale_weight", ".scale_input")


class ScaledFp8Checkpoint(Checkpoint):
    """A ComfyUI scaled-fp8 checkpoint seen through its real weights: fp8 * scale_weight, in float32."""

    def __init__(self, inner: Checkpoint):
        self.inner, self.path, self.role = inner, inner.path, inner.role
        self.shapes = {key: shape for key, shape in inner.shapes.items()
                       if key != SCALED_FP8_MARKER and not key.endswith(SCALE_SUFFIXES)}

    @property
    def rereadable(self) -> bool:
        return self.inner.rereadable

    def files(self) -> list[Path]:
        return self.inner.files()

    def tensor(self, key: str, rows: slice | None = None) -> torch.Tensor:
        tensor = self.inner.tensor(key, rows)  # scale_weight is one number for the whole tensor
        scale_key = key.removesuffix(".weight") + ".scale_weight"
        if key.endswith(".weight") and scale_key in self.inner.shapes:
            return tensor.to(torch.float32) * self.inner.tensor(scale_key).to(torch.float32)
        return tensor


def wrap_scaled_fp8(checkpoint: Checkpoint) -> Checkpoint:
    """Present a scaled-fp8 file through its dequantised weights; any other checkpoint is returned unchanged."""
    if any(key == SCALED_FP8_MARKER or key.endswith("." + SCALED_FP8_MARKER) for key in checkpoint.shapes):
        return ScaledFp8Checkpoint(checkpoint)
    return checkpoint
