"""How much faster train-mini's training steps run through torch.compile than eagerly, on this CPU.

    python bench/bench_train_step.py [--repeats 7] [--threads 2]

Times one training step (forward, backward, no optimiser) of each kind train-mini runs most, at the full plan's
sizes: stage 1's three batches (8 crops of 64x64, 2 clips of 1+4 frames, 2 whole 160x96 frames; encode then decode)
and the transformer's flow-matching step (2 clips of 81 and of 33 frames, bf16 autocast). Eager and compiled
(train_mini.compiled and train_mini.compile_blocks, the code the script runs) alternate, and the medians are
reported with their ratio, after one untimed call each, whose time is the compiling (caches on disk can shorten it).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core.builtin import train_mini  # noqa: E402

VAE_BATCHES = {"8 crops 64x64": (8, 3, 1, 64, 64), "2 clips 5x64x64": (2, 3, 5, 64, 64),
               "2 frames 160x96": (2, 3, 1, 96, 160)}
LATENT_FRAMES = {"transformer 2 x 81 frames": 21, "transformer 2 x 33 frames": 9}


def vae_steps(plan):
    """{name: (eager step, compiled step)}: each step [B, 3, T, H, W] -> None (gradients accumulate)."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=plan.vae_base_dim, z_dim=16)

    encode, decode = train_mini.latent_means(vae), train_mini.decoded_frames(vae)

    def reconstruction(clip):
        return (decode(encode(clip)) - clip).abs().mean()

    fused = train_mini.compiled(reconstruction, plan)
    steps = {}
    for name, shape in VAE_BATCHES.items():
        clip = torch.rand(shape) * 2 - 1
        steps[name] = (lambda c=clip: reconstruction(c).backward(), lambda c=clip: fused(c).backward())
    return steps


def transformer_steps(plan):
    torch.manual_seed(3)
    eager = train_mini.transformer(plan)
    fused = copy.deepcopy(eager)
    train_mini.compile_blocks(fused, plan)
    steps = {}
    for name, frames in LATENT_FRAMES.items():
        x0, condition = torch.randn(2, 16, frames, 12, 20), torch.randn(2, 20, frames, 12, 20)
        text, tokens = torch.randn(2, 512, plan.text_dim), torch.randn(2, 17, plan.clip_width)

        def step(model, x0=x0, condition=condition, text=text, tokens=tokens):
            train_mini.flow_loss(model, x0, condition, text, tokens, np.random.default_rng(0), 3.0).backward()

        steps[name] = (lambda s=step: s(eager), lambda s=step: s(fused))
    return steps


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more")
    torch.set_num_threads(args.threads)
    plan = replace(train_mini.PLANS["full"], compiled=True)
    print(f"torch {torch.__version__}, {args.threads} threads, medians of {args.repeats} alternating")
    print("| step | eager (s) | compiled (s) | speed-up | first compiled call (s) |\n|---|---|---|---|---|")
    for steps in (vae_steps(plan), transformer_steps(plan)):
        for name, (eager, fused) in steps.items():
            timed(eager)
            first = timed(fused)
            times = {"eager": [], "compiled": []}
            for _ in range(args.repeats):
                times["eager"].append(timed(eager))
                times["compiled"].append(timed(fused))
            e, c = np.median(times["eager"]), np.median(times["compiled"])
            print(f"| {name} | {e:.3f} | {c:.3f} | {e / c:.2f}x | {first:.0f} |", flush=True)


if __name__ == "__main__":
    main()
