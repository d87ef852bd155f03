"""The fast paths side by side in one run: the default sampling, fast mode (MagCache) and the 4-step distill preset,
each with its transformer passes, wall time and PSNR of the decoded frames against the default run with the same
seed; and fast mode next to diffusers' own MagCache on the same model and ratios (passes skipped, frames).

    python bench/bench_fast_paths.py [--model tiny|MODELS_DIR] [--lora FILE] [--size 160*96] [--frames 17]
                                     [--steps 30] [--seed 1]

--model is what `python -m wan_core i2v --model` takes ('tiny', or a models folder such as the trained mini model's
when it lands). --lora is the step-distill LoRA for the 4-step row; with the tiny model the default is a tiny LoRA
in lightx2v's layout (random, like the model). A model MagCache did not calibrate is calibrated first (an untimed
run, reported). On random weights the PSNR figures say nothing about quality: only passes and plumbing count.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's wan_core, before any installed copy

import numpy as np
import torch
from diffusers.hooks import MagCacheConfig
from PIL import Image
from reference import reference_pipeline

from wan_core.files.model_files import resolve_model_files
from wan_core.lora.stack import LoraEntry
from wan_core.sampling import conditioning, magcache, pipeline
from wan_core.sampling.models import load_models
from wan_core.sampling.params import SamplingParams
from wan_core.tiny import write_tiny_distill_lora
from wan_core.video_io import pil_to_frame

PROMPT = "a cat walks on the grass"


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def run(models, picture, params: SamplingParams, **settings) -> dict:
    """One generation, decoded; its wall time (sampling and decoding) and its pass count."""
    started = time.perf_counter()
    with models.configured(**settings):
        latents = pipeline.generate_i2v(models, pil_to_frame(picture)[None], params).latents
    frames = conditioning.decode_latents(models, latents).numpy()
    return {"frames": frames, "seconds": time.perf_counter() - started, "passes": models.passes}


def run_diffusers_magcache(models, picture, params: SamplingParams, ratios) -> dict:
    """diffusers' WanImageToVideoPipeline with its own MagCache at fast mode's settings and the same ratios."""
    computed = []
    handle = models.transformer.blocks[-1].ffn.register_forward_hook(lambda *_: computed.append(1))
    models.transformer.enable_cache(MagCacheConfig(mag_ratios=ratios, num_inference_steps=params.steps,
                                                   **magcache.FAST_MODE))
    started = time.perf_counter()
    try:
        frames = reference_pipeline(models, params.flow_shift)(
            image=picture, prompt=PROMPT, negative_prompt=params.negative_prompt, height=params.height,
            width=params.width, num_frames=params.num_frames, num_inference_steps=params.steps,
            guidance_scale=params.guidance_scale, generator=torch.Generator().manual_seed(params.seed),
            output_type="np").frames[0]
    finally:
        models.transformer.disable_cache()
        handle.remove()
    return {"frames": frames, "seconds": time.perf_counter() - started, "skipped": 2 * params.steps - len(computed)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", help="'tiny' or a models folder (as the CLI's --model)")
    parser.add_argument("--lora", help="the step-distill LoRA of the 4-step row (tiny: a tiny lightx2v-layout one)")
    parser.add_argument("--size", default="160*96")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    width, height = map(int, args.size.split("*"))

    files = resolve_model_files(args.model, "i2v")
    models = load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision)
    lora = args.lora or (str(write_tiny_distill_lora(Path(tempfile.mkdtemp()) / "lightx2v_tiny.safetensors"))
                         if args.model == "tiny" else None)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    default = SamplingParams(prompt=PROMPT, width=width, height=height, num_frames=args.frames, steps=args.steps,
                             seed=args.seed)
    four_step = SamplingParams(prompt=PROMPT, width=width, height=height, num_frames=args.frames, seed=args.seed,
                               preset="4step")

    sigmas = pipeline.schedule_sigmas(default).tolist()
    plan = magcache.plan_fast_mode(models, sigmas, width, height)
    if plan.ratios is None:
        calibration = run(models, picture, default, fast_mode=True)
        print(f"calibrated fast mode in {calibration['seconds']:.1f} s ({calibration['passes'].line()})",
              file=sys.stderr)
        plan = magcache.plan_fast_mode(models, sigmas, width, height)
    rows = {"default": run(models, picture, default), "fast mode": run(models, picture, default, fast_mode=True)}
    theirs = run_diffusers_magcache(models, picture, default, plan.ratios)  # before the LoRA goes on the weights
    rows["4-step preset" + (" + distill LoRA" if lora else "")] = run(models, picture, four_step,
                                                                      loras=(LoraEntry(lora),) if lora else ())
    reference, ours_fast = rows["default"]["frames"], rows["fast mode"]

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"workload: model {args.model} ({Path(files.diffusion_model).name}), I2V {args.size}, {args.frames} frames, "
          f"seed {args.seed}; default = {args.steps} UniPC steps, guidance 5; fast mode ratios: {plan.source}")
    print("| run | transformer passes | skipped | wall time (s) | PSNR vs default (dB) |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['passes'].passes} | {row['passes'].skipped} | {row['seconds']:.1f} | "
              f"{psnr(row['frames'], reference):.1f} |")
    difference = float(np.abs(ours_fast["frames"] - theirs["frames"]).max())
    print(f"\n| fast mode vs diffusers' MagCache | passes skipped | wall time (s) | max abs difference of frames |\n"
          f"|---|---|---|---|\n| wan_core fast mode | {ours_fast['passes'].skipped} | {ours_fast['seconds']:.1f} | - |\n"
          f"| diffusers MagCacheConfig, same ratios | {theirs['skipped']} | {theirs['seconds']:.1f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
