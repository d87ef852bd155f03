"""What the hosted Wan 2.1 APIs share: the request, the errors, keys, one retrying HTTP client and one polling loop.

A provider adapter (one module each) only says how its API spells things; see Provider. The flow of a job is
run_job: validate (nothing sent) -> submit -> poll until done -> download the mp4 at once -> decode to frames.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, fields
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from typing import Callable, Mapping

import requests
import torch
from PIL import Image

from ..errors import WanInputError, check_choice, check_range
from ..lora_stack import LoraEntry, LoraStack
from ..video_io import DEFAULT_FPS, frames_to_uint8, read_video, write_video

# ---------------------------------------------------------------------------------------------------- errors


class RemoteError(Exception):
    """A hosted job could not be run; the message says what to do about it and never contains the API key."""


class RemoteInputError(RemoteError, WanInputError):
    """A parameter, media input or key that the chosen provider cannot take; nothing was sent."""


class AuthError(RemoteError):
    """The provider rejected the API key (HTTP 401 or 403)."""


class OutOfCreditError(RemoteError):
    """The account has no credit left (HTTP 402 or a balance reason)."""


class RateLimitError(RemoteError):
    """Still rate limited (HTTP 429) after every retry."""


class ProviderError(RemoteError):
    """The provider could not be reached, refused the request, or answered something unexpected."""


class TaskFailedError(RemoteError):
    """The job ran and failed on the provider's side."""


class NsfwError(RemoteError):
    """The provider's safety checker flagged the output."""


class DownloadError(RemoteError):
    """The finished video could not be downloaded, e.g. because its URL expired."""


class NotAVideoError(DownloadError):
    """The download is not a readable video."""


class RemoteTimeoutError(RemoteError):
    """The time limit ran out while the job was still running; the message has its job id."""


class RemoteCancelled(RemoteError):
    """should_stop() asked to stop waiting."""


# Which error a status means when the provider's reason does not say more.
STATUS_ERRORS = {401: AuthError, 403: AuthError, 402: OutOfCreditError, 429: RateLimitError}
# Statuses worth asking again; a submit is only repeated on 429, which refuses before creating a job.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
SUBMIT_MAY_EXIST = "; the job may exist anyway, so it was not sent again (that could bill twice)"
KEY_MASK = "***"

# ---------------------------------------------------------------------------------------------------- request


@dataclass
class RemoteRequest:
    """One hosted Wan 2.1 job in WanFlow's words.

    A parameter set to None keeps the provider's own default. The defaults below are every provider's, so a
    parameter a provider lacks is fine while it keeps its default here, and an error once set away from it.
    """

    task: str = "i2v"  # "i2v" or "v2v"
    prompt: str = ""
    image: torch.Tensor | None = None  # ComfyUI IMAGE [N, H, W, 3] in 0..1; i2v uses the first one
    image_url: str | None = None
    video: torch.Tensor | None = None  # frames [T, H, W, 3] in 0..1 for v2v
    video_url: str | None = None
    video_fps: float = DEFAULT_FPS  # frame rate used when the frames are encoded for upload
    negative_prompt: str = ""
    size: str | None = None  # "W*H" such as "832*480"; it also picks 480p or 720p
    duration: int = 5  # seconds
    steps: int = 30
    guidance_scale: float = 5.0
    flow_shift: float | None = None  # providers default to 3 or 5 depending on resolution
    seed: int = -1  # -1: random
    strength: float = 0.9  # v2v: how far the result may move from the source video
    loras: LoraStack = ()
    fast: bool = False
    safety_checker: bool = True
    prompt_extend: bool = False

    def __post_init__(self):
        self.loras = tuple(self.loras or ())
        # A blank URL (an empty text widget) means no URL.
        self.image_url = (self.image_url or "").strip() or None
        self.video_url = (self.video_url or "").strip() or None


MEDIA_FIELDS = ("task", "image", "image_url", "video", "video_url", "video_fps")
PARAMETER_DEFAULTS = {spec.name: spec.default for spec in fields(RemoteRequest) if spec.name not in MEDIA_FIELDS}
# Media each task takes: (tensor field, URL field).
TASK_MEDIA = {"i2v": ("image", "image_url"), "v2v": ("video", "video_url")}
SIZE_RESOLUTIONS = {"832*480": "480p", "480*832": "480p", "1280*720": "720p", "720*1280": "720p"}


def resolution_of(size: str | None) -> str:
    """'480p' or '720p'; no size means 480p, every provider's default."""
    return SIZE_RESOLUTIONS.get(size, "480p")


# ---------------------------------------------------------------------------------------------------- parameters


def _identity(value):
    return value


@dataclass(frozen=True)
class Param:
    """How one provider takes one WanFlow parameter: its field name and the values it allows."""

    field: str | None = None  # None: the adapter encodes it some other way (model variant, model id)
    range: tuple[float, float] | None = None
    choices: tuple | None = None
    length: tuple[int, int] | None = None  # allowed number of characters (text) or items (LoRAs)
    encode: Callable = _identity  # WanFlow value -> the provider's JSON value

    def check(self, name: str, value) -> None:
        try:
            if self.range:
                check_range(name, value, *self.range)
            if self.choices:
                check_choice(name, value, self.choices)
            if self.length:
                check_range(f"length of {name}", len(value), *self.length)
        except WanInputError as error:
            raise RemoteInputError(str(error)) from None
        # Encoding raises RemoteInputError for values the provider cannot take at all (a local LoRA file).
        self.encode(value)


def check_parameters(request: RemoteRequest, params: Mapping[str, Param], where: str) -> None:
    """Every parameter within the provider's ranges; one the provider lacks must keep its default."""
    for name, default in PARAMETER_DEFAULTS.items():
        value = getattr(request, name)
        param = params.get(name)
        if value is None:
            continue
        if param is not None:
            param.check(f"{where} {name}", value)
        elif value != default:
            raise RemoteInputError(
                f"{where} has no {name} parameter: got {name}={value!r}, allowed only the default {default!r}"
            )


def payload_fields(request: RemoteRequest, params: Mapping[str, Param]) -> dict:
    """The provider's JSON fields for every parameter that has one; unset values are left to the provider."""
    payload = {}
    for name, param in params.items():
        value = getattr(request, name)
        encoded = None if value is None or not param.field else param.encode(value)
        if encoded is not None:
            payload[param.field] = encoded
    return payload


HUB_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def lora_payload(loras: LoraStack) -> list[dict] | None:
    """[{path, scale}] as WaveSpeedAI and Novita take them; None for no LoRAs so the field is left out."""
    return [{"path": hosted_lora_path(entry), "scale": entry.scale} for entry in loras] or None


def hosted_lora_path(entry: LoraEntry) -> str:
    """A hosted API fetches LoRAs itself, so only URLs and hub repo ids work; a file on this machine does not."""
    source = entry.source.strip()
    if entry.is_url:
        return source
    is_repo_id = HUB_REPO_ID.match(source) and not source.endswith(WEIGHT_FILE_SUFFIXES) and not os.path.exists(source)
    if not is_repo_id:
        raise RemoteInputError(
            f"LoRA source={source!r} is not a hub repo id (owner/name) or an http(s) URL: a hosted API fetches "
            "LoRAs itself, so it cannot use a file on this machine"
        )
    if entry.weight_name:
        return f"https://huggingface.co/{source}/resolve/main/{entry.weight_name}"
    return source


def check_media(request: RemoteRequest, where: str, url_only: bool) -> None:
    """Exactly one source for the task's media (tensor or URL), none for the other task's."""
    tensor_name, url_name = TASK_MEDIA[request.task]
    for other_task, other_names in TASK_MEDIA.items():
        if other_task != request.task and any(getattr(request, name) is not None for name in other_names):
            raise RemoteInputError(f"{where} takes {tensor_name} or {url_name}, not {' or '.join(other_names)}")
    tensor, url = getattr(request, tensor_name), getattr(request, url_name)
    if (tensor is None) == (not url):
        raise RemoteInputError(f"{where} needs exactly one of {tensor_name} or {url_name}: got {'both' if url else 'neither'}")
    if url and not url.startswith(("http://", "https://")):
        raise RemoteInputError(f"{url_name}={url!r} is not an http(s) URL")
    if tensor is not None and url_only:
        raise RemoteInputError(
            f"{where} takes the {tensor_name} only as a URL ({url_name}): it has no upload endpoint, "
            f"so put the {tensor_name} online and give its URL"
        )
    if tensor is not None:
        check_frames(tensor_name, tensor, even_size=tensor_name == "video")


def check_frames(name: str, frames, even_size: bool) -> None:
    """Frames [N, H, W, 3]; a video is encoded as H.264 for upload, which needs even width and height."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise RemoteInputError(f"{name} has shape {shape}: expected frames [N, H, W, 3] with N >= 1")
    height, width = frames.shape[1:3]
    if even_size and (height % 2 or width % 2):
        raise RemoteInputError(f"{name} size {width}x{height}: uploading it as H.264 needs even width and height")


# ---------------------------------------------------------------------------------------------------- media


def png_bytes(image: torch.Tensor) -> bytes:
    """The first frame of an IMAGE as PNG, the lossless format the APIs take."""
    buffer = io.BytesIO()
    Image.fromarray(frames_to_uint8(image[:1])[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4_bytes(frames: torch.Tensor, fps: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="wanflow-") as folder:
        return write_video(Path(folder) / "video.mp4", frames, fps=fps).read_bytes()


def png_data_uri(image: torch.Tensor) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


# ---------------------------------------------------------------------------------------------------- keys


def keys_file() -> Path:
    """The user's key file: outside any workflow, so keys never travel with one."""
    return Path(os.environ.get("WANFLOW_KEYS_FILE") or Path.home() / ".config" / "wanflow" / "keys.json")


def load_api_key(provider: Provider) -> str:
    """The key from the provider's environment variable, else from the keys file."""
    key = os.environ.get(provider.key_env, "").strip()
    if key:
        return key
    path = keys_file()
    stored = _read_keys_file(path, provider.name).get(provider.name)
    if isinstance(stored, str) and stored.strip():
        return stored.strip()
    raise RemoteInputError(
        f"no API key for {provider.label}: set {provider.key_env} or add \"{provider.name}\": \"<key>\" to {path}"
    )


def _read_keys_file(path: Path, name: str) -> dict:
    if not path.is_file():
        return {}
    expected = f'a JSON object such as {{"{name}": "<key>"}}'
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # neither message quotes the file's content
        raise RemoteInputError(f"keys file {str(path)!r} is not readable ({error}): expected {expected}") from None
    if not isinstance(keys, dict):
        raise RemoteInputError(f"keys file {str(path)!r} holds a {type(keys).__name__}: expected {expected}")
    return keys


def mask_key(text: str, key: str) -> str:
    return text.replace(key, KEY_MASK) if key else text


@contextmanager
def key_masked_errors(key: str):
    """Whatever a provider echoes back (an error body, a failure reason) never shows the key."""
    try:
        yield
    except RemoteError as error:
        error.args = tuple(mask_key(str(arg), key) for arg in error.args)
        raise


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


def answer_field(answer: dict, key: str, provider: Provider, action: str):
    """A field the provider must have sent; its absence means the API changed, which the user should hear."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if value in (None, ""):
        keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        raise ProviderError(f"{provider.label} answered {action} without {key!r} (got {keys}): its API may have changed")
    return value


# ---------------------------------------------------------------------------------------------------- providers


class JobState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    """One poll's answer in WanFlow's words."""

    state: JobState
    status: str  # the provider's own word for it, shown to the user
    percent: float | None = None
    video_url: str | None = None
    reason: str | None = None  # why it failed
    nsfw: bool = False
    seed: int | None = None
    inference_seconds: float | None = None


def reported_seed(value) -> int | None:
    """A seed from an answer (some send it as text); -1 or garbage means it was not reported."""
    try:
        seed = int(value)
    except (TypeError, ValueError):
        return None
    return seed if seed >= 0 else None


class Provider(ABC):
    """One hosted API. Subclasses give the parameter tables and say how to submit and how to read a poll."""

    tasks: tuple[str, ...] = ("i2v",)
    statuses: Mapping[str, JobState] = {}  # provider status word -> state; unknown words count as running
    url_only = False  # True when media can only be given as URLs (no upload, no inline data)

    def __init__(self, name: str, label: str, default_base_url: str, error_reasons: Mapping[str, type] | None = None):
        self.name = name  # the --provider value and the key's entry in the keys file
        self.label = label
        self.default_base_url = default_base_url
        self.error_reasons = dict(error_reasons or {})  # provider reason -> error class, where the status is vaguer
        self.key_env = f"{name.upper()}_API_KEY"
        self.base_url_env = f"{name.upper()}_BASE_URL"

    def base_url(self) -> str:
        return (os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")

    def state_of(self, status: str) -> JobState:
        return self.statuses.get(status, JobState.RUNNING)

    @abstractmethod
    def parameters(self, task: str) -> Mapping[str, Param]:
        """WanFlow parameter name -> how this provider takes it, for one task."""

    def validate(self, request: RemoteRequest) -> None:
        """Raise RemoteInputError for anything this provider would refuse; sends nothing."""
        try:
            check_choice(f"{self.label} task", request.task, self.tasks)
        except WanInputError as error:
            raise RemoteInputError(str(error)) from None
        where = f"{self.label} {request.task}"
        if not request.prompt.strip():
            raise RemoteInputError(f"{where} prompt={request.prompt!r} is empty: describe the video to make")
        check_media(request, where, self.url_only)
        check_parameters(request, self.parameters(request.task), where)

    @abstractmethod
    def submit(self, client: ApiClient, request: RemoteRequest) -> str:
        """Upload media if needed, create the job, return its id."""

    @abstractmethod
    def poll(self, client: ApiClient, job_id: str) -> JobStatus:
        """Ask once how the job is doing."""

    def fetch_result(self, client: ApiClient, status: JobStatus, path: Path) -> tuple[torch.Tensor, float]:
        """Download the finished video to path as received (its URL expires soon) and decode it to frames."""
        content_type = client.download(status.video_url, path)
        try:
            return read_video(path, name="downloaded result")
        except WanInputError:
            content = path.read_bytes()
            raise NotAVideoError(
                f"{self.label} job {client.waiter.job_id} gave a download that is not a video "
                f"({content_type or 'no content type'}, {len(content)} bytes starting {content[:24]!r}); "
                f"URL {status.video_url}"
            ) from None


# ---------------------------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class RemoteProgress:
    """What to show while a hosted job runs: the provider's status, its percent when it gives one, time so far."""

    status: str
    elapsed: float
    percent: float | None = None
    job_id: str | None = None
    polls: int = 0

    def line(self) -> str:
        percent = f" {self.percent:.0f}%" if self.percent is not None else ""
        job = f"job {self.job_id}: " if self.job_id else ""
        return f"{job}{self.status}{percent} ({self.elapsed:.1f} s)"


@dataclass
class RemoteResult:
    frames: torch.Tensor  # [T, H, W, 3] float in 0..1, ComfyUI IMAGE
    fps: float
    job_id: str
    video_url: str
    seed: int | None  # as the provider reported it, else the fixed seed requested; None when unknown
    info: str  # for people: provider, job id, seed, timings, video URL
    video_path: Path | None  # the mp4 exactly as downloaded, when an out_path was given


def run_job(
    provider: Provider,
    request: RemoteRequest,
    *,
    out_path=None,
    settings: WaitSettings = WaitSettings(),
    on_progress: Callable[[RemoteProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    api_key: str | None = None,
) -> RemoteResult:
    """Run one job start to finish. Raises RemoteInputError before anything is sent, other RemoteErrors after."""
    provider.validate(request)
    key = api_key or load_api_key(provider)
    report = on_progress or (lambda progress: None)
    waiter = Waiter(settings.total_timeout, should_stop)
    with key_masked_errors(key), ApiClient(provider, key, settings, waiter) as client:
        report(RemoteProgress("submitting", waiter.elapsed()))
        job_id = waiter.job_id = provider.submit(client, request)
        submitted = waiter.elapsed()
        status, polls = wait_for_job(provider, client, job_id, report)
        finished = waiter.elapsed()
        report(RemoteProgress("downloading", finished, job_id=job_id, polls=polls))
        frames, fps, video_path = _fetch(provider, client, status, out_path)
    timings = {"submit": submitted, "wait": finished - submitted, "download": waiter.elapsed() - finished}
    # Where the provider does not echo the seed, a fixed seed the user asked for is still the one used.
    seed = status.seed if status.seed is not None else reported_seed(request.seed)
    info = _info(provider, job_id, status, seed, polls, timings)
    return RemoteResult(frames, fps, job_id, status.video_url, seed, info, video_path)


def wait_for_job(provider: Provider, client: ApiClient, job_id: str, report) -> tuple[JobStatus, int]:
    """Poll until the job succeeds with a video; raises on failure, NSFW output, the time limit or a stop request."""
    waiter = client.waiter
    polls = 0
    while True:
        status = provider.poll(client, job_id)
        polls += 1
        report(RemoteProgress(status.status, waiter.elapsed(), status.percent, job_id, polls))
        if status.state is JobState.SUCCEEDED:
            return _checked_success(provider, job_id, status), polls
        if status.state is JobState.FAILED:
            raise TaskFailedError(f"Task failed: {status.reason or status.status} ({provider.label} job {job_id})")
        if waiter.remaining() <= 0:
            raise RemoteTimeoutError(
                f"time limit of {client.settings.total_timeout:g} s reached while {provider.label} job {job_id} "
                f"was still {status.status}: it may finish later, look it up with that job id, "
                "or run again with a longer timeout"
            )
        waiter.sleep(client.settings.poll_interval)


def _checked_success(provider: Provider, job_id: str, status: JobStatus) -> JobStatus:
    if status.nsfw:
        raise NsfwError(
            f"{provider.label} flagged the output of job {job_id} as NSFW: change the prompt or image, "
            "or turn the safety checker off where the provider allows it"
        )
    if not status.video_url:
        raise ProviderError(f"{provider.label} job {job_id} finished ({status.status}) without a video URL")
    return status


def _fetch(provider: Provider, client: ApiClient, status: JobStatus, out_path) -> tuple[torch.Tensor, float, Path | None]:
    """Into out_path when given (written whole or not at all), else into a temporary file."""
    if out_path is None:
        with tempfile.TemporaryDirectory(prefix="wanflow-") as folder:
            frames, fps = provider.fetch_result(client, status, Path(folder) / "result.mp4")
        return frames, fps, None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".part")
    try:
        frames, fps = provider.fetch_result(client, status, partial)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    return frames, fps, out_path


def _info(provider: Provider, job_id: str, status: JobStatus, seed: int | None, polls: int, timings: dict) -> str:
    spent = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items())
    if status.inference_seconds is not None:
        spent += f", provider inference {status.inference_seconds:.1f} s"
    return "\n".join(
        [
            f"provider: {provider.label}",
            f"job id: {job_id}",
            f"seed: {seed if seed is not None else 'random, not reported'}",
            f"timings: {spent} ({polls} polls)",
            f"video URL: {status.video_url}",
        ]
    )
