"""Wan 2.1 I2V and V2V on hosted APIs (WaveSpeedAI, Novita AI, GMI Cloud, HighwayAPI) behind one call.

    result = run_remote("wavespeed", RemoteRequest(prompt="...", image=image), on_progress=print_progress)
    result = fetch_remote("wavespeed", job_id)  # a job submitted before, e.g. by a run that was interrupted

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
from .job import RemoteProgress, RemoteResult, fetch_job, run_job
from .novita import HIGHWAY, NOVITA
from .provider import Provider
from .request import RemoteRequest
from .wavespeed import WAVESPEED

PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (WAVESPEED, NOVITA, GMI, HIGHWAY)}


def run_remote(provider: str, request: RemoteRequest, **options) -> RemoteResult:
    """Run request on the named provider and return the decoded video; options are run_job's keywords
    (out_path, settings, on_progress, should_stop, api_key). Raises RemoteInputError (a WanInputError) before
    anything is sent, other RemoteErrors after."""
    return run_job(provider_named(provider), request, **options)


def fetch_remote(provider: str, job_id: str, **options) -> RemoteResult:
    """The video of a job submitted before, by its id (an interrupted or timed-out run names it); options as for
    run_remote."""
    return fetch_job(provider_named(provider), job_id, **options)


def provider_named(name: str) -> Provider:
    if name not in PROVIDERS:
        raise RemoteInputError(f"provider={name!r} is not allowed: choose one of {', '.join(PROVIDERS)}")
    return PROVIDERS[name]


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
    "fetch_remote",
    "run_remote",
]
