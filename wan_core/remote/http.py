"""Talking to a provider: how long to wait, a deadline-keeping waiter, and one retrying HTTP client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import requests

from .errors import (
    AuthError,
    DownloadError,
    OutOfCreditError,
    ProviderError,
    RateLimitError,
    RemoteCancelled,
    RemoteError,
)
from .keys import keys_file

if TYPE_CHECKING:
    from .provider import Provider

# Which error a status means when the provider's reason does not say more.
STATUS_ERRORS = {401: AuthError, 403: AuthError, 402: OutOfCreditError, 429: RateLimitError}
# Statuses worth asking again; a submit is only repeated on 429, which refuses before creating a job.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SUBMIT_MAY_EXIST = "; the job may exist anyway, so it was not sent again (that could bill twice)"


# ---------------------------------------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class WaitSettings:
    """How long and how often to wait; tests shrink these to milliseconds."""

    total_timeout: float = 30 * 60  # seconds for the whole job, submit to download
    poll_interval: float = 3.0
    request_timeout: float = 30.0  # per HTTP request: connecting, and each read
    max_retries: int = 5  # for polls, uploads and downloads on 408, 429, 5xx and dropped connections
    backoff_base: float = 1.0  # first retry delay in seconds, doubled on each retry
    backoff_cap: float = 60.0  # longest single wait between retries, Retry-After included


SLEEP_SLICE = 0.1  # seconds between should_stop() checks, so stopping takes well under a second


class Waiter:
    """Keeps the overall deadline and sleeps in short slices so a stop request or Ctrl-C is seen promptly."""

    def __init__(self, total_timeout: float, should_stop: Callable[[], bool] | None):
        self.started = time.monotonic()
        self.deadline = self.started + total_timeout
        self.job_id: str | None = None  # known once submitted; named when the wait ends early
        self._should_stop = should_stop or (lambda: False)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_stop(self) -> None:
        if self._should_stop():
            job = f"job {self.job_id} may still run (and be billed) on the provider" if self.job_id else "no job was created"
            raise RemoteCancelled(f"stopped on request: {job}")

    def sleep(self, seconds: float) -> None:
        """Sleep up to seconds, never past the deadline."""
        end = min(time.monotonic() + seconds, self.deadline)
        while (left := end - time.monotonic()) > 0:
            self.check_stop()
            time.sleep(min(SLEEP_SLICE, left))
        self.check_stop()


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """The server's Retry-After, given in seconds or as an HTTP date."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------- HTTP


class ApiClient:
    """One provider's HTTP API: bearer key, a timeout per request, retries with doubling backoff, readable errors."""

    def __init__(self, provider: Provider, api_key: str, settings: WaitSettings, waiter: Waiter):
        self.provider = provider
        self.base_url = provider.base_url()
        self.settings = settings
        self.waiter = waiter
        self._api_key = api_key
        self._session = requests.Session()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._session.close()

    def get_json(self, path: str, **kwargs) -> dict:
        return self._call("GET", path, idempotent=True, **kwargs)

    def post_json(self, path: str, payload: dict | None = None, *, idempotent: bool = False, **kwargs) -> dict:
        """POST; idempotent=False (a submit) is never repeated after a failure that may have created a job."""
        return self._call("POST", path, idempotent=idempotent, json=payload, **kwargs)

    def download(self, url: str, path: Path) -> str:
        """Save url to path as received; returns the Content-Type. The key is not sent: results sit on storage hosts."""
        action = f"the video download from {url}"
        response = self._send("GET", url, action, idempotent=True, authorized=False, stream=True)
        with response:
            if response.status_code >= 400:
                raise DownloadError(
                    f"could not download the video from {self.provider.label} (HTTP {response.status_code}): "
                    f"its URL may have expired; job {self.waiter.job_id}, URL {url}"
                )
            try:
                with open(path, "wb") as file:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        self.waiter.check_stop()
                        file.write(chunk)
            except requests.RequestException as error:
                raise DownloadError(f"{action} broke off ({type(error).__name__}: {error}); job {self.waiter.job_id}") from None
            return response.headers.get("Content-Type", "")

    def error_for(self, status: int, body, action: str, idempotent: bool = True) -> RemoteError:
        """The error a failed answer means, worded so the user knows what to do next."""
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason") or ""
        detail = body.get("message") or body.get("error") or body.get("detail") or ""
        error_class = self.provider.error_reasons.get(reason) or STATUS_ERRORS.get(status, ProviderError)
        context = f"HTTP {status}" + (f", {reason}" if reason else "") + (f": {detail}" if detail else "")
        message = f"{self._advice(error_class, action)} ({context})"
        if not idempotent and status >= 500:
            message += SUBMIT_MAY_EXIST
        return error_class(message)

    def _advice(self, error_class: type[RemoteError], action: str) -> str:
        label = self.provider.label
        return {
            AuthError: f"{label} rejected the API key: check {self.provider.key_env} or the "
            f"\"{self.provider.name}\" entry in {keys_file()}",
            OutOfCreditError: f"the {label} account is out of credit: top it up, then run again",
            RateLimitError: f"{label} is still rate limiting after {self.settings.max_retries} retries: "
            "wait a minute, then run again",
        }.get(error_class, f"{label} refused {action}")

    def _call(self, method: str, path: str, *, idempotent: bool, **kwargs) -> dict:
        action = f"{method} {path}"
        response = self._send(method, self.base_url + path, action, idempotent=idempotent, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise self.error_for(response.status_code, body, action, idempotent)
        if not isinstance(body, dict):
            content_type = response.headers.get("Content-Type", "nothing")
            raise ProviderError(f"{self.provider.label} answered {action} with {content_type}, not a JSON object")
        return body

    def _send(self, method: str, url: str, action: str, *, idempotent: bool, authorized: bool = True, **kwargs):
        """The last response after retrying what is safe to retry; raises only if the host cannot be reached."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if authorized else {}
        attempt = 0
        while True:
            self.waiter.check_stop()
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self.settings.request_timeout, **kwargs
                )
            except requests.RequestException as error:
                # A submit that timed out may have reached the provider, so only idempotent calls are repeated.
                if not (idempotent and self._wait_before_retry(attempt, None)):
                    raise ProviderError(
                        f"{self.provider.label} could not be reached or did not answer {action} "
                        f"({type(error).__name__}: {error}); check the network or {self.provider.base_url_env}"
                        + ("" if idempotent else SUBMIT_MAY_EXIST)
                    ) from None
            else:
                status = response.status_code
                retryable = status == 429 or (idempotent and status in RETRYABLE_STATUSES)
                if not (retryable and self._wait_before_retry(attempt, response)):
                    return response
                response.close()
            attempt += 1

    def _wait_before_retry(self, attempt: int, response: requests.Response | None) -> bool:
        """Sleep before the next attempt; False when retries or time have run out."""
        if attempt >= self.settings.max_retries:
            return False
        delay = retry_after_seconds(response) or self.settings.backoff_base * 2**attempt
        delay = min(delay, self.settings.backoff_cap)
        if delay >= self.waiter.remaining():
            return False
        self.waiter.sleep(delay)
        return True
