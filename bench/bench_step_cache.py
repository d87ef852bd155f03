"""Step cache (fast mode) on one machine: wan_core without and with diffusers' First Block Cache at several
thresholds, next to diffusers' WanImageToVideoPipeline with the same FirstBlockCacheConfig, in one run.

The model: a Wan 2.1 I2V transformer of moderate size (the real architecture with random weights; by default
width 512, 12 blocks) with the tiny VAE, text and image encoders. For each side and threshold it reports the wall
time of a whole generation (median of the rounds, with its ratio to the same side without cache), the transformer
block passes actually computed, and how far the decoded frames are from wan_core's uncached frames (max abs, PSNR).

    python bench/bench_step_cache.py [--thresholds 0.05 0.1 0.2] [--layers 12] [--dim 512] [--size 160*96]
                                     [--frames 33] [--steps 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's wan_core, before any installed copy

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import FirstBlockCacheConfig
from PIL import Image
from reference import reference_pipeline

from wan_core.sampling import conditioning, pipeline
from wan_core.files.loading import WAN_HEAD_DIM
from wan_core.sampling.models import load_models
from wan_core.sampling.params import WAN_NEGATIVE_PROMPT, SamplingParams
from wan_core.tiny import IMAGE_DIM, TEXT_DIM, tiny_model_paths
from wan_core.video_io import pil_to_frame

PROMPT, SEED, SHIFT = "a cat walks on the grass", 1, 3.0


def moderate_transformer(layers: int, dim: int) -> WanTransformer3DModel:
    """The I2V architecture at a width the CPU runs in seconds per step; diffusers' own random initialisation."""
    torch.manual_seed(0)
    return WanTransformer3DModel(
        num_attention_heads=dim // WAN_HEAD_DIM, attention_head_dim=WAN_HEAD_DIM, in_channels=36, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=4 * dim, num_layers=layers, image_dim=IMAGE_DIM,
        added_kv_proj_dim=dim,
    ).eval().requires_grad_(False)


class BlockPasses:
    """Counts computed block passes. It watches each block's feed-forward layer: a hook on the block itself would
    also fire when the cache skips it (the cache swaps the block's forward, inside the call such a hook wraps)."""

    def __init__(self, transformer):
        self.count = 0
        for block in transformer.blocks:
            block.ffn.register_forward_hook(self._seen)

    def _seen(self, *_):
        self.count += 1


def generate_wan_core(models, picture, args, threshold: float) -> np.ndarray:
    params = SamplingParams(prompt=PROMPT, width=args.width, height=args.height, num_frames=args.frames,
                            steps=args.steps, flow_shift=SHIFT, seed=SEED)
    with models.configured(step_cache=threshold):
        latents = pipeline.generate_i2v(models, pil_to_frame(picture)[None], params).latents
    return conditioning.decode_latents(models, latents).numpy()


def generate_diffusers(models, picture, args, threshold: float) -> np.ndarray:
    reference = reference_pipeline(models, SHIFT)
    if threshold:
        models.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        return reference(image=picture, prompt=PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT,
                         height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
                         generator=torch.Generator().manual_seed(SEED), output_type="np").frames[0]
    finally:
        if threshold:
            models.transformer.disable_cache()


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--size", default="160*96")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    args.width, args.height = map(int, args.size.split("*"))

    paths = tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"])
    models.transformer = moderate_transformer(args.layers, args.dim)
    passes = BlockPasses(models.transformer)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
    generate_wan_core(models, picture, argparse.Namespace(**{**vars(args), "steps": 1}), 0.0)  # warm-up, untimed

    runs = [(side, threshold) for threshold in [0.0, *args.thresholds] for side in ("wan_core", "diffusers")]
    results = {}
    for run in runs * args.rounds:  # rounds interleave the configurations, so drift in machine load hits all alike
        generate = generate_wan_core if run[0] == "wan_core" else generate_diffusers
        passes.count = 0
        started = time.perf_counter()
        frames = generate(models, picture, args, run[1])
        elapsed = time.perf_counter() - started
        result = results.setdefault(run, {"times": [], "passes": passes.count, "frames": frames})
        result["times"].append(elapsed)

    full = args.layers * 2 * args.steps
    uncached = results[("wan_core", 0.0)]["frames"]
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"workload: I2V transformer width {args.dim}, {args.layers} blocks, random weights; {args.size}, "
          f"{args.frames} frames, {args.steps} UniPC steps, guidance 5; median of {args.rounds} round(s)")
    print("| side | step_cache | generation (s) | vs same side uncached | block passes | max abs vs uncached | "
          "PSNR vs uncached (dB) |\n|---|---|---|---|---|---|---|")
    for side, threshold in runs:
        result = results[(side, threshold)]
        seconds = statistics.median(result["times"])
        baseline = statistics.median(results[(side, 0.0)]["times"])
        difference = float(np.abs(result["frames"] - uncached).max())
        print(f"| {side} | {threshold:g} | {seconds:.2f} | {seconds / baseline:.2f} | {result['passes']} of {full} | "
              f"{difference:.2e} | {psnr(result['frames'], uncached):.1f} |")


if __name__ == "__main__":
    main()
