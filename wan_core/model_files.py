"""Which files make a model: the tiny preset, a ComfyUI models folder with the standard names, or explicit files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import WanInputError
from .tiny import tiny_model_paths

# ComfyUI's repackaged Wan 2.1 file names, by folder, as the official workflows use them.
STANDARD_FILES = {
    "i2v": "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
    "t2v": "diffusion_models/wan2.1_t2v_14B_fp16.safetensors",
    "vae": "vae/wan_2.1_vae.safetensors",
    "text_encoder": "text_encoders/umt5_xxl_fp16.safetensors",
    "clip_vision": "clip_vision/clip_vision_h.safetensors",
}


@dataclass
class ModelFiles:
    diffusion_model: Path
    vae: Path
    text_encoder: Path
    clip_vision: Path | None = None


def resolve_model_files(model: str | None, task: str, diffusion_model=None, vae=None, text_encoder=None,
                        clip_vision=None) -> ModelFiles:
    """`model` is 'tiny' or a ComfyUI models folder; explicit files override its defaults. task is 'i2v' or 'v2v'."""
    if model == "tiny":
        paths = {key: str(path) for key, path in tiny_model_paths().items()}
    elif model:
        folder = Path(model)
        if not folder.is_dir():
            raise WanInputError(f"model={model!r} is neither 'tiny' nor a folder (a ComfyUI models folder)")
        paths = {key: str(folder / name) for key, name in STANDARD_FILES.items()}
    else:
        paths = {}
    chosen = {
        "diffusion_model": diffusion_model or paths.get("i2v" if task == "i2v" else "t2v"),
        "vae": vae or paths.get("vae"),
        "text_encoder": text_encoder or paths.get("text_encoder"),
        "clip_vision": clip_vision or paths.get("clip_vision"),
    }
    for name in ("diffusion_model", "vae", "text_encoder"):
        if not chosen[name]:
            raise WanInputError(f"no {name.replace('_', ' ')} file: give --model tiny, --model MODELS_DIR or "
                                f"--{name.replace('_', '-')} FILE")
        if not Path(chosen[name]).is_file():
            raise WanInputError(f"{name.replace('_', ' ')} file {chosen[name]!r}: no such file")
    clip = chosen["clip_vision"]
    return ModelFiles(Path(chosen["diffusion_model"]), Path(chosen["vae"]), Path(chosen["text_encoder"]),
                      Path(clip) if clip and Path(clip).is_file() else None)
