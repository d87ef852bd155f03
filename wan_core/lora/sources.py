"""Where a LoRA file comes from: a path or a file in the loras folder, a Hugging Face hub repo, or an http(s) URL.

Every source ends as a local .safetensors path. Hub files live in huggingface_hub's own cache (so its offline mode
and HF_HOME apply); URL downloads live in $WANFLOW_CACHE/loras, resume after a cut-off and are reused afterwards.
This module stays free of torch so that resolving a source is cheap.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError, safe_open

from ..cache import wanflow_cache_dir
from ..errors import WanInputError
from ..files.download import hub_endpoint
from .stack import LoraEntry

LORA_SUFFIX = ".safetensors"
DOWNLOAD_CHUNK = 1 << 16  # a cut-off connection loses the chunk being read: keep it small so resuming loses little
DOWNLOAD_TIMEOUT = (10, 60)  # seconds to connect, seconds between bytes


def resolve_lora_file(entry: LoraEntry, loras_dir: Path | None = None) -> Path:
    """The local .safetensors file for one stack entry, downloading it first when it is remote."""
    if entry.is_url:
        return download_lora_url(entry.source)
    local = local_lora_file(entry, loras_dir)
    if local is not None:
        return local
    if entry.is_hub_repo and not _meant_as_path(entry, loras_dir):
        try:
            return hub_lora_file(entry.source, entry.weight_name)
        except WanInputError as error:
            if not entry.weight_name:
                raise
            # owner/name/file.safetensors may as well have been a path: say both
            raise WanInputError(f"LoRA {entry.text!r}: no such file here, nor on the hub: {error}") from None
    where = f" or in the loras folder {str(loras_dir)!r}" if loras_dir else ""
    raise WanInputError(f"LoRA {entry.text!r}: no such file{where}, and it is not a hub repo id (owner/name) "
                        "or an http(s) URL")


def local_lora_file(entry: LoraEntry, loras_dir: Path | None = None) -> Path | None:
    """The entry's file on this machine (a path, a name in the loras folder, or a folder diffusers' save_lora_weights
    wrote), else None; never touches the network."""
    if entry.is_url:
        return None
    for candidate in _local_candidates(entry.text, loras_dir):
        if candidate.is_file():
            return candidate
    for candidate in _local_candidates(entry.source, loras_dir):
        if candidate.is_dir():
            names = sorted(path.name for path in candidate.glob(f"*{LORA_SUFFIX}"))
            return candidate / choose_weight_file(names, entry.weight_name, entry.source)
    return None


def _meant_as_path(entry: LoraEntry, loras_dir: Path | None) -> bool:
    """'my_loras/wan/style.safetensors' reads like a hub repo with a file name; when its first folder is here (or
    in the loras folder), it is a path to a missing file, not a repo."""
    first = entry.source.split("/")[0]
    return any(candidate.is_dir() for candidate in _local_candidates(first, loras_dir))


def _local_candidates(source: str, loras_dir: Path | None) -> list[Path]:
    path = Path(source).expanduser()
    return [path] + ([Path(loras_dir) / source] if loras_dir and not path.is_absolute() else [])


def choose_weight_file(names: list[str], weight_name: str | None, label: str) -> str:
    """The file to use among a repo's or folder's .safetensors names: the one named, else the only one."""
    if weight_name:
        return weight_name
    if len(names) == 1:
        return names[0]
    if not names:
        raise WanInputError(f"LoRA {label!r} holds no {LORA_SUFFIX} file")
    raise WanInputError(f"LoRA {label!r} holds {len(names)} {LORA_SUFFIX} files: name one as weight_name "
                        f"({', '.join(names)})")


# ---- Hugging Face hub ------------------------------------------------------------------------------------------


def hub_lora_file(repo_id: str, weight_name: str | None) -> Path:
    """The hub file through huggingface_hub's cache. Reachability is asked once, without retries: offline (or with
    the hub down) the cached file is used at once, where hf_hub_download would retry for half a minute first."""
    name = weight_name or choose_weight_file(_hub_safetensors(repo_id), None, repo_id)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, name, endpoint=hub_endpoint()), retry_on_errors=False)
    except RepositoryNotFoundError:
        raise _no_such_repo(repo_id) from None
    except EntryNotFoundError:
        raise WanInputError(f"LoRA {repo_id!r}: the repo has no file {name!r}") from None
    except Exception:  # noqa: BLE001 - offline mode, no network, the hub down: the exception type depends on
        # huggingface_hub's HTTP client, which changes between releases (requests, httpx, httpx2); the cache answers
        return _cached_hub_file(repo_id, name)
    return Path(hf_hub_download(repo_id, name, endpoint=hub_endpoint()))


def _cached_hub_file(repo_id: str, name: str) -> Path:
    try:
        return Path(hf_hub_download(repo_id, name, local_files_only=True))
    except LocalEntryNotFoundError:
        raise _hub_unreachable(repo_id, f"file {name!r} is not in the Hugging Face cache") from None


def _hub_safetensors(repo_id: str) -> list[str]:
    """The repo's .safetensors files: asked from the hub, else (offline, unreachable) those already cached.
    model_info asks once; list_repo_files would retry a network error for half a minute."""
    try:
        names = [file.rfilename for file in HfApi(endpoint=hub_endpoint()).model_info(repo_id).siblings or ()]
    except RepositoryNotFoundError:
        raise _no_such_repo(repo_id) from None
    except Exception as error:  # noqa: BLE001 - offline mode, no network: huggingface_hub's HTTP client (and so the
        # exception type) changes between releases (requests, httpx, httpx2); the cache answers or the error is shown
        names = _cached_hub_files(repo_id, error)
    return sorted(name for name in names if name.endswith(LORA_SUFFIX))


def _cached_hub_files(repo_id: str, error: Exception) -> list[str]:
    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise _hub_unreachable(repo_id, f"the repo is not in the Hugging Face cache ({error})") from None
    return [path.relative_to(snapshot).as_posix() for path in snapshot.rglob(f"*{LORA_SUFFIX}")]


def _no_such_repo(repo_id: str) -> WanInputError:
    return WanInputError(f"LoRA {repo_id!r}: no such hub repo (or it is private: log in with `hf auth login`)")


def _hub_unreachable(repo_id: str, what: str) -> WanInputError:
    return WanInputError(f"LoRA {repo_id!r}: the hub cannot be reached (offline mode or no network) and {what}; "
                         "connect once to download it, or give a local file")


# ---- http(s) URL -----------------------------------------------------------------------------------------------


def download_lora_url(url: str, cache_dir: Path | None = None) -> Path:
    """The URL's file in the cache: reused when complete, else downloaded (resuming a partial one) and checked."""
    target = url_cache_path(url, cache_dir)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        _download(url, partial)
    except requests.RequestException as error:
        raise WanInputError(f"LoRA {url!r}: download failed ({error}); check the address and the network, "
                            "then run again: the download resumes where it stopped") from None
    check_safetensors(partial, url)
    os.replace(partial, target)
    return target


def url_cache_path(url: str, cache_dir: Path | None = None) -> Path:
    """One cache file per URL: a hash keeps URLs apart, the last path part keeps the name readable."""
    name = unquote(Path(urlparse(url).path).name) or "lora"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(cache_dir or wanflow_cache_dir() / "loras") / f"{digest}-{name}"


def _download(url: str, partial: Path):
    """Fetch url into partial, asking only for the missing bytes when partial already holds a beginning."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=DOWNLOAD_TIMEOUT) as response:
        if response.status_code == 416:  # nothing left to send: the partial file is already whole
            return
        response.raise_for_status()
        resumed = response.status_code == 206
        expected = _total_size(response, resumed)
        with open(partial, "ab" if resumed else "wb") as file:
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                file.write(chunk)
    if expected is not None and partial.stat().st_size != expected:
        raise requests.ConnectionError(f"got {partial.stat().st_size} of {expected} bytes")


def _total_size(response: requests.Response, resumed: bool) -> int | None:
    """The whole file's size: from Content-Range ('bytes 100-199/200') when resuming, else Content-Length."""
    if resumed:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
    else:
        total = response.headers.get("Content-Length", "")
    return int(total) if total.isdigit() else None


def check_safetensors(path: Path, label: str):
    """Raise (and drop the file) unless safetensors reads its header and finds all the data it describes."""
    try:
        with safe_open(str(path), framework="numpy") as file:
            file.keys()
    except (SafetensorError, OSError) as error:
        path.unlink(missing_ok=True)
        raise WanInputError(f"LoRA {label!r}: the downloaded file is not a complete .safetensors file ({error})") from None
