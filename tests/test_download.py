"""`python -m wan_core download` against a hub stand-in on 127.0.0.1: layout, resume, skip, refusal, offline."""

import os
import socket

import pytest

from wan_core.cli.main import main
from wan_core.files.download import REPO_ID, set_files

from hub_standin import HubStandIn


def payload(seed: int, size: int) -> bytes:
    return bytes((seed * 7919 + i * 31) % 251 for i in range(size))


@pytest.fixture
def hub(monkeypatch):
    files = {(REPO_ID, path): payload(n, 300_000 + 1000 * n) for n, path in enumerate(set_files("t2v-1.3b", "bf16"))}
    with HubStandIn(files) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_set_files_are_comfyui_repackaged_paths():
    assert set_files("i2v-480p") == [
        "split_files/diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors", "split_files/vae/wan_2.1_vae.safetensors",
        "split_files/text_encoders/umt5_xxl_fp16.safetensors", "split_files/clip_vision/clip_vision_h.safetensors"]
    assert set_files("t2v-14b", "fp8_scaled")[2] == "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"


def test_download_resumes_on_the_next_run_and_skips_a_present_file(hub, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384)  # write small files in several chunks, like big ones
    models = tmp_path / "models"
    model_path = "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"
    vae_path = "split_files/vae/wan_2.1_vae.safetensors"
    present = models / "vae" / "wan_2.1_vae.safetensors"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"u" * len(hub.files[(REPO_ID, vae_path)]))  # right size: it is kept as it is
    command = ["download", "t2v-1.3b", "--models-dir", str(models), "--precision", "bf16"]

    # First run: the transfer breaks after 98304 bytes (6 chunks) and the hub then goes away.
    hub.cut_after[model_path] = 98304
    hub.unavailable_after_cut = True
    assert main(command) == 2
    assert "run the same command again to resume" in capsys.readouterr().err
    assert not (models / "diffusion_models" / "wan2.1_t2v_1.3B_bf16.safetensors").exists()

    # Second run: the hub is back; the download continues where it stopped.
    hub.unavailable.clear()
    assert main(command) == 0
    for _, path in hub.files:
        target = models / path.removeprefix("split_files/")
        assert target.is_file()
        if path != vae_path:
            assert target.read_bytes() == hub.files[(REPO_ID, path)]
    assert present.read_bytes() == b"u" * len(hub.files[(REPO_ID, vae_path)])
    gets = [(path, byte_range) for method, path, byte_range in hub.log if method == "GET"]
    assert (model_path, "bytes=98304-") in gets  # the second run asked only for the missing part
    assert all(path != vae_path for path, _ in gets)  # the present file was checked by size, never fetched
    assert not (models / ".wanflow-download").exists()
    assert f"skipped: {present}" in capsys.readouterr().out


def test_a_present_file_of_another_size_is_left_alone(hub, tmp_path, capsys):
    models = tmp_path / "models"
    other = models / "diffusion_models" / "wan2.1_t2v_1.3B_bf16.safetensors"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"mine")
    assert main(["download", "t2v-1.3b", "--models-dir", str(models), "--precision", "bf16"]) == 2
    assert f"{other} exists with 4 bytes but the hub's file has 300000" in capsys.readouterr().err
    assert other.read_bytes() == b"mine"


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["download", "i2v-480p", "--models-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "cannot reach the hub for Comfy-Org/Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/" in error
    assert os.listdir(tmp_path) == []
