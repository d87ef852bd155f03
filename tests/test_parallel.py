"""Several processes on the CPU (torchrun, gloo): sequence-parallel and guidance-parallel sampling give the
one-process video, and what cannot be split is refused before anything loads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wan_core.errors import WanInputError
from wan_core.sampling.parallel import check_plan, plan_from_environment
from wan_core.video_io import read_video

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("parallel_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
CLI_RUN = ["i2v", "--model", "tiny", "--image", str(ROOT / "examples" / "first_frame.png"), "--prompt", "a valley",
           "--size", "64*64", "--frames", "5", "--steps", "2", "--seed", "7", "--device", "cpu"]


def _environment(tiny_cache) -> dict:
    return {**os.environ, "WANFLOW_CACHE": str(tiny_cache), "PYTHONPATH": str(ROOT)}


def _run(command, tiny_cache) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, env=_environment(tiny_cache), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _frames(mode: str, processes: int, tiny_cache, out: Path) -> torch.Tensor:
    if processes == 1:
        command = [sys.executable, str(WORKER), mode, str(out)]
    else:
        command = [*TORCHRUN, f"--nproc_per_node={processes}", str(WORKER), mode, str(out)]
    _run(command, tiny_cache)
    return torch.load(out)


@pytest.fixture(scope="module")
def one_process_frames(tiny_cache, tmp_path_factory):
    return _frames("none", 1, tiny_cache, tmp_path_factory.mktemp("parallel") / "one.pt")


@pytest.mark.parametrize("mode, processes", [("ulysses", 2), ("cfg", 2), ("cfg+ulysses", 4)])
def test_parallel_frames_equal_one_process(mode, processes, one_process_frames, tiny_cache, tmp_path):
    frames = _frames(mode, processes, tiny_cache, tmp_path / "frames.pt")
    assert frames.shape == one_process_frames.shape
    assert (frames - one_process_frames).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["ulysses", "cfg"])
def test_torchrun_command_line_writes_the_one_process_video(mode, tiny_cache, tmp_path):
    _run([sys.executable, "-m", "wan_core", *CLI_RUN, "--out", str(tmp_path / "one.mp4")], tiny_cache)
    done = _run([*TORCHRUN, "--nproc_per_node=2", "-m", "wan_core", *CLI_RUN, "--parallel", mode,
                 "--out", str(tmp_path / "parallel.mp4")], tiny_cache)
    assert done.stdout.count("wrote ") == 1, done.stdout  # rank 0 alone writes and reports
    one, _ = read_video(tmp_path / "one.mp4")
    both, _ = read_video(tmp_path / "parallel.mp4")
    assert (one - both).abs().max().item() <= 2 / 255  # the same frames, up to mp4 encoding


def test_parallel_without_torchrun_is_refused_before_loading(tiny_cache, tmp_path):
    done = subprocess.run([sys.executable, "-m", "wan_core", *CLI_RUN, "--parallel", "ulysses",
                           "--diffusion-model", str(tmp_path / "not-there.safetensors"), "--out",
                           str(tmp_path / "out.mp4")], cwd=ROOT, env=_environment(tiny_cache), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "torchrun --nproc_per_node N" in done.stderr  # said before the missing model file is even looked at
    assert "Traceback" not in done.stderr and not (tmp_path / "out.mp4").exists()


def _environ(world_size: int) -> dict:
    return {"WORLD_SIZE": str(world_size), "RANK": "0", "LOCAL_RANK": "0"}


@pytest.mark.parametrize("mode, world_size, heads, tokens, guidance, attention, words", [
    ("ulysses", 3, 40, [32760], 5.0, "auto", "must divide the model's 40 attention heads"),
    ("ulysses", 2, 12, [1260, 1261], 5.0, "auto", "1261 tokens per pass do not split into 2 equal parts"),
    ("cfg", 2, 40, [32760], 1.0, "auto", "guidance 1 runs no negative pass"),
    ("ring", 2, 40, [32760], 5.0, "sdpa", "not --attention sdpa"),
    ("cfg+ulysses", 8, 40, [32760], 5.0, "auto", None),  # 2 guidance groups of 4: 40 heads split 4 ways
    ("cfg+ulysses", 6, 40, [32760], 5.0, "auto", "must divide the model's 40 attention heads"),
])
def test_split_checked_against_the_model(mode, world_size, heads, tokens, guidance, attention, words):
    plan = plan_from_environment(mode, _environ(world_size))
    if words is None:
        check_plan(plan, heads, tokens, guidance, attention)
        return
    with pytest.raises(WanInputError, match=words):
        check_plan(plan, heads, tokens, guidance, attention)


@pytest.mark.parametrize("mode, environ, words", [
    ("none", _environ(2), "--parallel is 'none'"),
    ("cfg", _environ(4), "exactly 2 processes"),
    ("cfg+ulysses", _environ(3), "an even number of processes"),
    ("cfg+ulysses", _environ(2), "leaves one per guidance group"),
    ("tensor", _environ(2), "parallel='tensor' is not allowed"),
])
def test_process_counts_checked(mode, environ, words):
    with pytest.raises(WanInputError, match=words):
        plan_from_environment(mode, environ)


ADAPTER_PROBE = """
import torch, torch.distributed as dist
from diffusers import ContextParallelConfig
from wan_core.sampling.models import load_models
from wan_core.tiny import tiny_model_paths
import os
dist.init_process_group("gloo")
paths = tiny_model_paths(os.environ["WANFLOW_CACHE"])
transformer = load_models(paths["t2v"], paths["vae"], paths["text_encoder"]).transformer
try:
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))
    print("PLAIN CALL WORKS")
except ZeroDivisionError:
    print("PLAIN CALL DIVIDES BY ZERO")
dist.destroy_process_group()
"""


def test_diffusers_still_needs_the_cpu_device_count_adapter(tiny_cache, tmp_path):
    """adapters.enable_context_parallelism exists because diffusers' enable_parallelism divides by the accelerator
    count, 0 on a CPU-only machine. When this fails, diffusers has fixed that: call it directly and drop the adapter."""
    if torch.accelerator.device_count() > 0:
        pytest.fail("this check needs a machine where torch sees no accelerator, as CI's is")
    probe = tmp_path / "probe.py"
    probe.write_text(ADAPTER_PROBE)
    done = _run([*TORCHRUN, "--nproc_per_node=2", str(probe)], tiny_cache)
    assert done.stdout.count("PLAIN CALL DIVIDES BY ZERO") == 2, (
        "diffusers' enable_parallelism now runs on CPU processes: remove adapters.enable_context_parallelism\n"
        + done.stdout)
