"""Peak RSS of the command line's i2v run, with its defaults and with one setting changed at a time.

Each run is a fresh `python -m wan_core i2v --model tiny ...` subprocess; its peak resident set size is the
ru_maxrss that os.wait4 reports for that one child (the kernel's high-water mark of the process, imports,
loading, sampling, decoding and writing the mp4 included). The model is the tiny one (the real Wan 2.1 I2V
architecture, random weights, a few MB): the figures are the engine's and its libraries' own footprint, not a
14B model's, whose weights add their size on top (BENCHMARKS.md, "Loading memory"). The prompt cache is off in
every run but "prompt cache, second run" so that each measures the same work.

    python bench/bench_rss.py [--size 160*96] [--frames 17] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def settings(lora: Path) -> dict[str, list[str]]:
    """Row name -> the options that differ from the defaults."""
    return {
        "defaults": [],
        "--weight-storage fp8": ["--weight-storage", "fp8"],
        "--lora (tiny LoRA, x0.8)": ["--lora", f"{lora}:0.8"],
        "--step-cache 0.1": ["--step-cache", "0.1"],
        "--attention sdpa": ["--attention", "sdpa"],
        "--sampler euler": ["--sampler", "euler"],
        "--prompt-cache disk, first run": ["--prompt-cache", "disk"],
        "--prompt-cache disk, second run": ["--prompt-cache", "disk"],
    }


def peak_rss_mib(argv: list[str], env: dict) -> float:
    """Run the command and return its own peak RSS (os.wait4's rusage is that child's alone)."""
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{argv} failed: {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160*96")
    parser.add_argument("--frames", default="17")
    parser.add_argument("--steps", default="4")
    args = parser.parse_args()
    from wan_core.tiny import tiny_model_paths, write_tiny_lora

    with tempfile.TemporaryDirectory() as folder:
        env = os.environ | {"PYTHONPATH": str(ROOT), "WANFLOW_CACHE": str(Path(folder) / "cache")}
        os.environ["WANFLOW_CACHE"] = env["WANFLOW_CACHE"]
        tiny_model_paths()  # written once, before any measured run
        lora = write_tiny_lora(Path(folder) / "lora.safetensors", "i2v", seed=1)
        common = [sys.executable, "-m", "wan_core", "i2v", "--model", "tiny", "--image",
                  str(ROOT / "examples" / "first_frame.png"), "--prompt", "a sunny valley", "--size", args.size,
                  "--frames", args.frames, "--steps", args.steps, "--seed", "1", "--device", "cpu",
                  "--out", str(Path(folder) / "out.mp4")]
        rows = {}
        for name, options in settings(lora).items():
            cache = [] if "--prompt-cache" in options else ["--prompt-cache", "memory"]
            rows[name] = peak_rss_mib(common + cache + options, env)
            print(f"{name}: {rows[name]:.0f} MiB", file=sys.stderr, flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"workload: tiny I2V model, {args.size}, {args.frames} frames, {args.steps} steps, float32, CPU")
    print("| setting | peak RSS (MiB) | vs defaults |\n|---|---|---|")
    for name, mib in rows.items():
        print(f"| {name} | {mib:.0f} | {mib / rows['defaults']:.2f} |")


if __name__ == "__main__":
    main()
