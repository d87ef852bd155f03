"""Talking to a provider: how long to wait, a deadline-keeping waiter, and one retrying HTTP client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, Callable

import requests
import urllib3

from .errors import (
    AuthError,
    DownloadError,
    OutOfCreditError,
    ProviderError,
    RateLimitError,
    RemoteCancelled,
    RemoteError,
    RemoteTimeoutError,
)
from .identity import ProviderIdentity
from .keys import keys_file

# Which error a status means when the provider's reason does not say more.
STATUS_ERRORS = {401: AuthError, 403: AuthError, 402: OutOfCreditError, 429: RateLimitError}
# Statuses worth asking again; a submit is repeated only on those its provider documents as refused before a job
# exists (ProviderIdentity.refused_submit_statuses).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SUBMIT_MAY_EXIST = "; the job may exist anyway, so it was not sent again (that could bill twice)"
DOWNLOAD_CHUNK = 1 << 16


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
    """Keeps the one deadline of a job, submit to last downloaded byte, and sleeps in short slices so a stop request
    or Ctrl-C is seen promptly."""

    def __init__(self, total_timeout: float, should_stop: Callable[[], bool] | None):
        self.total_timeout = total_timeout
        self.started = time.monotonic()
        self.deadline = self.started + total_timeout
        self.job_id: str | None = None  # known once submitted; the job's errors then say how to fetch it later
        self._should_stop = should_stop or (lambda: False)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_stop(self) -> None:
        if self._should_stop():
            raise RemoteCancelled("stopped on request" + ("" if self.job_id else ": no job was created"))

    def check_deadline(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise RemoteTimeoutError(f"time limit of {self.total_timeout:g} s reached while {doing}")

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

    def __init__(self, provider: ProviderIdentity, api_key: str, settings: WaitSettings, waiter: Waiter):
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
        """Save url to path as received; returns the Content-Type. A transfer cut off is resumed where it stopped
        (HTTP Range) while retries and the deadline allow. The key is not sent: results sit on storage hosts."""
        attempt = 0
        with open(path, "wb") as file:
            while (content_type := self._download_into(url, file)) is None:
                if not self._wait_before_retry(attempt, None):
                    raise DownloadError(
                        f"the video download from {url} broke off {attempt + 1} times, the last after "
                        f"{file.tell()} bytes"
                    )
                attempt += 1
        return content_type

    def _download_into(self, url: str, file: BinaryIO) -> str | None:
        """Append what url sends from file's end on; its Content-Type once the body is whole, None if cut off."""
        offset = file.tell()
        # Range offsets count the file's own bytes, so the body must come as stored, not re-encoded.
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
        response = self._send("GET", url, f"the video download from {url}", idempotent=True, authorized=False,
                              stream=True, headers=headers)
        with response:
            if response.status_code >= 400:
                raise DownloadError(
                    f"could not download the video from {self.provider.label} (HTTP {response.status_code}): "
                    f"its URL may have expired; URL {url}"
                )
            if response.status_code != 206:  # the host ignored Range: the body starts over
                file.seek(0)
                file.truncate()
            expected_end = file.tell() + int(response.headers.get("Content-Length") or -1)
            try:
                for chunk in self._arriving(response):
                    file.write(chunk)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
                return None
            if file.tell() < expected_end:
                return None
            return response.headers.get("Content-Type", "")

    def _arriving(self, response: requests.Response):
        """The body as it arrives, not in fixed-size pieces, so a host that trickles it cannot hold a read past the
        deadline or a stop request."""
        while True:
            self.waiter.check_stop()
            self.waiter.check_deadline("downloading the video")
            chunk = response.raw.read1(DOWNLOAD_CHUNK, decode_content=True)
            if not chunk:
                return
            yield chunk

    def error_for(self, status: int, body, action: str, idempotent: bool = True) -> RemoteError:
        """The error a failed answer means, worded so the user knows what to do next."""
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason") or ""
        detail = body.get("message") or body.get("error") or body.get("detail") or ""
        error_class = self.provider.error_reasons.get(reason) or STATUS_ERRORS.get(status, ProviderError)
        context = f"HTTP {status}" + (f", {reason}" if reason else "") + (f": {detail}" if detail else "")
        return error_class(f"{self._advice(error_class, action)} ({context}){self._submit_outcome(status, idempotent)}")

    def _submit_outcome(self, status: int, idempotent: bool) -> str:
        """Whether a refused submit may still have created a job, as the provider documents its answers."""
        if idempotent:
            return ""
        if status in self.provider.refused_submit_statuses:
            return (f"; {self.provider.label} documents HTTP {status} as refused before a job is created, so no job "
                    "exists and running again is safe")
        return SUBMIT_MAY_EXIST if status >= 500 else ""

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

    def _send(self, method: str, url: str, action: str, *, idempotent: bool, authorized: bool = True,
              headers: dict | None = None, **kwargs):
        """The last response after retrying what is safe to retry; raises only if the host cannot be reached."""
        headers = {**(headers or {}), **({"Authorization": f"Bearer {self._api_key}"} if authorized else {})}
        attempt = 0
        while True:
            self.waiter.check_stop()
            self.waiter.check_deadline(f"waiting for {action}")
            # No single request may outlive the job's deadline.
            timeout = min(self.settings.request_timeout, self.waiter.remaining())
            try:
                response = self._session.request(method, url, headers=headers, timeout=timeout, **kwargs)
            except requests.RequestException as error:
                self.waiter.check_deadline(f"waiting for {action}" + ("" if idempotent else SUBMIT_MAY_EXIST))
                # A submit that timed out may have reached the provider, so only idempotent calls are repeated.
                if not (idempotent and self._wait_before_retry(attempt, None)):
                    raise ProviderError(
                        f"{self.provider.label} could not be reached or did not answer {action} "
                        f"({type(error).__name__}: {error}); check the network or {self.provider.base_url_env}"
                        + ("" if idempotent else SUBMIT_MAY_EXIST)
                    ) from None
            else:
                status = response.status_code
                retryable = status in self.provider.refused_submit_statuses or (
                    idempotent and status in RETRYABLE_STATUSES
                )
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
