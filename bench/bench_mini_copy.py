"""How fast a fresh mini transformer learns to copy latent frame 0, on one VAE or another.

    pip install -e ".[train]"   # scikit-image: its held-out photos
    python bench/bench_mini_copy.py [--vaes shipped,DIR] [--steps 1000]

For each VAE (a train-mini output folder, or "shipped") it trains a transformer from the script's seeded start for
--steps steps of the transformer stage's first phase (train_mini.train_transformer with the motion curriculum on
train_mini.latent_moves, peak lr_dit, seed 0), then asks it for x0 from pure noise (sigma 0.999) on held-out
pictures with a held-out pan-left sentence, and reports the RMS distance of latent frame 0 from the conditioning
picture's own latent (normalised latents; an exact copy gives 0), at 81 and 33 frames. This is the sampler's first
step: a fresh run's low first frames start there (bench_mini_first_frame.py). The transformer, the steps and the
random draws are the same for every VAE, so a difference between rows is the VAE's latent space.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mini_quality import held_out_pictures  # noqa: E402
from wan_core.builtin import mini_data as data  # noqa: E402
from wan_core.builtin import train_mini  # noqa: E402
from wan_core.builtin.mini import load_mini  # noqa: E402
from wan_core.sampling import conditioning  # noqa: E402

PICTURES = ("coffee", "chelsea", "procedural_1000001")
LENGTHS = (81, 33)
SIGMA = 0.999


def held_out_inputs(models) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """[(frames, condition [1, 20, T, h, w], image tokens [1, 17, d], text [1, 512, d])] per picture and length."""
    held_out = held_out_pictures()
    text = conditioning.encode_prompt(models, data.HELD_OUT_PROMPTS["pan_left"][0])
    inputs = []
    for name in PICTURES:
        frame = conditioning.fit_frames(held_out[name][None], data.FRAME_W, data.FRAME_H)[0]  # [96, 160, 3]
        tokens = conditioning.encode_image_tokens(models, frame)
        inputs += [(frames, conditioning.first_frame_condition(models, frame, frames), tokens, text)
                   for frames in LENGTHS]
    return inputs


@torch.no_grad()
def frame0_error(model, inputs) -> dict[int, float]:
    """{frames: mean over the pictures of frame 0's x0 RMS distance from the conditioning latent}"""
    generator = torch.Generator().manual_seed(0)
    errors = {frames: [] for frames in LENGTHS}
    for frames, condition, tokens, text in inputs:
        noise = torch.randn(condition[:, 4:].shape, generator=generator)  # [1, 16, T, h, w]
        velocity = model(hidden_states=torch.cat([noise, condition], 1), timestep=torch.tensor([SIGMA * 1000]),
                         encoder_hidden_states=text, encoder_hidden_states_image=tokens, return_dict=False)[0]
        x0 = noise - SIGMA * velocity
        errors[frames].append(float((x0[:, :, 0] - condition[:, 4:, 0]).pow(2).mean().sqrt()))
    return {frames: float(np.mean(values)) for frames, values in errors.items()}


def measure(folder: str | None, steps: int) -> dict:
    plan = train_mini.PLANS["full"]
    models = load_mini(folder=folder)
    torch.manual_seed(3)  # train_mini's seed for the transformer at seed 0
    models.transformer = train_mini.transformer(plan)
    pictures = train_mini.training_pictures(plan, 0)
    longest = max(plan.latent_lengths)
    picture_set = train_mini.precompute(models, pictures, train_mini.latent_moves(models.vae, pictures, longest))
    prompts = train_mini.encode_prompts(models)
    inputs = held_out_inputs(models)
    started = time.perf_counter()
    losses = train_mini.train_transformer(
        models.transformer, picture_set, prompts, plan, 0, steps=steps, lr=plan.lr_dit, lengths=plan.latent_lengths,
        parameters=list(models.transformer.parameters()), label="transformer", curriculum=True)
    return {"vae": folder or "shipped", "steps": steps, "frame0_rms": frame0_error(models.transformer, inputs),
            "last_100_loss": float(np.mean(losses[-100:])), "train_seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vaes", default="shipped", help='train-mini output folders, comma-separated ("shipped")')
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    for folder in args.vaes.split(","):
        row = measure(None if folder == "shipped" else folder, args.steps)
        rows.append(row)
        errors = ", ".join(f"{frames} frames {error:.3f}" for frames, error in row["frame0_rms"].items())
        print(f"{row['vae']}: after {args.steps} steps, frame 0's x0 from pure noise off by {errors} RMS; "
              f"loss {row['last_100_loss']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
