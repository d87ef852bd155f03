"""The UMT5 tokenizer for a text encoder file, found without the network.

Order of search, first hit wins:
1. the sentencepiece model embedded in the file as the `spiece_model` tensor (ComfyUI's umt5 files carry one);
2. a tokenizer folder given explicitly, or next to the file: `tokenizer/` beside it or one level up (diffusers
   folders: `text_encoder/` and `tokenizer/` are siblings), `google/umt5-xxl/` beside it (the Wan-AI release);
3. the huggingface_hub cache ($HF_HOME/hub), with `local_files_only=True`: `google/umt5-xxl`, then the
   `tokenizer/` folder of the Wan-AI diffusers repositories.
With none of these the error says where to put the files. Nothing is ever downloaded here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import T5Tokenizer

from ..errors import WanInputError

TOKENIZER_TENSOR = "spiece_model"  # ComfyUI's text encoder files embed the sentencepiece model under this key
TOKENIZER_FILES = ("spiece.model", "tokenizer.json")
# (repo id, subfolder) pairs whose tokenizer is Wan 2.1's UMT5 tokenizer, most common first.
HUB_TOKENIZERS = (
    ("google/umt5-xxl", None),
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "tokenizer"),
    ("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", "tokenizer"),
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "tokenizer"),
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "tokenizer"),
)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def folders_near(text_encoder_path: Path) -> list[Path]:
    base = text_encoder_path if text_encoder_path.is_dir() else text_encoder_path.parent
    return [base / "tokenizer", base.parent / "tokenizer", base / "google" / "umt5-xxl"]


def from_hub_cache() -> Path | None:
    """A tokenizer folder already in the huggingface_hub cache, or None. Offline by construction."""
    for repo_id, subfolder in HUB_TOKENIZERS:
        for name in TOKENIZER_FILES:
            try:
                return Path(hf_hub_download(repo_id, name, subfolder=subfolder, local_files_only=True)).parent
            except (LocalEntryNotFoundError, OSError, ValueError):
                continue
    return None


def load_tokenizer(checkpoint, tokenizer_dir=None) -> T5Tokenizer:
    """The tokenizer for the text encoder `checkpoint` (a loading.Checkpoint), searched as the module says."""
    if TOKENIZER_TENSOR in checkpoint.shapes:
        with tempfile.TemporaryDirectory() as folder:
            checkpoint.tensor(TOKENIZER_TENSOR).numpy().tofile(Path(folder) / "spiece.model")
            return T5Tokenizer.from_pretrained(folder, extra_ids=0)
    if tokenizer_dir is not None and not _has_tokenizer(Path(tokenizer_dir)):
        raise WanInputError(f"tokenizer folder {str(tokenizer_dir)!r} holds neither of {list(TOKENIZER_FILES)}")
    candidates = [Path(tokenizer_dir)] if tokenizer_dir is not None else folders_near(checkpoint.path)
    folder = next((c for c in candidates if _has_tokenizer(c)), None) or from_hub_cache()
    if folder is None:
        checkpoint.fail(
            f"carries no tokenizer ({TOKENIZER_TENSOR!r} tensor), there is no tokenizer folder at "
            f"{str(candidates[0])!r}, and the huggingface_hub cache has no google/umt5-xxl tokenizer (offline, "
            "nothing is downloaded): put google/umt5-xxl's spiece.model (or tokenizer.json) in that folder, "
            "or use ComfyUI's umt5_xxl text encoder file, which embeds it"
        )
    return T5Tokenizer.from_pretrained(str(folder))
