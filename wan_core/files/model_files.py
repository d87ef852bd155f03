"""Which files make a model: the tiny preset, a model folder (ComfyUI, diffusers, Wan-AI), or explicit files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WanInputError
from .folders import COMFY_FOLDERS, files_in_folder, folder_layout
from ..tiny import tiny_model_paths


@dataclass
class ModelFiles:
    diffusion_model: Path
    vae: Path
    text_encoder: Path
    clip_vision: Path | None = None
    tokenizer: Path | None = None  # a tokenizer folder, for text encoder files that embed none


def _explicit(value, folder: Path | None, component: str) -> Path:
    """An explicit file: a path as given, or a bare file name inside a ComfyUI models folder's subfolder."""
    path = Path(value)
    if not path.exists() and folder is not None and len(path.parts) == 1 and folder_layout(folder) == "comfyui":
        return folder / COMFY_FOLDERS[component] / path
    return path


def resolve_model_files(model: str | None, task: str, diffusion_model=None, vae=None, text_encoder=None,
                        clip_vision=None, *, tokenizer=None) -> ModelFiles:
    """`model` is 'tiny', 'mini' or a model folder; explicit files override its defaults. task is 'i2v' or 'v2v'.

    In a ComfyUI models folder an explicit value may be a bare file name (as ComfyUI's loaders list them):
    `diffusion_model="wan2.1_i2v_720p_14B_bf16.safetensors"` means diffusion_models/ of that folder.
    """
    folder = None
    if model == "mini":  # the trained mini model shipped in wan_core/builtin/mini (image-to-video only)
        from ..builtin.mini import mini_model_paths

        paths = mini_model_paths()
        paths["diffusion_model"] = paths["i2v"]
    elif model == "tiny":
        paths = {key: path for key, path in tiny_model_paths().items()}
        paths["diffusion_model"] = paths["i2v"] if task == "i2v" else paths["t2v"]
    elif model:
        folder = Path(model)
        if not folder.is_dir():
            raise WanInputError(f"model={model!r} is neither 'tiny' nor a folder (a ComfyUI models folder, a "
                                "diffusers folder or the Wan-AI release), nor 'mini'")
        paths = files_in_folder(folder, task)
    else:
        paths = {}
    given = {"diffusion_model": diffusion_model, "vae": vae, "text_encoder": text_encoder, "clip_vision": clip_vision}
    chosen = {name: _explicit(value, folder, name) if value else paths.get(name) for name, value in given.items()}
    for name in ("diffusion_model", "vae", "text_encoder"):
        if not chosen[name]:
            raise WanInputError(f"no {name.replace('_', ' ')} file: give --model tiny, --models-dir DIR or "
                                f"--{name.replace('_', '-')} FILE")
        if not Path(chosen[name]).exists():
            raise WanInputError(f"{name.replace('_', ' ')} file {str(chosen[name])!r}: no such file")
    clip = chosen["clip_vision"]
    if clip_vision and not Path(clip).exists():
        raise WanInputError(f"clip vision file {str(clip)!r}: no such file")
    tokenizer = Path(tokenizer) if tokenizer else paths.get("tokenizer")
    return ModelFiles(Path(chosen["diffusion_model"]), Path(chosen["vae"]), Path(chosen["text_encoder"]),
                      Path(clip) if clip and Path(clip).exists() else None, tokenizer)
