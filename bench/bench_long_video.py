"""Long videos: context windows against one pass, time and peak RSS at 81, 121 and 161 frames.

Each measurement runs in a fresh subprocess (peak RSS is that run's alone): the tiny I2V model (the real Wan 2.1
architecture, random weights, so the figures measure cost only, not quality), one image, the whole job from
prompt encoding to decoded frames, not model loading. Sampling time (the transformer) is also reported apart.

    python bench/bench_long_video.py [--size 320*192] [--frames 81 121 161] [--steps 4] [--modes windows one-pass]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(mode: str, width: int, height: int, frames: int, steps: int) -> dict:
    import torch

    from wan_core.sampling import conditioning, pipeline
    from wan_core.sampling.models import load_models
    from wan_core.sampling.params import SamplingParams
    from wan_core.tiny import tiny_model_paths

    paths = tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"])
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(prompt="a cat walks", width=width, height=height, num_frames=frames, steps=steps, seed=1,
                            one_pass=mode == "one-pass")
    stamps = []
    started = time.perf_counter()
    latents = pipeline.generate_i2v(models, image, params, lambda step: stamps.append(time.perf_counter())).latents
    sampled = time.perf_counter()
    conditioning.decode_latents(models, latents)
    total = time.perf_counter() - started
    return {"total_s": total, "sampling_s": stamps[-1] - started if stamps else sampled - started,
            "decode_s": total - (sampled - started), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_one(mode: str, frames: int, args) -> dict:
    command = [sys.executable, __file__, "--run", mode, "--size", args.size, "--frames", str(frames),
               "--steps", str(args.steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", choices=["windows", "one-pass"], help="(internal) one measurement in this process")
    parser.add_argument("--size", default="320*192")
    parser.add_argument("--frames", type=int, nargs="+", default=[81, 121, 161])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["windows", "one-pass"])
    args = parser.parse_args()
    width, height = map(int, args.size.split("*"))
    if args.run:
        print(json.dumps(measure(args.run, width, height, args.frames[0], args.steps)))
        return
    print(f"machine: {platform.machine()}, {platform.python_version()}; size {args.size}, {args.steps} steps, "
          "tiny model (random weights)")
    results = {}
    for frames in args.frames:
        for mode in args.modes:
            if frames <= 81 and mode == "one-pass" and "windows" in args.modes:
                results[(mode, frames)] = results[("windows", frames)]  # 81 frames are one window: the same run
                continue
            results[(mode, frames)] = run_one(mode, frames, args)
            print(json.dumps({"mode": mode, "frames": frames, **results[(mode, frames)]}), flush=True)
    base = results.get((args.modes[0], min(args.frames)))
    print("| mode | frames | whole job (s) | sampling (s) | peak RSS (MiB) | time / 81 frames | RSS / 81 frames |")
    print("|---|---|---|---|---|---|---|")
    for (mode, frames), result in results.items():
        print(f"| {mode} | {frames} | {result['total_s']:.1f} | {result['sampling_s']:.1f} | "
              f"{result['peak_rss_mb']:.0f} | {result['total_s'] / base['total_s']:.2f} | "
              f"{result['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
