"""Which files make a model inside a folder: ComfyUI's `models/`, a diffusers folder, or the Wan-AI release.

A folder is recognised by what it holds, never by its name:
- diffusers: `model_index.json` or `transformer/` (sharded safetensors with an index json), `vae/`,
  `text_encoder/`, `tokenizer/`, `image_encoder/` (and `image_processor/`, whose settings follow from the
  image encoder's shapes, so we do not read it);
- Wan-AI release: `diffusion_pytorch_model*.safetensors` (one file, or shards with their index json),
  `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`, the `google/umt5-xxl/` tokenizer and, in the I2V
  releases, `models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`, whose vision tower is the CLIP vision
  encoder (loading.load_clip_vision reads it; an explicit clip_vision file still takes precedence);
- ComfyUI: `diffusion_models/`, `vae/`, `text_encoders/`, `clip_vision/` with ComfyUI's repackaged names.
Anything else is refused with the three layouts spelled out.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WanInputError

COMFY_FOLDERS = {"diffusion_model": "diffusion_models", "vae": "vae", "text_encoder": "text_encoders",
                 "clip_vision": "clip_vision"}
# ComfyUI's repackaged file names, most likely first; the first present is used.
COMFY_NAMES = {
    "i2v": [f"wan2.1_i2v_{res}_14B_{precision}.safetensors" for res in ("480p", "720p")
            for precision in ("fp16", "bf16", "fp8_scaled", "fp8_e4m3fn")],
    "t2v": [f"wan2.1_t2v_{size}_{precision}.safetensors" for size in ("14B", "1.3B")
            for precision in ("fp16", "bf16", "fp8_scaled", "fp8_e4m3fn")],
    "vae": ["wan_2.1_vae.safetensors"],
    "text_encoder": ["umt5_xxl_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"],
    "clip_vision": ["clip_vision_h.safetensors"],
}
WAN_RELEASE_FILES = {"vae": "Wan2.1_VAE.pth", "text_encoder": "models_t5_umt5-xxl-enc-bf16.pth",
                     "clip_vision": "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"}
KNOWN_LAYOUTS = (
    "a ComfyUI models folder (diffusion_models/, vae/, text_encoders/, clip_vision/), "
    "a diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, image_encoder/), "
    "or the Wan-AI release (diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, "
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth)"
)


def folder_layout(folder: Path) -> str:
    """'diffusers', 'wan-ai' or 'comfyui'; a folder with none of their marks is a WanInputError."""
    if (folder / "model_index.json").is_file() or (folder / "transformer").is_dir():
        return "diffusers"
    if any((folder / name).is_file() for name in WAN_RELEASE_FILES.values()) or \
            any(folder.glob("diffusion_pytorch_model*.safetensors")):
        return "wan-ai"
    if any((folder / sub).is_dir() for sub in COMFY_FOLDERS.values()):
        return "comfyui"
    raise WanInputError(f"model folder {str(folder)!r} has no known layout: expected {KNOWN_LAYOUTS}")


def _first_present(folder: Path, names: list[str]) -> Path:
    """The first of names that exists, else the first name (so that the missing-file error names the default)."""
    return next((folder / name for name in names if (folder / name).exists()), folder / names[0])


def _if_dir(path: Path) -> Path | None:
    return path if path.is_dir() else None


def comfy_file(models_dir: Path, component: str, name: str) -> Path:
    return models_dir / COMFY_FOLDERS[component] / name


def files_in_folder(folder: Path, task: str) -> dict[str, Path | None]:
    """{diffusion_model, vae, text_encoder, clip_vision, tokenizer: path} for a model folder of any layout.

    task 'i2v' wants an image-to-video diffusion model; 'v2v' works with either kind, text-to-video first.
    """
    layout = folder_layout(folder)
    if layout == "diffusers":
        return {"diffusion_model": folder / "transformer", "vae": folder / "vae",
                "text_encoder": folder / "text_encoder", "tokenizer": _if_dir(folder / "tokenizer"),
                "clip_vision": folder / "image_encoder" if (folder / "image_encoder").is_dir() else None}
    if layout == "wan-ai":
        index = folder / "diffusion_pytorch_model.safetensors.index.json"
        return {"diffusion_model": index if index.is_file() else folder / "diffusion_pytorch_model.safetensors",
                "vae": folder / WAN_RELEASE_FILES["vae"], "text_encoder": folder / WAN_RELEASE_FILES["text_encoder"],
                "tokenizer": _if_dir(folder / "google" / "umt5-xxl"),
                "clip_vision": folder / WAN_RELEASE_FILES["clip_vision"]}
    models = {"i2v": COMFY_NAMES["i2v"], "v2v": COMFY_NAMES["t2v"] + COMFY_NAMES["i2v"]}[task]
    return {"diffusion_model": _first_present(folder / COMFY_FOLDERS["diffusion_model"], models),
            **{component: _first_present(folder / COMFY_FOLDERS[component], COMFY_NAMES[component])
               for component in ("vae", "text_encoder", "clip_vision")},
            "tokenizer": None}
