"""The flow of a job: run_job validates (nothing sent) -> submits -> polls until done -> downloads the mp4 at
once -> decodes it to frames."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..video_io import check_output_path, written_in_place
from .errors import NsfwError, ProviderError, RemoteCancelled, RemoteError, RemoteInputError, TaskFailedError
from .http import ApiClient, WaitSettings, Waiter
from .keys import key_masked_errors, load_api_key
from .provider import JobState, JobStatus, Provider, reported_seed
from .request import RemoteRequest


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


def run_job(provider: Provider, request: RemoteRequest, **options) -> RemoteResult:
    """Run one job start to finish; options: out_path, settings, on_progress, should_stop, api_key. Raises
    RemoteInputError before anything is sent, other RemoteErrors after."""
    provider.validate(request)
    return _follow(provider, request, None, **options)


def fetch_job(provider: Provider, job_id: str, **options) -> RemoteResult:
    """The video of a job submitted earlier, by its id: waited for and downloaded as run_job does it."""
    if not job_id.strip():
        raise RemoteInputError(f"job id={job_id!r} is empty: give the id a run printed")
    return _follow(provider, None, job_id.strip(), **options)


def fetch_later(provider: Provider, job_id: str) -> str:
    return (
        f"{provider.label} job {job_id} may still finish (and be billed): fetch its video later with "
        f"python -m wan_core remote --provider {provider.name} fetch {job_id} --out OUT.mp4"
    )


def _follow(
    provider: Provider,
    request: RemoteRequest | None,
    job_id: str | None,
    *,
    out_path=None,
    settings: WaitSettings = WaitSettings(),
    on_progress: Callable[[RemoteProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    api_key: str | None = None,
) -> RemoteResult:
    """Submit request (or take the job_id of one submitted before), wait for it and download its video, all within
    one deadline."""
    if out_path is not None:
        check_output_path(out_path, "out_path")
    key = api_key or load_api_key(provider)
    report = on_progress or (lambda progress: None)
    waiter = Waiter(settings.total_timeout, should_stop)
    with key_masked_errors(key), ApiClient(provider, key, settings, waiter) as client, _naming_the_job(provider, waiter):
        if job_id is None:
            report(RemoteProgress("submitting", waiter.elapsed()))
            job_id = provider.submit(client, request)
        waiter.job_id = job_id
        submitted = waiter.elapsed()
        status, polls = wait_for_job(provider, client, job_id, report)
        finished = waiter.elapsed()
        report(RemoteProgress("downloading", finished, job_id=job_id, polls=polls))
        frames, fps, video_path = _fetch(provider, client, status, out_path)
    timings = {"submit": submitted, "wait": finished - submitted, "download": waiter.elapsed() - finished}
    # Where the provider does not echo the seed, a fixed seed the user asked for is still the one used.
    seed = status.seed if status.seed is not None else reported_seed(request.seed if request else -1)
    info = _info(provider, job_id, status, seed, polls, timings)
    return RemoteResult(frames, fps, job_id, status.video_url, seed, info, video_path)


@contextmanager
def _naming_the_job(provider: Provider, waiter: Waiter):
    """Once a job exists, every early end but its own failure (a stop, Ctrl-C, the time limit, a malformed answer, a
    broken download) names it and says how to fetch its video later: it may still finish, and it is billed."""
    try:
        yield
    except (TaskFailedError, NsfwError):
        raise  # the job ended without a video: there is nothing to fetch
    except RemoteError as error:
        if waiter.job_id is None:
            raise
        raise type(error)(f"{error}; {fetch_later(provider, waiter.job_id)}") from None
    except KeyboardInterrupt:
        if waiter.job_id is None:
            raise RemoteCancelled(
                f"interrupted before {provider.label} answered with a job id: if the submit had been sent, a job may "
                "exist anyway; see the provider's dashboard"
            ) from None
        raise RemoteCancelled(f"interrupted; {fetch_later(provider, waiter.job_id)}") from None


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
        waiter.check_deadline(f"the job was still {status.status}")
        waiter.sleep(client.settings.poll_interval)


def _checked_success(provider: Provider, job_id: str, status: JobStatus) -> JobStatus:
    if status.nsfw:
        raise NsfwError(
            f"{provider.label} flagged the output of job {job_id} as NSFW: change the prompt or image, "
            "or turn the safety checker off where the provider allows it"
        )
    if not status.video_url:
        raise ProviderError(f"{provider.label} answered that the job finished ({status.status}) without a video URL")
    return status


def _fetch(provider: Provider, client: ApiClient, status: JobStatus, out_path) -> tuple[torch.Tensor, float, Path | None]:
    """Into out_path when given (written whole or not at all), else into a temporary file."""
    if out_path is None:
        with tempfile.TemporaryDirectory(prefix="wanflow-") as folder:
            frames, fps = provider.fetch_result(client, status, Path(folder) / "result.mp4")
        return frames, fps, None
    with written_in_place(out_path) as partial:
        frames, fps = provider.fetch_result(client, status, partial)
    return frames, fps, Path(out_path)


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
