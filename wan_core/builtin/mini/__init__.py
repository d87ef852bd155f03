"""The mini Wan 2.1 I2V model: the real architecture, small, trained on this project's own data by
`python -m wan_core train-mini` (wan_core/builtin/train_mini.py). Its files ship here in ComfyUI's folder layout
and load through the same code path as real weights.

    from wan_core.builtin.mini import load_mini
    models = load_mini()            # a WanModels, ready for sampling.pipeline.generate_i2v
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ...errors import WanInputError

MINI_DIR = Path(__file__).resolve().parent
MINI_FILES = {
    "i2v": ("diffusion_models", "wan2.1_mini_i2v.safetensors"),
    "vae": ("vae", "wan2.1_mini_vae.safetensors"),
    "text_encoder": ("text_encoders", "umt5_mini.safetensors"),
    "clip_vision": ("clip_vision", "clip_vision_mini.safetensors"),
}
MINI_LORA = "loras/wan21_mini_sepia_lora.safetensors"


def mini_model_paths(folder=None) -> dict[str, Path]:
    """{component: file} of the mini model (the shipped files, or those a training run wrote into `folder`),
    plus "lora": the sepia LoRA. A missing file is a clear error."""
    folder = Path(folder) if folder else MINI_DIR
    paths = {component: folder / sub / name for component, (sub, name) in MINI_FILES.items()}
    paths["lora"] = folder / MINI_LORA
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise WanInputError(f"the mini model lacks {missing}: train it with `python -m wan_core train-mini`")
    return paths


def load_mini(dtype=torch.float32, device="cpu", folder=None, **options):
    """The mini model as a WanModels, in one call (options go to sampling.models.load_models)."""
    from ...sampling.models import load_models

    paths = mini_model_paths(folder)
    return load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"], dtype, device,
                       **options)


def write_mini_models(models_dir) -> list[Path]:
    """Copy the mini files (and its LoRA) into a ComfyUI models folder: diffusion_models/, vae/, ..., loras/."""
    written = []
    for source in mini_model_paths().values():
        target = Path(models_dir) / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    return written
