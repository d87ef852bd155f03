"""How steady a slow pan can be at all through the mini model's VAE: the ceiling for the videos' steadiness.

    pip install -e ".[train]"   # scikit-image: its held-out photos
    python bench/bench_mini_vae_motion.py [--folder DIR] [--motion pan_left]

For every held-out picture it takes the camera move the transformer is trained to make (train_mini.encoded_moves:
each latent frame the encoding of the frame the camera sees at the time that latent frame stands for), decodes it
with the VAE alone (no transformer, no sampling) and measures, as bench_mini_quality.py does, the horizontal shift
of every frame against the first by phase correlation: its total, the largest frame-to-frame jump as a share of the
total, and R^2 of a line. A perfect model reproduces its training targets, so the decoded targets are as steady as
its videos can get. The same for: the real frames (the ruler's own error); every frame encoded and decoded on its
own (the VAE's round trip); and the targets the transformer was trained on before (mini_data.camera_latents: each
latent frame the camera's window over one latent of the whole picture, resampled; latent frame 0 the first frame's
own latent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_core.builtin import mini_data as data  # noqa: E402
from wan_core.builtin.mini import load_mini  # noqa: E402
from wan_core.builtin.mini_quality import shift_track, steadiness  # noqa: E402
from wan_core.builtin.train_mini import encode, encoded_moves, first_frames  # noqa: E402
from wan_core.sampling import conditioning  # noqa: E402

FRAMES = 81
LATENT_FRAMES = (FRAMES - 1) // 4 + 1


def source_pictures() -> dict[str, torch.Tensor]:
    """{name: [3, SOURCE_H, SOURCE_W]}: the held-out pictures at the size training draws its pictures."""
    rng = np.random.default_rng(0)
    pictures = {name: data.photo_crop(name, rng) for name in data.PHOTOS_HELD_OUT}
    pictures.update({f"procedural_{seed}": data.procedural_picture(seed) for seed in data.PROCEDURAL_HELD_OUT_SEEDS})
    return {name: torch.from_numpy(picture).permute(2, 0, 1) for name, picture in pictures.items()}


def resampled_latent(models, picture: torch.Tensor, motion: str) -> np.ndarray:
    """[FRAMES, H, W, 3]: the move made by resampling the whole picture's latent, decoded."""
    source = conditioning.normalise_latents(models, encode(models.vae, picture[None, :, None]))[0, :, 0]
    first = conditioning.normalise_latents(models, encode(models.vae, first_frames(picture[None])[:, :, None]))
    target = data.camera_latents(source, motion, LATENT_FRAMES)  # [16, T_lat, h, w]
    target[:, 0] = first[0, :, 0]
    return conditioning.decode_latents(models, target[None]).numpy()


def encoded_move(models, picture: torch.Tensor, motion: str) -> np.ndarray:
    """[FRAMES, H, W, 3]: the transformer's training target for this move, decoded as one video."""
    raw = encoded_moves(models.vae, picture[None], LATENT_FRAMES)[:, data.MOTIONS.index(motion)]  # [1, 16, T, h, w]
    return conditioning.decode_latents(models, conditioning.normalise_latents(models, raw)).numpy()


@torch.no_grad()
def round_trip(models, frames: torch.Tensor) -> np.ndarray:
    """frames [3, T, H, W] in 0..1 -> [T, H, W, 3]: each frame encoded and decoded on its own."""
    latents = encode(models.vae, frames.transpose(0, 1)[:, :, None], batch=8)  # [T, 16, 1, h, w]
    decoded = torch.cat([models.vae.decode(latents[i:i + 8]).sample for i in range(0, len(latents), 8)])
    return ((decoded[:, :, 0] + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a train-mini output folder instead of the shipped files")
    parser.add_argument("--motion", default="pan_left", choices=("pan_left", "pan_right"))
    parser.add_argument("--json", help="write every measure here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = load_mini(folder=args.folder)
    rows = []
    for name, picture in source_pictures().items():
        real = data.camera_frames(picture, args.motion, FRAMES)  # [3, T, H, W]
        videos = {"real frames": real.permute(1, 2, 3, 0).numpy(), "round trip": round_trip(models, real),
                  "resampled latent": resampled_latent(models, picture, args.motion),
                  "encoded move": encoded_move(models, picture, args.motion)}
        for kind, video in videos.items():
            track = shift_track(video)
            row = {"picture": name, "kind": kind, **steadiness(track), "track_every_8": track[::8].round(1).tolist()}
            rows.append(row)
            print(f"{name:24s} {kind:16s} shift {row['total_px']:+6.1f} px  jump {row['largest_jump_share']:.2f}  "
                  f"r2 {row['line_r2']:.3f}  track {row['track_every_8']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
