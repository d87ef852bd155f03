"""Where a mini model's first frame loses its decibels: in the transformer's copy of latent frame 0, or in the VAE.

    pip install -e ".[train]"   # scikit-image: its held-out photos
    python bench/bench_mini_first_frame.py [--folder DIR] [--frames 33,81] [--pictures chelsea,procedural_1000001]
                                           [--training 2]

For each picture and clip length it runs the engine's image-to-video as bench_mini_quality.py does (pan left, the
first held-out sentence) and reports the RMS distance, in normalised latents, between latent frame 0 of the result
and the conditioning picture's own latent (what an exact copy gives: 0), then the first frame's PSNR against the
input and the ceiling, the PSNR of that own latent decoded (the VAE alone). A gap between the two PSNRs with a large
latent distance is the transformer's; a low ceiling is the VAE's. --training N adds the first frames of N training
pictures: a distance as large on them as on held-out pictures is not overfitting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mini_quality import held_out_pictures  # noqa: E402
from wan_core.builtin import mini_data as data  # noqa: E402
from wan_core.builtin.mini import load_mini  # noqa: E402
from wan_core.builtin.mini_quality import psnr  # noqa: E402
from wan_core.builtin.train_mini import PLANS, first_frames, training_pictures  # noqa: E402
from wan_core.sampling import conditioning  # noqa: E402
from wan_core.sampling.params import SamplingParams  # noqa: E402
from wan_core.sampling.pipeline import generate_i2v  # noqa: E402


def first_frame_copy(models, frame: torch.Tensor, frames: int, steps: int, guidance: float) -> dict:
    """frame [96, 160, 3] in 0..1 -> the latent distance of the generated frame 0 and both PSNRs."""
    params = SamplingParams(prompt=data.HELD_OUT_PROMPTS["pan_left"][0], width=data.FRAME_W, height=data.FRAME_H,
                            num_frames=frames, steps=steps, guidance_scale=guidance, seed=0)
    generated = conditioning.normalise_latents(models, generate_i2v(models, frame[None], params).latents)[:, :, :1]
    own = conditioning.first_frame_condition(models, frame, frames)[:, 4:, :1]  # [1, 16, 1, h, w], normalised

    def decoded_psnr(latent):
        return psnr(conditioning.decode_latents(models, conditioning.raw_latents(models, latent))[0].numpy(),
                    frame.numpy())

    return {"latent_rms": float((generated - own).pow(2).mean().sqrt()), "first_frame_psnr": decoded_psnr(generated),
            "ceiling_psnr": decoded_psnr(own)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a train-mini output folder instead of the shipped files")
    parser.add_argument("--frames", default="33,81", help="clip lengths, comma-separated")
    parser.add_argument("--pictures", default="chelsea,procedural_1000001", help="held-out picture names")
    parser.add_argument("--training", type=int, default=0, help="also the first frames of this many training pictures")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    models = load_mini(folder=args.folder)
    held_out = held_out_pictures(photos=any(not n.startswith("procedural") for n in args.pictures.split(",")))
    frames = {name: conditioning.fit_frames(held_out[name][None], data.FRAME_W, data.FRAME_H)[0]
              for name in args.pictures.split(",")}
    if args.training:
        trained = first_frames(training_pictures(PLANS["full"], 0)[:args.training])  # seed 0: the shipped runs'
        frames.update({f"training_{i}": picture.permute(1, 2, 0) for i, picture in enumerate(trained)})
    rows = []
    for name, frame in frames.items():
        for length in map(int, args.frames.split(",")):
            row = {"picture": name, "frames": length, **first_frame_copy(models, frame, length, args.steps,
                                                                          args.guidance)}
            rows.append(row)
            print(f"{name:22s} {length:3d} frames: latent frame 0 off by {row['latent_rms']:.3f} RMS, first frame "
                  f"{row['first_frame_psnr']:5.1f} dB, the VAE alone {row['ceiling_psnr']:5.1f} dB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
