"""What the trained mini model does on pictures and prompts it never saw in training.

    pip install -e ".[train]"   # scikit-image: its held-out photos
    python bench/bench_mini_quality.py [--steps 30] [--frames 81] [--json out.json] [--folder DIR]

For every held-out picture (photos coffee, chelsea, rocket from scikit-image and procedural seeds 1000001-1000003)
and each of pan left, pan right, zoom in (a held-out sentence each) it runs the engine's image-to-video at 160x96
(guidance 5, shift 3, UniPC, seed 0) on the shipped mini files and reports: PSNR of the first frame against the
input scaled to 160x96, the horizontal shift between the first and the last frame (phase correlation; the camera
panning left moves the content right, +x), how evenly it grows (largest frame-to-frame jump as a share of the
total, R^2 of a line), and the zoom factor between the first and the last frame.
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

from wan_core.builtin import mini_data as data  # noqa: E402
from wan_core.builtin.mini import load_mini, mini_model_paths  # noqa: E402
from wan_core.builtin.mini_quality import measure, off_sepia  # noqa: E402
from wan_core.lora.stack import LoraEntry  # noqa: E402
from wan_core.sampling import conditioning  # noqa: E402
from wan_core.sampling.params import SamplingParams  # noqa: E402
from wan_core.sampling.pipeline import generate_i2v  # noqa: E402
from wan_core.video_io import read_image  # noqa: E402

MOTIONS = ("pan_left", "pan_right", "zoom_in")


def held_out_pictures(photos=True) -> dict[str, torch.Tensor]:
    """{name: [H, W, 3] in 0..1}: pictures never used in training, as a user would give them."""
    pictures = {}
    if photos:
        for name in data.PHOTOS_HELD_OUT:
            pictures[name] = torch.from_numpy(data.photo(name))
    for seed in data.PROCEDURAL_HELD_OUT_SEEDS:
        pictures[f"procedural_{seed}"] = torch.from_numpy(data.procedural_picture(seed))
    return pictures


def run_one(models, picture: torch.Tensor, prompt: str, frames: int, steps: int, guidance: float, seed: int = 0):
    """One generation -> (decoded frames [T, 96, 160, 3] numpy, the input fitted to 160x96 numpy)."""
    params = SamplingParams(prompt=prompt, width=data.FRAME_W, height=data.FRAME_H, num_frames=frames, steps=steps,
                            guidance_scale=guidance, seed=seed)
    generation = generate_i2v(models, picture[None], params)
    video = conditioning.decode_latents(models, generation.latents).numpy()
    fitted = conditioning.fit_frames(picture[None], data.FRAME_W, data.FRAME_H)[0].numpy()
    return video, fitted


def lora_effect(models, name: str, picture: torch.Tensor, args, lora) -> dict:
    """The sepia LoRA at strength 1 against 0 on one picture: off_sepia of both videos and the share removed."""
    prompt = data.HELD_OUT_PROMPTS["pan_left"][0]
    off = {}
    for strength in (0.0, 1.0):
        with models.configured(loras=(LoraEntry.from_text(str(lora), strength),)):
            off[strength] = off_sepia(run_one(models, picture, prompt, args.frames, args.steps, args.guidance)[0])
    row = {"picture": name, "off_sepia_0": off[0.0], "off_sepia_1": off[1.0], "cut": 1 - off[1.0] / off[0.0]}
    print(f"{name:24s} sepia LoRA: off-sepia {off[0.0]:.3f} -> {off[1.0]:.3f} ({row['cut']:.0%} removed)", flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--folder", help="a train-mini output folder instead of the shipped files")
    parser.add_argument("--no-photos", action="store_true", help="procedural pictures only (no scikit-image)")
    parser.add_argument("--pictures", help="comma-separated names, e.g. coffee,procedural_1000001 (default: all)")
    parser.add_argument("--example", action="store_true", help="also examples/first_frame.png (held out too)")
    parser.add_argument("--json", help="write every measure here")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (1 is faster on a loaded machine)")
    parser.add_argument("--motions", default=",".join(MOTIONS))
    parser.add_argument("--lora", action="store_true", help="also the sepia LoRA at strength 1 against 0")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = load_mini(folder=args.folder)
    pictures = held_out_pictures(not args.no_photos)
    if args.example:
        pictures["first_frame.png"] = read_image(Path(__file__).resolve().parents[1] / "examples" / "first_frame.png")[0]
    if args.pictures:
        pictures = {name: pictures[name] for name in args.pictures.split(",")}
    rows = []
    for name, picture in pictures.items():
        for motion in args.motions.split(","):
            prompt = data.HELD_OUT_PROMPTS[motion][0]
            started = time.perf_counter()
            video, fitted = run_one(models, picture, prompt, args.frames, args.steps, args.guidance)
            row = {"picture": name, "prompt": prompt, **measure(video, fitted, motion),
                   "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            print(f"{name:24s} {motion:9s} psnr {row['first_frame_psnr']:5.1f} dB  shift {row['total_px']:+6.1f} px  "
                  f"jump {row['largest_jump_share']:.2f}  r2 {row['line_r2']:.2f}  zoom {row['zoom_scale']:.2f}  "
                  f"ok {row['direction_ok']}  ({row['seconds']} s)", flush=True)
    lora_rows = [lora_effect(models, name, picture, args, mini_model_paths(args.folder)["lora"])
                 for name, picture in pictures.items()] if args.lora else []
    summary = {
        "first_frame_psnr_min": min(r["first_frame_psnr"] for r in rows),
        "first_frame_psnr_mean": float(np.mean([r["first_frame_psnr"] for r in rows])),
        "direction_ok": f"{sum(r['direction_ok'] for r in rows)}/{len(rows)}",
        "pan_shift_mean_px": {m: float(np.mean([r["total_px"] for r in rows if r["motion"] == m]))
                              for m in ("pan_left", "pan_right")},
        "zoom_in_scale_mean": float(np.mean([r["zoom_scale"] for r in rows if r["motion"] == "zoom_in"])),
        "pan_largest_jump_share_mean": float(np.mean([r["largest_jump_share"] for r in rows
                                                      if r["motion"].startswith("pan")])),
        "pan_line_r2_mean": float(np.mean([r["line_r2"] for r in rows if r["motion"].startswith("pan")])),
    }
    if lora_rows:
        summary["lora_off_sepia_cut_mean"] = float(np.mean([r["cut"] for r in lora_rows]))
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "summary": summary, "rows": rows,
                                               "lora_rows": lora_rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
