"""The flow of a job: run_job validates (nothing sent) -> submits -> polls until done -> downloads the mp4 at
once -> decodes it to frames."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import NsfwError, ProviderError, RemoteTimeoutError, TaskFailedError
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
