"""wan_core.remote against stand-in provider APIs on 127.0.0.1: success, waiting, every error, cancel, validation."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
import torch
from PIL import Image
from remote_standin import (  # noqa: F401  (the *_fixture names are fixtures, used by name)
    FAKE_KEY,
    RESULT_FPS,
    RESULT_FRAMES,
    RESULT_HEIGHT,
    RESULT_WIDTH,
    WRONG_KEY,
    Fault,
    no_key_in_output_fixture,
    remote_env_fixture,
    serve_fixture,
)

from wan_core.errors import WanInputError
from wan_core.lora.stack import LoraEntry
from wan_core.remote import (
    PROVIDERS,
    fetch_remote,
    AuthError,
    DownloadError,
    NotAVideoError,
    NsfwError,
    OutOfCreditError,
    ProviderError,
    RateLimitError,
    RemoteCancelled,
    RemoteInputError,
    RemoteRequest,
    RemoteTimeoutError,
    TaskFailedError,
    WaitSettings,
    run_remote,
)

FAST = WaitSettings(total_timeout=20, poll_interval=0.01, request_timeout=5, max_retries=3, backoff_base=0.01)
IMAGE_URL = "https://example.com/cat.png"
URL_ONLY_PROVIDERS = ("novita", "highway")


def image(height=48, width=64) -> torch.Tensor:
    return torch.rand(1, height, width, 3)


def i2v_request(provider: str, **changes) -> RemoteRequest:
    """A valid I2V request: the image as a tensor where the provider takes one, else as a URL."""
    media = {"image_url": IMAGE_URL} if provider in URL_ONLY_PROVIDERS else {"image": image()}
    return RemoteRequest(**{"prompt": "a cat surfing", **media, **changes})


def v2v_request(**changes) -> RemoteRequest:
    return RemoteRequest(**{"task": "v2v", "prompt": "make it snow", "video": torch.rand(6, 48, 64, 3), **changes})


def raised(error_class, provider: str, request: RemoteRequest, **options):
    """The error run_remote raised; it must never show a key."""
    with pytest.raises(error_class) as caught:
        run_remote(provider, request, **{"settings": FAST, **options})
    text = str(caught.value)
    assert FAKE_KEY not in text and WRONG_KEY not in text
    return caught.value


def submitted(standin) -> dict:
    (submit,) = standin.calls("submit")
    return submit.json


# ---------------------------------------------------------------------------------------------------- success


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_i2v_succeeds_on_every_provider(serve, provider, tmp_path):
    standin = serve(provider)
    out = tmp_path / "result.mp4"
    result = run_remote(provider, i2v_request(provider), settings=FAST, out_path=out)

    assert result.frames.shape == (RESULT_FRAMES, RESULT_HEIGHT, RESULT_WIDTH, 3)
    assert result.frames.dtype == torch.float32 and 0 <= result.frames.min() and result.frames.max() <= 1
    assert result.fps == RESULT_FPS
    assert out.read_bytes() == standin.video_bytes and result.video_path == out
    assert not list(tmp_path.glob("*.part"))
    assert result.job_id in standin.jobs
    assert f"job id: {result.job_id}" in result.info and result.video_url in result.info
    assert "timings:" in result.info
    assert all(request.authorized for request in standin.requests if request.path.startswith(("/api", "/v3")))


def test_wavespeed_uploads_the_image_as_png_and_sends_its_url(serve):
    standin = serve("wavespeed")
    run_remote("wavespeed", i2v_request("wavespeed", image=image(48, 64)), settings=FAST)

    (filename, content_type, content) = standin.uploads[0]
    assert content_type == "image/png"
    assert Image.open(io.BytesIO(content)).size == (64, 48)
    assert submitted(standin)["image"].endswith(f"/media/{filename}")
    assert standin.calls("submit")[0].path == "/api/v3/wavespeed-ai/wan-2.1/i2v-480p"


def test_wavespeed_v2v_uploads_frames_as_mp4(serve):
    standin = serve("wavespeed")
    result = run_remote("wavespeed", v2v_request(strength=0.6, seed=7), settings=FAST)

    (_, content_type, content) = standin.uploads[0]
    assert content_type == "video/mp4" and content[4:8] == b"ftyp"
    assert standin.calls("submit")[0].path == "/api/v3/wavespeed-ai/wan-2.1/v2v-480p"
    assert submitted(standin)["strength"] == 0.6 and submitted(standin)["seed"] == 7
    assert result.frames.shape[0] == RESULT_FRAMES


def test_wavespeed_v2v_takes_a_video_url_without_uploading(serve):
    standin = serve("wavespeed")
    url = "https://example.com/source.mp4"
    run_remote("wavespeed", RemoteRequest(task="v2v", prompt="snow", video_url=url), settings=FAST)
    assert standin.uploads == [] and submitted(standin)["video"] == url


@pytest.mark.parametrize(
    "changes, variant",
    [
        ({"size": "720*1280"}, "i2v-720p"),
        ({"fast": True}, "i2v-480p-ultra-fast"),
        ({"loras": (LoraEntry("motimalu/wan-flat-color-v2", 0.8),)}, "i2v-480p-lora"),
        ({"size": "1280*720", "fast": True, "loras": (LoraEntry("owner/style"),)}, "i2v-720p-lora-ultra-fast"),
        ({"task": "v2v", "image": None, "video_url": "https://example.com/v.mp4", "fast": True}, "v2v-480p-lora-ultra-fast"),
        ({"task": "v2v", "image": None, "video_url": "https://example.com/v.mp4", "loras": (LoraEntry("a/b"),)},
         "v2v-480p-lora"),
    ],
)
def test_wavespeed_variant_follows_size_loras_and_fast(serve, changes, variant):
    standin = serve("wavespeed")
    run_remote("wavespeed", i2v_request("wavespeed", **changes), settings=FAST)
    assert standin.calls("submit")[0].path == f"/api/v3/wavespeed-ai/wan-2.1/{variant}"


def test_wavespeed_sends_loras_as_paths_and_scales(serve):
    standin = serve("wavespeed")
    loras = (
        LoraEntry("motimalu/wan-flat-color-v2", 0.8),
        LoraEntry("owner/repo", 1.5, weight_name="style.safetensors"),
        LoraEntry("https://civitai.com/api/download/models/123", 4.0),
    )
    run_remote("wavespeed", i2v_request("wavespeed", loras=loras, flow_shift=4.0, guidance_scale=12), settings=FAST)
    payload = submitted(standin)
    assert payload["loras"] == [
        {"path": "motimalu/wan-flat-color-v2", "scale": 0.8},
        {"path": "https://huggingface.co/owner/repo/resolve/main/style.safetensors", "scale": 1.5},
        {"path": "https://civitai.com/api/download/models/123", "scale": 4.0},
    ]
    assert payload["flow_shift"] == 4.0 and payload["guidance_scale"] == 12


@pytest.mark.parametrize("provider", URL_ONLY_PROVIDERS)
def test_novita_style_sends_size_fast_mode_and_its_field_names(serve, provider):
    standin = serve(provider)
    request = i2v_request(provider, size="720*1280", fast=True, steps=12, seed=9_000_000_000, safety_checker=False,
                          loras=(LoraEntry("owner/name", 0.5),))
    result = run_remote(provider, request, settings=FAST)
    payload = submitted(standin)
    assert (payload["width"], payload["height"]) == (720, 1280)
    assert payload["fast_mode"] is True and payload["steps"] == 12 and payload["seed"] == 9_000_000_000
    assert payload["enable_safety_checker"] is False and payload["image_url"] == IMAGE_URL
    assert payload["loras"] == [{"path": "owner/name", "scale": 0.5}]
    assert result.seed == standin.reported_seed and f"seed: {standin.reported_seed}" in result.info


def test_gmi_picks_the_model_by_resolution_and_sends_its_few_fields(serve):
    standin = serve("gmi")
    standin.gmi_media_urls = True  # the other documented answer shape
    request = i2v_request("gmi", image=None, image_url=IMAGE_URL, size="1280*720", duration=10, prompt_extend=True)
    result = run_remote("gmi", request, settings=FAST)
    body = submitted(standin)
    assert body["model"] == "Wan-AI_Wan2.1-I2V-14B-720P"
    assert body["payload"]["video_length"] == 10 and body["payload"]["prompt_extend"] is True
    assert body["payload"]["path_to_image"] == body["payload"]["path_input_image"] == IMAGE_URL
    assert result.frames.shape[0] == RESULT_FRAMES


def test_gmi_gets_a_tensor_image_as_png_data_uri(serve):
    standin = serve("gmi")
    run_remote("gmi", i2v_request("gmi", image=image(32, 40)), settings=FAST)
    uri = submitted(standin)["payload"]["path_to_image"]
    assert uri.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == (40, 32)


# ---------------------------------------------------------------------------------------------------- waiting


@pytest.mark.parametrize("provider", ["novita", "wavespeed"])
def test_slow_job_reports_progress_on_every_poll(serve, provider):
    standin = serve(provider)
    standin.polls_to_finish = 25
    seen = []
    run_remote(provider, i2v_request(provider), settings=FAST, on_progress=seen.append)

    polls = [progress for progress in seen if progress.polls]
    assert len(standin.calls("poll")) == 25
    assert [progress.polls for progress in polls if progress.status != "downloading"] == list(range(1, 26))
    assert [progress.elapsed for progress in seen] == sorted(progress.elapsed for progress in seen)
    assert seen[0].status == "submitting" and seen[-1].status == "downloading"
    if provider == "novita":  # the only one of the two that gives a percent
        percents = [progress.percent for progress in polls if progress.percent is not None]
        assert percents == sorted(percents) and percents[-1] == 100
    else:
        assert {progress.status for progress in polls} >= {"created", "processing", "completed"}
        assert "job " in polls[0].line() and " s)" in polls[0].line()


def test_job_that_never_finishes_hits_the_time_limit_with_its_job_id(serve):
    standin = serve("novita")
    standin.outcome = "never"
    settings = WaitSettings(total_timeout=0.4, poll_interval=0.05, backoff_base=0.01)
    error = raised(RemoteTimeoutError, "novita", i2v_request("novita"), settings=settings)
    (job_id,) = standin.jobs
    assert job_id in str(error) and "time limit of 0.4 s" in str(error)
    # it polled while the limit lasted, then stopped: at 0.05 s a poll, 0.4 s allows at most 8 and a few in flight
    assert 3 <= len(standin.calls("poll")) <= 12


def test_stop_request_ends_the_wait_within_a_second(serve):
    standin = serve("wavespeed")
    standin.outcome = "never"
    stop = threading.Event()

    def press_stop_while_waiting_for_the_second_poll():
        while not standin.calls("poll"):
            time.sleep(0.005)
        time.sleep(0.1)
        stop.set()

    threading.Thread(target=press_stop_while_waiting_for_the_second_poll, daemon=True).start()
    settings = WaitSettings(poll_interval=3, backoff_base=0.01)
    error = raised(RemoteCancelled, "wavespeed", i2v_request("wavespeed"), settings=settings, should_stop=stop.is_set)
    assert len(standin.calls("poll")) == 1  # stopped inside the 3 s wait: the second poll never came
    assert next(iter(standin.jobs)) in str(error)


def test_should_stop_may_raise_its_own_interrupt(serve):
    serve("gmi")

    class HostInterrupt(Exception):
        pass

    def should_stop():
        raise HostInterrupt

    with pytest.raises(HostInterrupt):
        run_remote("gmi", i2v_request("gmi"), settings=FAST, should_stop=should_stop)


# ---------------------------------------------------------------------------------------------------- retries


def test_poll_rate_limit_and_server_errors_are_retried_then_succeed(serve):
    standin = serve("novita")
    standin.faults["poll"] = [Fault(429, "RATE_LIMIT_EXCEEDED"), Fault(503, "SERVICE_NOT_AVAILABLE"), Fault(502)]
    standin.faults["download"] = [Fault(503)]
    result = run_remote("novita", i2v_request("novita"), settings=FAST)
    assert result.frames.shape[0] == RESULT_FRAMES
    assert len(standin.calls("poll")) == 3 + standin.polls_to_finish
    assert len(standin.calls("download")) == 2


def test_retry_after_is_honoured(serve):
    standin = serve("gmi")
    standin.faults["poll"] = [Fault(429, retry_after="1")]
    started = time.monotonic()
    run_remote("gmi", i2v_request("gmi"), settings=FAST)
    waited = time.monotonic() - started
    assert waited >= 1.0  # a lower bound: the 1 s the server asked for was waited, however loaded the machine


def test_rate_limit_that_outlasts_the_retries_is_a_rate_limit_error(serve):
    standin = serve("highway")
    standin.faults["poll"] = [Fault(429, "RATE_LIMIT_EXCEEDED", "slow down")] * (FAST.max_retries + 1)
    error = raised(RateLimitError, "highway", i2v_request("highway"))
    assert "rate limit" in str(error) and "HTTP 429" in str(error) and "wait a minute" in str(error)
    assert len(standin.calls("poll")) == FAST.max_retries + 1


@pytest.mark.parametrize("provider, status", [("wavespeed", 502), ("wavespeed", 503), ("novita", 503), ("highway", 503)])
def test_submit_is_not_repeated_after_a_server_error(serve, provider, status):
    """WaveSpeedAI's SDK never resubmits; Novita and HighwayAPI do not document what a 503 left behind."""
    standin = serve(provider)
    standin.faults["submit"] = [Fault(status, message="bad gateway")]
    error = raised(ProviderError, provider, i2v_request(provider))
    assert len(standin.calls("submit")) == 1
    assert f"HTTP {status}" in str(error) and "the job may exist anyway, so it was not sent again" in str(error)


def test_gmi_submit_refused_with_503_is_sent_again(serve):
    """GMI documents 503 as an answer to retry: the request was refused, so no job exists."""
    standin = serve("gmi")
    standin.faults["submit"] = [Fault(503, message="overloaded")]
    run_remote("gmi", i2v_request("gmi"), settings=FAST)
    assert len(standin.calls("submit")) == 2 and len(standin.jobs) == 1


def test_gmi_submit_refused_until_the_retries_run_out_says_no_job_exists(serve):
    standin = serve("gmi")
    standin.faults["submit"] = [Fault(503, message="overloaded")] * (FAST.max_retries + 1)
    error = raised(ProviderError, "gmi", i2v_request("gmi"))
    assert len(standin.calls("submit")) == FAST.max_retries + 1 and not standin.jobs
    assert "HTTP 503" in str(error) and "no job exists and running again is safe" in str(error)


def test_submit_refused_with_429_is_sent_again(serve):
    standin = serve("novita")
    standin.faults["submit"] = [Fault(429, "RATE_LIMIT_EXCEEDED")]
    run_remote("novita", i2v_request("novita"), settings=FAST)
    assert len(standin.calls("submit")) == 2


def test_unreachable_provider_says_so(remote_env):
    remote_env.setenv("GMI_API_KEY", FAKE_KEY)
    remote_env.setenv("GMI_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    error = raised(ProviderError, "gmi", i2v_request("gmi"))
    assert "could not be reached" in str(error) and "GMI_BASE_URL" in str(error)


# ---------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_bad_key_is_an_auth_error_without_the_key(serve, monkeypatch, provider):
    standin = serve(provider)
    monkeypatch.setenv(f"{provider.upper()}_API_KEY", WRONG_KEY)  # the stand-in echoes it back
    error = raised(AuthError, provider, i2v_request(provider))
    assert "rejected the API key" in str(error) and f"{provider.upper()}_API_KEY" in str(error)
    assert "HTTP 401" in str(error) and "***" in str(error)
    assert standin.jobs == {}


@pytest.mark.parametrize(
    "provider, fault",
    [
        ("wavespeed", Fault(402, message="insufficient credits")),
        ("gmi", Fault(402, message="no credits left")),
        ("novita", Fault(403, "BILLING_BALANCE_NOT_ENOUGH", "balance not enough")),
        ("highway", Fault(403, "NOT_ENOUGH_BALANCE", "top up")),
    ],
)
def test_out_of_credit(serve, provider, fault):
    standin = serve(provider)
    standin.faults["submit"] = [fault]
    error = raised(OutOfCreditError, provider, i2v_request(provider))
    assert "out of credit" in str(error) and fault.message in str(error)


def test_forbidden_without_a_balance_reason_is_an_auth_error(serve):
    standin = serve("highway")
    standin.faults["submit"] = [Fault(403, "ACCESS_DENY", "not allowed")]
    assert "ACCESS_DENY" in str(raised(AuthError, "highway", i2v_request("highway")))


def test_wavespeed_envelope_code_is_an_error_under_http_200(serve):
    standin = serve("wavespeed")
    standin.faults["poll"] = [Fault(401, message="token invalid", in_envelope=True)]
    assert "token invalid" in str(raised(AuthError, "wavespeed", i2v_request("wavespeed")))


def test_bad_request_names_the_provider_and_its_message(serve):
    standin = serve("novita")
    standin.faults["submit"] = [Fault(400, "INVALID_REQUEST_BODY", "image_url is not reachable")]
    error = raised(ProviderError, "novita", i2v_request("novita"))
    assert "Novita AI refused POST /v3/async/wan-i2v" in str(error) and "image_url is not reachable" in str(error)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_task_failure_gives_the_providers_reason(serve, provider):
    standin = serve(provider)
    standin.outcome = "failed"
    error = raised(TaskFailedError, provider, i2v_request(provider))
    assert str(error).startswith(f"Task failed: {standin.fail_reason}")
    assert next(iter(standin.jobs)) in str(error)


def test_nsfw_flagged_output(serve):
    standin = serve("wavespeed")
    standin.outcome = "nsfw"
    error = raised(NsfwError, "wavespeed", i2v_request("wavespeed"))
    assert "NSFW" in str(error) and "safety checker" in str(error)
    assert standin.calls("download") == []


def test_download_that_is_not_a_video(serve, tmp_path):
    standin = serve("highway")
    standin.video_bytes, standin.video_content_type = b"<html>gateway error</html>", "text/html"
    out = tmp_path / "result.mp4"
    error = raised(NotAVideoError, "highway", i2v_request("highway"), out_path=out)
    assert "not a video" in str(error) and "text/html" in str(error)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_expired_result_url(serve):
    standin = serve("gmi")
    standin.url_ttl = -1
    error = raised(DownloadError, "gmi", i2v_request("gmi"))
    assert "HTTP 403" in str(error) and "expired" in str(error) and next(iter(standin.jobs)) in str(error)


# ---------------------------------------------------------------------------------------------------- faults after submit


def fetch_command(provider: str, job_id: str) -> str:
    return f"python -m wan_core remote --provider {provider} fetch {job_id} --out OUT.mp4"


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("status, shown", [(None, "status=None"), ("PAUSED_FOR_NO_REASON", "status='PAUSED_FOR_NO_REASON'")])
def test_poll_without_a_known_status_stops_at_once_naming_the_job(serve, provider, status, shown):
    standin = serve(provider)
    standin.poll_status = status
    error = raised(ProviderError, provider, i2v_request(provider))
    (job_id,) = standin.jobs
    assert len(standin.calls("poll")) == 1  # not waited out to the time limit
    assert f"answered a poll with {shown}" in str(error) and "expected one of" in str(error)
    assert fetch_command(provider, job_id) in str(error)


@pytest.mark.parametrize(
    "provider, fault, words",
    [
        ("gmi", Fault(200, body=b"<html>maintenance</html>", content_type="text/html"), "with text/html, not a JSON"),
        ("novita", Fault(200, body=b'{"videos": []}', content_type="application/json"), "without 'task'"),
        ("wavespeed", Fault(200, body=b'{"code": 200, "data": "done"}', content_type="application/json"),
         "without 'data' (data='done', not a dict)"),
    ],
)
def test_malformed_poll_answer_stops_at_once_naming_the_job(serve, provider, fault, words):
    standin = serve(provider)
    standin.faults["poll"] = [fault]
    error = raised(ProviderError, provider, i2v_request(provider))
    (job_id,) = standin.jobs
    assert len(standin.calls("poll")) == 1
    assert words in str(error) and fetch_command(provider, job_id) in str(error)


def test_time_limit_holds_while_a_host_trickles_the_video(serve, tmp_path):
    standin = serve("wavespeed")
    standin.polls_to_finish, standin.trickle_delay = 1, 0.05
    out = tmp_path / "result.mp4"
    error = raised(RemoteTimeoutError, "wavespeed", i2v_request("wavespeed"), out_path=out,
                   settings=WaitSettings(total_timeout=5, poll_interval=0.01))
    (job_id,) = standin.jobs
    assert "time limit of 5 s reached while downloading the video" in str(error)
    assert fetch_command("wavespeed", job_id) in str(error)
    assert standin.bytes_served < len(standin.video_bytes) / 2  # stopped long before the body's end
    assert not list(tmp_path.iterdir())


def test_cut_off_download_resumes_where_it_stopped(serve, tmp_path):
    standin = serve("novita")
    standin.download_cuts = [700, 500]
    out = tmp_path / "result.mp4"
    result = run_remote("novita", i2v_request("novita"), settings=FAST, out_path=out)
    assert out.read_bytes() == standin.video_bytes and result.frames.shape[0] == RESULT_FRAMES
    assert standin.download_ranges == [None, "bytes=700-", "bytes=1200-"]
    assert standin.bytes_served == len(standin.video_bytes)
    assert len(standin.calls("submit")) == 1 and list(tmp_path.iterdir()) == [out]


def test_download_cut_off_more_often_than_the_retries_names_the_job(serve, tmp_path):
    standin = serve("gmi")
    standin.download_cuts = [100] * (FAST.max_retries + 1)
    out = tmp_path / "result.mp4"
    error = raised(DownloadError, "gmi", i2v_request("gmi"), out_path=out)
    (job_id,) = standin.jobs
    assert f"broke off {FAST.max_retries + 1} times" in str(error) and fetch_command("gmi", job_id) in str(error)
    assert not list(tmp_path.iterdir())


def test_a_timed_out_job_is_fetched_later_by_its_id(serve, tmp_path):
    standin = serve("wavespeed")
    standin.outcome = "never"
    error = raised(RemoteTimeoutError, "wavespeed", i2v_request("wavespeed", seed=5),
                   settings=WaitSettings(total_timeout=0.3, poll_interval=0.05))
    (job_id,) = standin.jobs
    assert fetch_command("wavespeed", job_id) in str(error)

    standin.outcome = "success"
    out = tmp_path / "later.mp4"
    result = fetch_remote("wavespeed", job_id, settings=FAST, out_path=out)
    assert result.job_id == job_id and out.read_bytes() == standin.video_bytes
    assert len(standin.calls("submit")) == 1  # fetching never submits


def test_fetch_of_an_unknown_job_says_so(serve):
    serve("novita")
    with pytest.raises(ProviderError, match="HTTP 404"):
        fetch_remote("novita", "no-such-job", settings=FAST)


def test_stop_during_the_download_names_the_job(serve, tmp_path):
    standin = serve("highway")
    standin.trickle_delay = 0.05
    stop = threading.Event()

    def stop_once_bytes_arrive():
        while not standin.bytes_served:
            time.sleep(0.005)
        stop.set()

    threading.Thread(target=stop_once_bytes_arrive, daemon=True).start()
    error = raised(RemoteCancelled, "highway", i2v_request("highway"), should_stop=stop.is_set,
                   out_path=tmp_path / "result.mp4")
    (job_id,) = standin.jobs
    assert "stopped on request" in str(error) and fetch_command("highway", job_id) in str(error)
    assert standin.bytes_served < len(standin.video_bytes) / 2 and not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "provider, changes, words",
    [
        ("wavespeed", {"steps": 41}, "WaveSpeedAI i2v steps=41 is out of range: allowed 1 to 40"),
        ("novita", {"guidance_scale": 12.0}, "Novita AI i2v guidance_scale=12.0 is out of range: allowed 0 to 10"),
        ("wavespeed", {"guidance_scale": 20.5}, "allowed 0 to 20"),
        ("novita", {"seed": 10**10}, "allowed -1 to 9999999999"),
        ("gmi", {"seed": 2**31}, "allowed -1 to 2147483647"),
        ("wavespeed", {"flow_shift": 0.5}, "flow_shift=0.5 is out of range"),
        ("wavespeed", {"duration": 11}, "duration=11 is out of range: allowed 5 to 10"),
        ("gmi", {"duration": 7}, "GMI Cloud i2v duration=7 is not allowed: choose one of 5, 10"),
        ("novita", {"duration": 10}, "Novita AI i2v has no duration parameter: got duration=10, allowed only the default 5"),
        ("gmi", {"steps": 20}, "GMI Cloud i2v has no steps parameter: got steps=20"),
        ("gmi", {"negative_prompt": "blurry"}, "GMI Cloud i2v has no negative_prompt parameter"),
        ("gmi", {"fast": True}, "GMI Cloud i2v has no fast parameter"),
        ("gmi", {"safety_checker": False}, "GMI Cloud i2v has no safety_checker parameter"),
        ("gmi", {"loras": (LoraEntry("a/b"),)}, "GMI Cloud i2v has no loras parameter"),
        ("wavespeed", {"prompt_extend": True}, "WaveSpeedAI i2v has no prompt_extend parameter"),
        ("highway", {"strength": 0.5}, "HighwayAPI i2v has no strength parameter"),
        ("wavespeed", {"size": "1024*576"}, "size='1024*576' is not allowed: choose one of 832*480"),
        ("novita", {"prompt": "x" * 2001}, "length of Novita AI i2v prompt=2001 is out of range: allowed 1 to 2000"),
        ("gmi", {"prompt": "  "}, "prompt='  ' is empty"),
        ("wavespeed", {"loras": tuple(LoraEntry(f"o/l{i}") for i in range(4))}, "loras=4 is out of range: allowed 0 to 3"),
        ("novita", {"loras": (LoraEntry("my_style.safetensors"),)}, "cannot use a file on this machine"),
        ("wavespeed", {"loras": (LoraEntry("loras/style.safetensors"),)}, "is not a hub repo id (owner/name)"),
        ("novita", {"task": "v2v"}, "Novita AI task='v2v' is not allowed: choose one of i2v"),
        ("novita", {"image": image(), "image_url": None}, "takes the image only as a URL (image_url)"),
        ("highway", {"image": image(), "image_url": None}, "no upload endpoint"),
        ("wavespeed", {"image_url": IMAGE_URL}, "exactly one of image or image_url: got both"),
        ("gmi", {"image": None}, "exactly one of image or image_url: got neither"),
        ("gmi", {"image": None, "image_url": "ftp://example.com/cat.png"}, "is not an http(s) URL"),
        ("wavespeed", {"image": torch.rand(48, 64, 3)}, "image has shape (48, 64, 3)"),
        ("wavespeed", {"video_url": "https://example.com/v.mp4"}, "takes image or image_url, not video"),
    ],
)
def test_invalid_parameters_are_refused_before_anything_is_sent(serve, provider, changes, words):
    standin = serve(provider)
    error = raised(RemoteInputError, provider, i2v_request(provider, **changes))
    assert isinstance(error, WanInputError) and isinstance(error, ValueError)
    assert words in str(error)
    assert standin.requests == []


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"size": "832*480"}, "WaveSpeedAI v2v has no size parameter"),
        ({"strength": 0.05}, "WaveSpeedAI v2v strength=0.05 is out of range: allowed 0.1 to 1.0"),
        ({"safety_checker": False}, "WaveSpeedAI v2v has no safety_checker parameter"),
        ({"video": torch.rand(4, 47, 64, 3)}, "video size 64x47: uploading it as H.264 needs even width and height"),
    ],
)
def test_invalid_v2v_parameters_are_refused_before_anything_is_sent(serve, changes, words):
    standin = serve("wavespeed")
    assert words in str(raised(RemoteInputError, "wavespeed", v2v_request(**changes)))
    assert standin.requests == []


def test_none_keeps_the_provider_default_and_a_blank_url_is_no_url(serve):
    """How a node passes inputs it leaves unset: None for a parameter, an empty text widget for a URL."""
    standin = serve("gmi")
    request = i2v_request("gmi", image_url="  ", steps=None, guidance_scale=None, seed=None, duration=None)
    run_remote("gmi", request, settings=FAST)
    payload = submitted(standin)["payload"]
    assert "seed" not in payload and "video_length" not in payload
    assert payload["path_to_image"].startswith("data:image/png;base64,")


def test_unknown_provider(remote_env):
    error = raised(RemoteInputError, "runway", i2v_request("gmi"))
    assert "provider='runway' is not allowed: choose one of wavespeed, novita, gmi, highway" in str(error)


# ---------------------------------------------------------------------------------------------------- keys


def test_missing_key_says_where_to_put_it(serve, monkeypatch):
    standin = serve("novita")
    monkeypatch.delenv("NOVITA_API_KEY")
    error = raised(RemoteInputError, "novita", i2v_request("novita"))
    assert "NOVITA_API_KEY" in str(error) and "no-keys.json" in str(error)
    assert standin.requests == []


def test_key_from_the_keys_file(serve, monkeypatch, tmp_path):
    standin = serve("wavespeed")
    monkeypatch.delenv("WAVESPEED_API_KEY")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"wavespeed": FAKE_KEY}))
    monkeypatch.setenv("WANFLOW_KEYS_FILE", str(keys))
    run_remote("wavespeed", i2v_request("wavespeed"), settings=FAST)
    assert standin.requests and all(request.authorized for request in standin.calls("submit"))


def test_broken_keys_file_is_reported_without_its_content(serve, monkeypatch, tmp_path):
    serve("gmi")
    monkeypatch.delenv("GMI_API_KEY")
    keys = tmp_path / "keys.json"
    keys.write_text('{"gmi": "' + FAKE_KEY)  # unterminated
    monkeypatch.setenv("WANFLOW_KEYS_FILE", str(keys))
    error = raised(RemoteInputError, "gmi", i2v_request("gmi"))
    assert "keys.json" in str(error) and "is not readable" in str(error)
