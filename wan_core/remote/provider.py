"""The base of a provider adapter (one module each), which only says how its API spells things; see Provider."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Mapping

import torch

from ..errors import WanInputError, check_choice
from ..video_io import read_video
from .errors import NotAVideoError, ProviderError, RemoteInputError
from .http import ApiClient
from .identity import ProviderIdentity
from .request import Param, RemoteRequest, check_media, check_parameters


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


class Provider(ProviderIdentity, ABC):
    """One hosted API. Subclasses give the parameter tables and say how to submit and how to read a poll."""

    tasks: tuple[str, ...] = ("i2v",)
    statuses: Mapping[str, JobState] = {}  # provider status word -> state
    url_only = False  # True when media can only be given as URLs (no upload, no inline data)

    def state_of(self, status) -> JobState:
        """The state a poll's status word means. A missing or unknown word means the API changed: waiting on would
        only wait out the time limit on an answer already known to be malformed, so it stops here."""
        if not isinstance(status, str) or status not in self.statuses:
            raise ProviderError(
                f"{self.label} answered a poll with status={status!r}: expected one of {', '.join(self.statuses)}; "
                "its API may have changed"
            )
        return self.statuses[status]

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
                f"{self.label} gave a download that is not a video "
                f"({content_type or 'no content type'}, {len(content)} bytes starting {content[:24]!r}); "
                f"URL {status.video_url}"
            ) from None


def answer_field(answer: dict, key: str, provider: Provider, action: str, kind: type = object):
    """A field the provider must have sent, of the given kind; its absence means the API changed, which the user
    should hear."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if value in (None, "") or not isinstance(value, kind):
        keys = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
        got = f"got {keys}" if value in (None, "") else f"{key}={value!r}, not a {kind.__name__}"
        raise ProviderError(f"{provider.label} answered {action} without {key!r} ({got}): its API may have changed")
    return value
