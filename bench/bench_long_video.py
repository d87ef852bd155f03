"""Long videos: context windows against one pass, time and peak RSS at 81, 121 and 161 frames.

Each measurement runs in a fresh subprocess (peak RSS is that run's alone), not counting model loading, on the tiny
I2V model (--model tiny: the real Wan 2.1 architecture, random weights, so the figures measure cost only) or the
trained mini model (--model mini).
--stage sampling: the part windows change, the guided transformer over all steps (prompt and CLIP encoding
included; the first-frame condition is random latents of its shape, as the VAE's cost is the same either way).
--stage job: the whole job from the picture to decoded frames, VAE included.

    python bench/bench_long_video.py [--stage sampling|job] [--model tiny|mini] [--size 320*192]
                                     [--frames 81 121 161] [--steps 4]
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


def measure(stage: str, model: str, mode: str, width: int, height: int, frames: int, steps: int) -> dict:
    import torch

    from wan_core.sampling import conditioning, pipeline
    from wan_core.sampling.long_video import context_velocity
    from wan_core.sampling.models import load_models
    from wan_core.sampling.params import SamplingParams
    from wan_core.sampling.samplers import SAMPLERS
    from wan_core.sampling.schedule import flow_sigmas
    from wan_core.builtin.mini import mini_model_paths
    from wan_core.tiny import tiny_model_paths

    paths = mini_model_paths() if model == "mini" else tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"])
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(prompt="a cat walks", width=width, height=height, num_frames=frames, steps=steps, seed=1,
                            one_pass=mode == "one-pass")
    started = time.perf_counter()
    if stage == "job":
        conditioning.decode_latents(models, pipeline.generate_i2v(models, image, params).latents)
    else:
        shape = pipeline.latent_shape(params)  # [1, 16, T_lat, h, w]
        condition = torch.randn(1, 20, *shape[2:])  # mask + first-frame latents, as first_frame_condition gives
        prompts = pipeline.encode_prompts(models, params)
        tokens = conditioning.encode_image_tokens(models, image[0])
        velocity = pipeline.guided_velocity(models, params, prompts, tokens, condition)
        model = context_velocity(velocity, params, shape[2])
        SAMPLERS[params.sampler](model, pipeline.initial_noise(1, shape), flow_sigmas(steps, 3.0).tolist())
    return {"total_s": time.perf_counter() - started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_one(mode: str, frames: int, args) -> dict:
    command = [sys.executable, __file__, "--run", mode, "--stage", args.stage, "--model", args.model,
               "--size", args.size, "--frames", str(frames),
               "--steps", str(args.steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", choices=["windows", "one-pass"], help="(internal) one measurement in this process")
    parser.add_argument("--stage", choices=["sampling", "job"], default="sampling")
    parser.add_argument("--model", choices=["tiny", "mini"], default="tiny")
    parser.add_argument("--size", default="320*192")
    parser.add_argument("--frames", type=int, nargs="+", default=[81, 121, 161])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["windows", "one-pass"])
    args = parser.parse_args()
    width, height = map(int, args.size.split("*"))
    if args.run:
        print(json.dumps(measure(args.stage, args.model, args.run, width, height, args.frames[0], args.steps)))
        return
    print(f"machine: {platform.machine()}, {platform.python_version()}; stage {args.stage}, size {args.size}, "
          f"{args.steps} steps, guidance 5, {args.model} model")
    results = {}
    for frames in args.frames:
        for mode in args.modes:
            if frames <= 81 and mode == "one-pass" and "windows" in args.modes:
                results[(mode, frames)] = results[("windows", frames)]  # 81 frames are one window: the same run
                continue
            results[(mode, frames)] = run_one(mode, frames, args)
            print(json.dumps({"mode": mode, "frames": frames, **results[(mode, frames)]}), flush=True)
    base = results.get((args.modes[0], min(args.frames)))
    print(f"| mode | frames | {args.stage} time (s) | peak RSS (MiB) | time / {min(args.frames)} frames | "
          f"RSS / {min(args.frames)} frames |")
    print("|---|---|---|---|---|---|")
    for (mode, frames), result in results.items():
        print(f"| {mode} | {frames} | {result['total_s']:.1f} | {result['peak_rss_mb']:.0f} | "
              f"{result['total_s'] / base['total_s']:.2f} | {result['peak_rss_mb'] / base['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
