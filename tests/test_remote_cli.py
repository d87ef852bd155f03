"""`python -m wan_core remote ...` against stand-in provider APIs.

A few tests run it as a real subprocess (a whole job, an early exit, Ctrl-C); the rest call wan_core.cli.main in
this process, the same parser and exit codes without paying the interpreter start-up each time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from remote_standin import (  # noqa: F401  (the *_fixture names are fixtures, used by name)
    FAKE_KEY,
    PROVIDER_NAMES,
    WRONG_KEY,
    no_key_in_output_fixture,
    remote_env_fixture,
    serve_fixture,
)

from wan_core.cli.main import main
from wan_core.lora.stack import LoraEntry, stack_from_options
from wan_core.video_io import write_video

REPO = Path(__file__).resolve().parents[1]
IMAGE_URL = "https://example.com/cat.png"
QUICK = ["--poll-interval", "0.02"]


def cli_env() -> dict:
    """This process's environment as the tests set it up (stand-in URLs, the fake key), for the subprocess."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def remote_command(provider: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "wan_core", "remote", "--provider", provider, *args]


def run_cli(provider: str, *args: str) -> subprocess.CompletedProcess:
    """The command in a subprocess, as a user runs it."""
    completed = subprocess.run(
        remote_command(provider, *args), cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60
    )
    for key in (FAKE_KEY, WRONG_KEY):
        assert key not in completed.stdout + completed.stderr
    return completed


def run_main(capfd, provider: str, *args: str) -> subprocess.CompletedProcess:
    """The command through wan_core.cli.main in this process."""
    returncode = main(["remote", "--provider", provider, *args])
    out, err = capfd.readouterr()
    for key in (FAKE_KEY, WRONG_KEY):
        assert key not in out + err
    return subprocess.CompletedProcess(args, returncode, out, err)


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "cat.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(path)
    return path


def test_subprocess_i2v_writes_the_downloaded_mp4_and_prints_the_job(serve, image_file, tmp_path):
    standin = serve("wavespeed")
    out = tmp_path / "out" / "cat.mp4"
    completed = run_cli("wavespeed", "i2v", "--image", str(image_file), "--prompt", "a cat", "--out", str(out), *QUICK)

    assert completed.returncode == 0, completed.stderr
    assert out.read_bytes() == standin.video_bytes
    (job_id,) = standin.jobs
    assert f"job id: {job_id}" in completed.stdout and f"saved: {out}" in completed.stdout
    assert standin.uploads[0][1] == "image/png"


def test_subprocess_invalid_input_exits_2_before_anything_is_sent(serve, image_file, tmp_path):
    standin = serve("novita")
    out = tmp_path / "x.mp4"
    completed = run_cli("novita", "i2v", "--image", str(image_file), "--prompt", "a cat", "--out", str(out))
    assert completed.returncode == 2
    assert "error: Novita AI i2v takes the image only as a URL (image_url)" in completed.stderr
    assert standin.requests == [] and not out.exists()


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_i2v_writes_the_downloaded_mp4_and_prints_the_job(serve, capfd, provider, image_file, tmp_path):
    standin = serve(provider)
    out = tmp_path / "out" / "cat.mp4"
    image = ["--image-url", IMAGE_URL] if provider in ("novita", "highway") else ["--image", str(image_file)]
    completed = run_main(capfd, provider, "i2v", *image, "--prompt", "a cat surfing", "--out", str(out), *QUICK)

    assert completed.returncode == 0, completed.stderr
    assert out.read_bytes() == standin.video_bytes
    (job_id,) = standin.jobs
    assert f"job id: {job_id}" in completed.stdout
    assert "seed: " in completed.stdout and f"saved: {out}" in completed.stdout
    assert f"job {job_id}: " in completed.stdout  # a progress line


def test_v2v_uploads_the_video_with_fast_loras_and_strength(serve, capfd, tmp_path):
    standin = serve("wavespeed")
    source = write_video(tmp_path / "source.mp4", torch.rand(5, 32, 48, 3), fps=12)
    out = tmp_path / "snow.mp4"
    completed = run_main(
        capfd,
        "wavespeed", "v2v", "--video", str(source), "--prompt", "make it snow", "--strength", "0.6", "--fast",
        "--lora", "motimalu/wan-flat-color-v2:0.7", "--lora", "https://example.com/style.safetensors",
        "--seed", "11", "--out", str(out), *QUICK,
    )
    assert completed.returncode == 0, completed.stderr
    (submit,) = standin.calls("submit")
    assert submit.path == "/api/v3/wavespeed-ai/wan-2.1/v2v-480p-lora-ultra-fast"
    assert submit.json["strength"] == 0.6 and submit.json["seed"] == 11
    assert submit.json["loras"] == [
        {"path": "motimalu/wan-flat-color-v2", "scale": 0.7},
        {"path": "https://example.com/style.safetensors", "scale": 1.0},
    ]
    assert standin.uploads[0][1] == "video/mp4"
    assert out.read_bytes() == standin.video_bytes


def test_provider_options_reach_the_provider(serve, capfd, image_file, tmp_path):
    standin = serve("gmi")
    completed = run_main(
        capfd,
        "gmi", "i2v", "--image", str(image_file), "--prompt", "a cat", "--size", "1280x720", "--duration", "10",
        "--prompt-extend", "--out", str(tmp_path / "cat.mp4"), *QUICK,
    )
    assert completed.returncode == 0, completed.stderr
    (submit,) = standin.calls("submit")
    assert submit.json["model"] == "Wan-AI_Wan2.1-I2V-14B-720P"
    assert submit.json["payload"]["video_length"] == 10 and submit.json["payload"]["prompt_extend"] is True


def test_a_resolution_sends_its_size_in_the_pictures_orientation(serve, capfd, tmp_path):
    portrait = tmp_path / "portrait.png"
    Image.new("RGB", (48, 64), (10, 20, 30)).save(portrait)
    standin = serve("wavespeed")
    completed = run_main(capfd, "wavespeed", "i2v", "--image", str(portrait), "--prompt", "a cat", "--resolution",
                         "720p", "--out", str(tmp_path / "cat.mp4"), *QUICK)
    assert completed.returncode == 0, completed.stderr
    (submit,) = standin.calls("submit")
    assert submit.path.endswith("/i2v-720p") and submit.json["size"] == "720*1280"


@pytest.mark.parametrize(
    "provider, args, words",
    [
        ("gmi", ["--image-url", IMAGE_URL, "--steps", "20"], "error: GMI Cloud i2v has no steps parameter: got steps=20"),
        ("novita", ["--image-url", IMAGE_URL, "--guidance-scale", "11"], "guidance_scale=11.0 is out of range: allowed 0 to 10"),
        ("highway", ["--image", "{image}"], "takes the image only as a URL (image_url)"),
        ("gmi", ["--image", "missing.png"], "--image='missing.png': no such file"),
        ("wavespeed", ["--image-url", IMAGE_URL, "--no-safety-checker", "--size", "640*640"], "size='640*640' is not allowed"),
        ("wavespeed", ["--image-url", IMAGE_URL, "--lora", "a/b:5"], "scale of LoRA 'a/b'=5.0 is out of range: allowed 0.0 to 4.0"),
    ],
)
def test_invalid_input_exits_2_before_anything_is_sent(serve, capfd, provider, args, words, image_file, tmp_path):
    standin = serve(provider)
    args = [arg.format(image=image_file) for arg in args]
    completed = run_main(capfd, provider, "i2v", *args, "--prompt", "a cat", "--out", str(tmp_path / "x.mp4"))
    assert completed.returncode == 2
    assert words in completed.stderr
    assert standin.requests == []
    assert not (tmp_path / "x.mp4").exists()


def test_bad_key_exits_1_with_advice_and_no_key(serve, capfd, tmp_path, monkeypatch):
    serve("novita")
    monkeypatch.setenv("NOVITA_API_KEY", WRONG_KEY)
    completed = run_main(capfd, "novita", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat", "--out", str(tmp_path / "x.mp4"))
    assert completed.returncode == 1
    assert "error: Novita AI rejected the API key: check NOVITA_API_KEY" in completed.stderr


def test_time_limit_exits_1_naming_the_job(serve, capfd, tmp_path):
    standin = serve("highway")
    standin.outcome = "never"
    completed = run_main(
        capfd,
        "highway", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat", "--out", str(tmp_path / "x.mp4"),
        "--timeout", "0.5", *QUICK,
    )
    assert completed.returncode == 1
    (job_id,) = standin.jobs
    assert "time limit of 0.5 s reached" in completed.stderr and job_id in completed.stderr


def test_ctrl_c_stops_waiting_at_once_and_names_the_job(serve, tmp_path):
    standin = serve("wavespeed")
    standin.outcome = "never"
    process = subprocess.Popen(
        remote_command("wavespeed", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat",
                       "--out", str(tmp_path / "x.mp4"), "--poll-interval", "5"),
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not standin.calls("poll") and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)  # generous: a loaded machine is slow, not stuck
    finally:
        process.kill()
    (job_id,) = standin.jobs
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert f"python -m wan_core remote --provider wavespeed fetch {job_id} --out OUT.mp4" in stderr
    assert len(standin.calls("poll")) == 1  # the 5 s wait for the next poll was cut short
    assert not list(tmp_path.iterdir())


def test_time_limit_holds_while_the_video_trickles_in(serve, capfd, tmp_path):
    standin = serve("novita")
    standin.polls_to_finish, standin.trickle_delay = 1, 0.05
    completed = run_main(capfd, "novita", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat",
                         "--out", str(tmp_path / "x.mp4"), "--timeout", "5", *QUICK)
    (job_id,) = standin.jobs
    assert completed.returncode == 1
    assert "time limit of 5 s reached while downloading the video" in completed.stderr and job_id in completed.stderr
    assert standin.bytes_served < len(standin.video_bytes) / 2 and not list(tmp_path.iterdir())


def test_fetch_saves_the_video_of_an_earlier_job(serve, capfd, tmp_path):
    standin = serve("gmi")
    standin.outcome = "never"
    first = run_main(capfd, "gmi", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat",
                     "--out", str(tmp_path / "x.mp4"), "--timeout", "0.3", *QUICK)
    (job_id,) = standin.jobs
    assert first.returncode == 1 and f"fetch {job_id} --out OUT.mp4" in first.stderr

    standin.outcome = "success"
    out = tmp_path / "later.mp4"
    completed = run_main(capfd, "gmi", "fetch", job_id, "--out", str(out), *QUICK)
    assert completed.returncode == 0, completed.stderr
    assert out.read_bytes() == standin.video_bytes and f"job id: {job_id}" in completed.stdout
    assert len(standin.calls("submit")) == 1


def test_out_is_checked_before_anything_is_sent(serve, capfd, image_file, tmp_path):
    standin = serve("wavespeed")
    source = write_video(tmp_path / "source.mp4", torch.rand(5, 32, 48, 3), fps=12)
    original = source.read_bytes()
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "link.mp4").symlink_to(source)
    cases = [
        (["i2v", "--image", str(image_file), "--out", str(tmp_path / "folder.mp4")], "is a folder"),
        (["i2v", "--image", str(image_file), "--out", str(image_file / "x.mp4")], "is a file, not a folder"),
        (["v2v", "--video", str(source), "--out", str(source)], "is the same file as --video"),
        (["v2v", "--video", str(source), "--out", str(tmp_path / "link.mp4")], "is the same file as --video"),
        (["v2v", "--video", str(tmp_path / "." / "source.mp4"), "--out", str(source)], "is the same file as --video"),
    ]
    for args, words in cases:
        completed = run_main(capfd, "wavespeed", *args, "--prompt", "a cat")
        assert completed.returncode == 2 and words in completed.stderr, (args, completed.stderr)
        assert completed.stderr.startswith("error: --out=")
    assert standin.requests == [] and source.read_bytes() == original


def test_four_loras_are_refused_in_command_line_words(serve, capfd, tmp_path):
    standin = serve("wavespeed")
    loras = [arg for index in range(4) for arg in ("--lora", f"owner/lora{index}")]
    completed = run_main(capfd, "wavespeed", "i2v", "--image-url", IMAGE_URL, "--prompt", "a cat", *loras,
                         "--out", str(tmp_path / "x.mp4"))
    assert completed.returncode == 2
    assert "error: --lora given 4 times: allowed at most 3" in completed.stderr and standin.requests == []


@pytest.mark.parametrize(
    "text, entry",
    [
        ("motimalu/wan-flat-color-v2", LoraEntry("motimalu/wan-flat-color-v2", 1.0)),
        ("owner/name:0.8", LoraEntry("owner/name", 0.8)),
        ("https://example.com/a.safetensors", LoraEntry("https://example.com/a.safetensors", 1.0)),
        ("https://example.com:8080/a.safetensors:2", LoraEntry("https://example.com:8080/a.safetensors", 2.0)),
    ],
)
def test_lora_option_splits_off_a_trailing_scale(text, entry):
    assert stack_from_options([text]) == (entry,)
