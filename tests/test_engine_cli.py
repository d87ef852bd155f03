"""`python -m wan_core i2v|v2v` end to end with the tiny model, and bad input refused before any model is built."""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from wan_core.cli.main import main
from wan_core.video_io import read_video, write_video

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "first_frame.png"
SMALL = ["--size", "80*64", "--frames", "9", "--steps", "3"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "wan_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=600)


def test_i2v_writes_a_playable_81_frame_16_fps_mp4(tiny_cache, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_cli("i2v", "--model", "tiny", "--image", IMAGE, "--prompt", "a sunny valley", "--size", "160*96",
                     "--duration", "5", "--steps", "4", "--seed", "11", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "seed: 11" in result.stdout and "wall time" in result.stdout
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (160, 96, 16)
        assert sum(1 for _ in container.decode(stream)) == 81


def test_seed_reproduces_and_a_new_seed_changes_the_video(tiny_cache, tmp_path):
    outputs = {}
    for name, seed in [("first", 5), ("again", 5), ("other", 6)]:
        outputs[name] = tmp_path / f"{name}.mp4"
        assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", *SMALL,
                     "--seed", str(seed), "--out", str(outputs[name])]) == 0
    frames = {name: read_video(path)[0] for name, path in outputs.items()}
    assert torch.equal(frames["first"], frames["again"])
    assert (frames["first"] - frames["other"]).abs().mean() > 1e-3


def test_random_seed_is_reported_and_reproduces(tiny_cache, tmp_path, capsys):
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", *SMALL,
                 "--out", str(tmp_path / "a.mp4")]) == 0
    seed = capsys.readouterr().out.split("seed: ")[1].split()[0]
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", *SMALL,
                 "--seed", seed, "--out", str(tmp_path / "b.mp4")]) == 0
    assert torch.equal(read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0])


def test_v2v_on_the_tiny_t2v_and_i2v_models(tiny_cache, tmp_path):
    source = tmp_path / "source.mp4"
    write_video(source, torch.rand(13, 64, 80, 3, generator=torch.Generator().manual_seed(0)))
    out = tmp_path / "v2v.mp4"
    assert main(["v2v", "--model", "tiny", "--video", str(source), "--prompt", "rain", "--size", "80*64",
                 "--steps", "4", "--strength", "0.6", "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (13, 64, 80, 3)
    i2v_model = tiny_cache / "tiny" / "diffusion_models" / "wan2.1_tiny_i2v.safetensors"
    assert main(["v2v", "--model", "tiny", "--diffusion-model", str(i2v_model), "--video", str(source),
                 "--prompt", "rain", "--size", "80*64", "--frames", "9", "--steps", "2", "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 64, 80, 3)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16"])
def test_alpha_grayscale_and_palette_images_are_converted(tiny_cache, tmp_path, mode):
    picture = tmp_path / f"picture_{mode.replace(';', '')}.png"
    Image.open(IMAGE).convert("RGBA" if mode == "I;16" else mode).save(picture) if mode != "I;16" else \
        Image.fromarray((np.arange(64 * 80).reshape(64, 80) * 12).astype(np.uint16)).save(picture)
    out = tmp_path / "out.mp4"
    assert main(["i2v", "--model", "tiny", "--image", str(picture), "--prompt", "x", *SMALL, "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 64, 80, 3)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bad_inputs(tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    empty_video = tmp_path / "empty.mp4"
    with av.open(str(empty_video), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()  # a valid header, then no frames at all
    common = ["--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.mp4")]
    image = ["i2v", "--image", str(IMAGE), *common]
    (tmp_path / "folder.mp4").mkdir()
    source = write_video(tmp_path / "source.mp4", torch.rand(9, 64, 64, 3))
    (tmp_path / "link.mp4").symlink_to(source)
    source_video = ["v2v", "--video", str(source), *common]
    bomb = tmp_path / "bomb.png"  # 65 bytes whose header claims 30000x30000 pixels
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    huge_video = tmp_path / "huge.y4m"  # a YUV4MPEG2 header claiming 16000x16000 frames, and 64 bytes of one
    huge_video.write_bytes(b"YUV4MPEG2 W16000 H16000 F16:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(64))
    return [
        (image + ["--out", str(tmp_path / "folder.mp4")], "--out='" + str(tmp_path / "folder.mp4") + "' is a folder"),
        (image + ["--out", str(not_an_image / "o.mp4")], "is a file, not a folder"),
        (source_video + ["--out", str(source)], "is the same file as --video="),
        (source_video + ["--out", str(tmp_path / "link.mp4")], "is the same file as --video="),
        (["i2v", "--image", str(bomb), *common], f"--image={str(bomb)!r} is too large to read"),
        (["v2v", "--video", str(huge_video), *common], "claims 16000x16000 pixels per picture: allowed at most"),
        (image + ["--size", "\u2078\u00b32*480"], "--size='\u2078\u00b32*480' is not W*H"),
        (image + ["--lora", "a/b"] * 4, "--lora given 4 times: allowed at most 3"),
        (image + ["--size", "100*64"], "width=100 is not a multiple of 16"),
        (image + ["--size", "2000*64"], "width=2000 is out of range"),
        (image + ["--steps", "0"], "steps=0 is out of range: allowed 1 to 100"),
        (image + ["--guidance-scale", "-1"], "guidance_scale=-1.0 is out of range: allowed 0.0 to 20.0"),
        (image + ["--frames", "10"], "frames=10 is not of the form 4n+1"),
        (image + ["--seed", "-2"], "seed=-2 is out of range"),
        (image + ["--flow-shift", "0.5"], "flow_shift=0.5 is out of range"),
        (image + ["--step-cache", "-0.1"], "step_cache=-0.1 is out of range: allowed 0.0 to 1.0"),
        (image + ["--attention", "flash", "--device", "cpu"], "attention='flash' needs a CUDA GPU, and this runs on"),
        (["v2v", "--video", str(IMAGE), "--attention", "sage", "--device", "cpu", *common], "attention='sage' needs"),
        (image + ["--offload", "model", "--device", "cpu"], "offload='model' needs a CUDA device, and this runs on cpu"),
        (["v2v", "--video", str(IMAGE), "--offload", "model", "--device", "cpu", *common], "offload='model' needs"),
        (image + ["--offload", "blocks", "--device", "cpu"], "offload='blocks' needs a CUDA device, and this runs on cpu"),
        (image + ["--offload", "blocks", "--step-cache", "0.1", "--device", "cuda"],
         "step_cache=0.1 cannot run with offload='blocks'"),
        (["i2v", "--image", str(tmp_path / "missing.png"), *common], "missing.png': no such file"),
        (["i2v", "--image", str(not_an_image), *common], "is not a readable image"),
        (["v2v", "--video", str(IMAGE), "--strength", "0", *common], "strength=0.0 is out of range: allowed 0.1 to 1.0"),
        (["v2v", "--video", str(IMAGE), "--step-cache", "1.5", *common], "step_cache=1.5 is out of range: allowed 0.0"),
        (["v2v", "--video", str(empty_video), *common], "has no frames"),
        (["i2v", "--image", str(IMAGE), "--model", str(tmp_path / "nowhere"), "--prompt", "x", "--out",
          str(tmp_path / "o.mp4")], "is neither 'tiny' nor a folder"),
        (image + ["--out", str(tmp_path / "o.gif")], "must end in .mp4"),
        (image + ["--preset", "4step", "--guidance-scale", "3.5"],
         "preset='4step' samples with guidance 1.0, and guidance 3.5 was asked for"),
        (image + ["--preset", "4step", "--steps", "8"], "preset='4step' samples with steps 4, and steps 8 was asked"),
        (image + ["--preset", "4step", "--sampler", "unipc"], "samples with sampler 'euler', and sampler 'unipc'"),
        (image + ["--preset", "4step", "--flow-shift", "3"], "samples with flow shift 5.0, and flow shift 3.0"),
        (source_video + ["--fast", "--step-cache", "0.05"], "fast_mode=True and step_cache=0.05 are two step caches"),
    ]


def test_bad_input_is_refused_before_any_model_is_built(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "untouched-cache"
    monkeypatch.setenv("WANFLOW_CACHE", str(cache))  # building the tiny model would create it
    cases = bad_inputs(tmp_path)
    files_before = {path: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    for argv, message in cases:
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("error: "), error
        assert message in error, (message, error)
    assert not cache.exists() and not (tmp_path / "o.mp4").exists()
    assert {path: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == files_before


def test_attention_and_compile_options(tiny_cache, tmp_path):
    """--attention sdpa is the default kernel: the same video; --compile runs the compiled blocks to a video."""
    videos = {}
    for name, options in [("default", []), ("sdpa", ["--attention", "sdpa"])]:
        videos[name] = tmp_path / f"{name}.mp4"
        assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", *SMALL, "--seed", "3",
                     *options, "--out", str(videos[name])]) == 0
    assert torch.equal(read_video(videos["sdpa"])[0], read_video(videos["default"])[0])
    assert main(["v2v", "--model", "tiny", "--video", str(videos["default"]), "--prompt", "rain", *SMALL,
                 "--attention", "sdpa", "--compile", "--out", str(tmp_path / "compiled.mp4")]) == 0
    assert read_video(tmp_path / "compiled.mp4")[0].shape == (9, 64, 80, 3)


def test_tiny_models_are_written_in_comfyui_folders_and_generate(tmp_path):
    assert main(["tiny-models", "--models-dir", str(tmp_path / "models")]) == 0
    folders = sorted(path.parent.name for path in (tmp_path / "models").glob("*/*.safetensors"))
    assert folders == ["clip_vision", "diffusion_models", "diffusion_models", "loras", "loras", "text_encoders", "vae"]
    models = tmp_path / "models"
    out = tmp_path / "out.mp4"
    assert main(["i2v", "--diffusion-model", str(models / "diffusion_models" / "wan2.1_tiny_i2v.safetensors"),
                 "--vae", str(models / "vae" / "wan2.1_tiny_vae.safetensors"),
                 "--text-encoder", str(models / "text_encoders" / "umt5_tiny.safetensors"),
                 "--clip-vision", str(models / "clip_vision" / "clip_vision_tiny.safetensors"),
                 "--lora", str(models / "loras" / "wan21_tiny_i2v_lora.safetensors"),
                 "--image", str(IMAGE), "--prompt", "x", *SMALL, "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 64, 80, 3)
