"""`python -m wan_core download SET --models-dir DIR`: ComfyUI's repackaged Wan 2.1 files, in ComfyUI's layout.

Files come from the hub repository Comfy-Org/Wan_2.1_ComfyUI_repackaged (`split_files/<folder>/<name>`) and land
in `DIR/<folder>/<name>`, the layout ComfyUI and `--models-dir` read. huggingface_hub does the transfer: it
shows progress and, when a transfer breaks, resumes it with an HTTP Range request, within the run and on the
next run (the partial file waits in `DIR/.wanflow-download/`). A file already at its place with the size the
hub reports is skipped; one with another size is left alone and reported, never overwritten.
HF_ENDPOINT is honoured at call time (for mirrors and the tests' stand-in hub).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import WanInputError, check_choice

REPO_ID = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
REVISION = "main"
PRECISIONS = ("fp16", "bf16", "fp8_scaled", "fp8_e4m3fn")
SETS = {  # set name -> (diffusion model stem, precisions published for it, needs CLIP vision)
    "i2v-480p": ("wan2.1_i2v_480p_14B", PRECISIONS, True),
    "i2v-720p": ("wan2.1_i2v_720p_14B", PRECISIONS, True),
    "t2v-14b": ("wan2.1_t2v_14B", PRECISIONS, False),
    "t2v-1.3b": ("wan2.1_t2v_1.3B", ("fp16", "bf16"), False),
}
STAGING = ".wanflow-download"  # huggingface_hub's resumable partial files live here, inside the models folder


def set_files(name: str, precision: str = "fp16") -> list[str]:
    """The repository paths of a standard set, e.g. 'split_files/vae/wan_2.1_vae.safetensors'."""
    check_choice("set", name, list(SETS))
    stem, published, needs_clip = SETS[name]
    check_choice(f"precision for {name}", precision, published)
    text_encoder = "umt5_xxl_fp16" if precision in ("fp16", "bf16") else "umt5_xxl_fp8_e4m3fn_scaled"
    files = [f"split_files/diffusion_models/{stem}_{precision}.safetensors",
             "split_files/vae/wan_2.1_vae.safetensors",
             f"split_files/text_encoders/{text_encoder}.safetensors"]
    if needs_clip:
        files.append("split_files/clip_vision/clip_vision_h.safetensors")
    return files


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def remote_size(repo_path: str) -> int:
    """The file's size from the hub's metadata (a HEAD request); offline is a WanInputError."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(REPO_ID, repo_path, revision=REVISION, endpoint=hub_endpoint())
    try:
        metadata = get_hf_file_metadata(url)
    except Exception as error:  # httpx / huggingface_hub raise many kinds; all mean "cannot ask the hub"
        raise WanInputError(f"cannot reach the hub for {REPO_ID}/{repo_path} at {url} ({type(error).__name__}: "
                            f"{error}); check the network or HF_ENDPOINT, or copy the file into the models "
                            "folder yourself") from None
    if metadata.size is None:
        raise WanInputError(f"the hub gave no size for {REPO_ID}/{repo_path}")
    return metadata.size


def fetch(repo_path: str, models_dir: Path) -> tuple[Path, str]:
    """Download one file into models_dir/<folder>/<name>; returns (path, 'skipped' | 'downloaded')."""
    from huggingface_hub import hf_hub_download

    target = models_dir / Path(repo_path).relative_to("split_files")
    size = remote_size(repo_path)
    if target.exists():
        if target.stat().st_size == size:
            return target, "skipped"
        raise WanInputError(f"{target} exists with {target.stat().st_size} bytes but the hub's file has {size}: "
                            "move it away (it is left untouched) and run the download again")
    try:
        staged = Path(hf_hub_download(REPO_ID, repo_path, revision=REVISION, local_dir=models_dir / STAGING,
                                      endpoint=hub_endpoint()))
    except Exception as error:
        raise WanInputError(f"download of {REPO_ID}/{repo_path} failed ({type(error).__name__}: {error}); "
                            "run the same command again to resume") from None
    if staged.stat().st_size != size:
        raise WanInputError(f"download of {repo_path} gave {staged.stat().st_size} bytes, expected {size}; "
                            "run the same command again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)  # same file system: the finished file appears at its place in one step
    return target, "downloaded"


def download_set(name: str, models_dir, precision: str = "fp16") -> list[Path]:
    models_dir = Path(models_dir)
    files = set_files(name, precision)
    models_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for repo_path in files:
        path, action = fetch(repo_path, models_dir)
        print(f"{action}: {path}", flush=True)
        paths.append(path)
    shutil.rmtree(models_dir / STAGING, ignore_errors=True)  # only our own staging folder, once all are in place
    return paths


def add_parser(subparsers):
    parser = subparsers.add_parser("download", help="fetch ComfyUI's repackaged Wan 2.1 files into a models folder")
    parser.add_argument("set", choices=list(SETS))
    parser.add_argument("--models-dir", required=True, help="ComfyUI models folder; files go to its subfolders")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="diffusion model precision (fp8 sets use the fp8 scaled text encoder); default fp16")
    parser.set_defaults(run=run_download)


def run_download(args) -> int:
    download_set(args.set, args.models_dir, args.precision)
    return 0
