"""`python -m wan_core mini-models --models-dir DIR` and `train-mini`: the mini model's commands."""

from __future__ import annotations

from pathlib import Path


def add_parsers(subparsers):
    mini = subparsers.add_parser("mini-models", help="copy the trained mini model and its sepia LoRA into a "
                                                     "ComfyUI models folder")
    mini.add_argument("--models-dir", required=True)
    mini.set_defaults(run=run_mini_models)
    train = subparsers.add_parser("train-mini", help="train the mini model (VAE, transformer, LoRA) on the CPU")
    train.add_argument("--out", required=True, help="a new (or empty) folder; written in ComfyUI's models layout")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--plan", choices=("full", "smoke"), default="full", help="smoke: toy sizes, for tests")
    train.add_argument("--vae-steps", type=int)
    train.add_argument("--decoder-steps", type=int, help="stage 1b: the VAE decoder on encoded camera moves")
    train.add_argument("--dit-steps", type=int, help="transformer steps: the curriculum on latent moves (with "
                       "--continue-from: the continued steps)")
    train.add_argument("--dit-settle-steps", type=int, help="transformer steps after the curriculum, on encoded moves")
    train.add_argument("--lora-steps", type=int)
    train.add_argument("--procedural-pictures", type=int)
    train.add_argument("--reuse-vae", metavar="DIR", help="skip stage 1: take the VAE and the frozen encoders from "
                                                         "an earlier run's folder (same seed and plan)")
    train.add_argument("--continue-from", metavar="DIR", help="train an earlier run's decoder and transformer "
                       "--decoder-steps and --dit-steps more steps (all motions evenly), then the LoRA afresh")
    train.add_argument("--threads", type=int, default=2, help="CPU threads (the shipped files: 2; the result depends on it, and on a machine shared with other work 1 can be faster)")
    train.set_defaults(run=run_train_mini)


def run_mini_models(args) -> int:
    from ..builtin.mini import write_mini_models

    for path in write_mini_models(Path(args.models_dir)):
        print(path)
    return 0


def run_train_mini(args) -> int:
    from ..builtin.train_mini import run

    return run(args)
