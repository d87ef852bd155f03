"""Wan 2.1 I2V and V2V on hosted APIs (WaveSpeedAI, Novita AI, GMI Cloud, HighwayAPI) behind one call.

    result = run_remote("wavespeed", RemoteRequest(prompt="...", image=image), on_progress=print_progress)

Keys come from WAVESPEED_API_KEY, NOVITA_API_KEY, GMI_API_KEY, HIGHWAY_API_KEY or the keys file
(~/.config/wanflow/keys.json, or WANFLOW_KEYS_FILE); base URLs from WAVESPEED_BASE_URL and the like.
"""

from __future__ import annotations

from .errors import (
    AuthError,
    DownloadError,
    NotAVideoError,
    NsfwError,
    OutOfCreditError,
    ProviderError,
    RateLimitError,
    RemoteCancelled,
    RemoteError,
    RemoteInputError,
    RemoteTimeoutError,
    TaskFailedError,
)
from .gmi import GMI
from .http import WaitSettings
from .job import RemoteProgress, RemoteResult, run_job
from .novita import HIGHWAY, NOVITA
from .provider import Provider
from .request import RemoteRequest
from .wavespeed import WAVESPEED

PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (WAVESPEED, NOVITA, GMI, HIGHWAY)}


def run_remote(provider: str, request: RemoteRequest, **options) -> RemoteResult:
    """Run request on the named provider and return the decoded video; options are run_job's keywords
    (out_path, settings, on_progress, should_stop, api_key). Raises RemoteInputError (a WanInputError) before
    anything is sent, other RemoteErrors after."""
    if provider not in PROVIDERS:
        raise RemoteInputError(f"provider={provider!r} is not allowed: choose one of {', '.join(PROVIDERS)}")
    return run_job(PROVIDERS[provider], request, **options)


__all__ = [
    "PROVIDERS",
    "AuthError",
    "DownloadError",
    "NotAVideoError",
    "NsfwError",
    "OutOfCreditError",
    "Provider",
    "ProviderError",
    "RateLimitError",
    "RemoteCancelled",
    "RemoteError",
    "RemoteInputError",
    "RemoteProgress",
    "RemoteRequest",
    "RemoteResult",
    "RemoteTimeoutError",
    "TaskFailedError",
    "WaitSettings",
    "run_remote",
]
