"""wan_core against diffusers' WanImageToVideoPipeline on the same tiny model, side by side in one run.

Each measurement runs in a fresh subprocess (so peak RSS belongs to one side only), sides alternate, and the
median over rounds is reported: per-step time (between consecutive step callbacks), whole generation time and
peak resident memory, with the ratio wan_core / diffusers.

    python bench/bench_engine.py [--rounds 3] [--size 160*96] [--frames 33] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(side: str, width: int, height: int, frames: int, steps: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from reference import reference_pipeline

    from wan_core.sampling import conditioning, pipeline
    from wan_core.sampling.models import load_models
    from wan_core.sampling.params import SamplingParams
    from wan_core.tiny import tiny_model_paths
    from wan_core.video_io import pil_to_frame

    paths = tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"])
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    stamps = []
    started = time.perf_counter()
    if side == "wan_core":
        params = SamplingParams(prompt="a cat walks", width=width, height=height, num_frames=frames, steps=steps, seed=1)
        latents = pipeline.generate_i2v(models, pil_to_frame(picture)[None], params,
                                        lambda *_: stamps.append(time.perf_counter())).latents
        conditioning.decode_latents(models, latents)
    else:
        reference = reference_pipeline(models, flow_shift=3.0)

        def on_step(_pipe, _i, _t, kwargs):
            stamps.append(time.perf_counter())
            return kwargs

        reference(image=picture, prompt="a cat walks", negative_prompt=SamplingParams(prompt="").negative_prompt,
                  height=height, width=width, num_frames=frames, num_inference_steps=steps,
                  generator=torch.Generator().manual_seed(1), output_type="np", callback_on_step_end=on_step)
    total = time.perf_counter() - started
    step_times = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    return {"step_s": statistics.median(step_times), "total_s": total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_side(side: str, args) -> dict:
    command = [sys.executable, __file__, "--side", side, "--size", args.size, "--frames", str(args.frames),
               "--steps", str(args.steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["wan_core", "diffusers"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="160*96")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    width, height = map(int, args.size.split("*"))
    if args.side:
        print(json.dumps(measure(args.side, width, height, args.frames, args.steps)))
        return
    results = {"wan_core": [], "diffusers": []}
    for _ in range(args.rounds):
        for side in results:
            results[side].append(run_side(side, args))
    median = {side: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
              for side, runs in results.items()}
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"workload: tiny I2V model, {args.size}, {args.frames} frames, {args.steps} UniPC steps, guidance 5, "
          f"median of {args.rounds} rounds")
    print("| metric | wan_core | diffusers | ratio |\n|---|---|---|---|")
    for key, label in [("step_s", "time per step (s)"), ("total_s", "whole generation (s)"),
                       ("peak_rss_mb", "peak RSS (MiB)")]:
        ours, theirs = median["wan_core"][key], median["diffusers"][key]
        print(f"| {label} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.3f} |")


if __name__ == "__main__":
    main()
