"""What splitting a run over processes costs on a CPU: 2 gloo processes against 1, the same tiny model and job.

On one machine's CPU cores two processes share the same cores, so this shows the communication and coordination
overhead of each --parallel mode (all-to-all and all-gather through gloo, one process group start), not a speed-up:
the figure to read is the ratio's distance above what splitting the work would give. Real speed-ups need one GPU
per process (bench/bench_speed.py --parallel under torchrun).

Each repeat runs the single process and every parallel mode once, alternating, and times the sampling alone
(rank 0, after a barrier): medians over the repeats.

    python bench/bench_parallel.py [--size 160*96] [--frames 33] [--steps 6] [--repeats 3] [--modes ulysses cfg]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's wan_core, before any installed copy

import torch

from wan_core.sampling import parallel, pipeline
from wan_core.sampling.models import load_models
from wan_core.sampling.params import SamplingParams
from wan_core.tiny import tiny_model_paths


def worker(mode: str, size: str, frames: int, steps: int) -> None:
    """One process of a measured run: rank 0 prints the sampling seconds as JSON."""
    plan = parallel.plan_from_environment(mode)
    device = parallel.start(plan, "cpu")
    paths = tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"], device=device)
    models.parallel = parallel.ParallelRun(plan, device) if plan.world_size > 1 else None
    width, height = map(int, size.split("*"))
    params = SamplingParams(prompt="a boat on a lake", width=width, height=height, num_frames=frames, steps=steps,
                            seed=1)
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    with models.configured():
        if plan.world_size > 1:
            torch.distributed.barrier()
        started = time.perf_counter()
        pipeline.generate_i2v(models, image, params)
        seconds = time.perf_counter() - started
    parallel.finish(plan)
    if plan.writes_output:
        print(json.dumps({"seconds": seconds}))


def measure(mode: str, args) -> float:
    job = [str(Path(__file__)), "--worker", mode, "--size", args.size, "--frames", str(args.frames),
           "--steps", str(args.steps)]
    launcher = [sys.executable] if mode == "none" else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(launcher + job, capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="160*96")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["ulysses", "cfg"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (torchrun's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.frames, args.steps)
        return
    times = {mode: [] for mode in ["none", *args.modes]}
    for _ in range(args.repeats):
        for mode in times:
            times[mode].append(measure(mode, args))
            print(f"{mode}: {times[mode][-1]:.2f} s", file=sys.stderr, flush=True)
    print(f"machine: {platform.processor() or 'cpu'}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"job: tiny I2V model (random weights), {args.size}, {args.frames} frames, {args.steps} UniPC steps, "
          f"guidance 5; {args.threads} thread(s) per process; medians of {args.repeats} alternating repeats")
    single = statistics.median(times["none"])
    print("| run | sampling (s) | vs 1 process |\n|---|---|---|")
    for mode, values in times.items():
        label = "1 process" if mode == "none" else f"2 processes, --parallel {mode}"
        print(f"| {label} | {statistics.median(values):.2f} | {statistics.median(values) / single:.2f} |")


if __name__ == "__main__":
    main()
