"""`python -m wan_core i2v|v2v`: validate everything, load the models, sample, write the mp4."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import WanInputError, check_range
from ..lora.stack import stack_from_options
from ..sampling.params import DTYPES, FLOW_SHIFT_AUTO, FLOW_SHIFT_HELP, PARITY_CHOICES, PRESET_CHOICES, PRESET_HELP, \
    PRESET_NONE, SAMPLER_NAMES, STEP_CACHE_RANGE, SamplingParams, check_step_caches, frame_count, parse_size, \
    source_frame_count
from ..files.precision import WEIGHT_STORAGES
from ..sampling.speed import ATTENTION_CHOICES, OFFLOADS, check_model_speed, check_offload
from ..video_io import DEFAULT_FPS, check_output_path, read_image, read_video, write_video



def _add_common(parser: argparse.ArgumentParser):
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument("--model", help="'tiny' (no weights needed) or a model folder (same as --models-dir)")
    folder.add_argument("--models-dir", dest="model", metavar="DIR",
                        help="a ComfyUI models folder (standard file names), a diffusers folder or the Wan-AI release")
    for name in ("diffusion-model", "vae", "text-encoder", "clip-vision"):
        parser.add_argument(f"--{name}", help=f"{name.replace('-', ' ')} file or folder; in a ComfyUI models folder "
                                              "a bare file name (overrides the folder's default)")
    parser.add_argument("--tokenizer", help="tokenizer folder, for text encoder files that embed none")
    parser.add_argument("--weight-storage", choices=WEIGHT_STORAGES, default="compute",
                        help="fp8: keep the diffusion model's and text encoder's weights in float8_e4m3fn, "
                             "upcast per layer")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", help="default: Wan 2.1's official negative prompt")
    parser.add_argument("--size", default="832*480", help="W*H, multiples of 16 from 64 to 1920 (default 832*480)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, help="seconds at 16 fps (default 5: 81 frames)")
    length.add_argument("--frames", type=int, help="frame count of the form 4n+1")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default=PRESET_NONE,
                        help=f"{PRESET_HELP}; steps, guidance, shift and sampler then come from the preset")
    parser.add_argument("--steps", type=int, help="default 30 (the preset's with --preset)")
    parser.add_argument("--guidance-scale", type=float, help="default 5 (the preset's with --preset)")
    parser.add_argument("--flow-shift", type=float, default=FLOW_SHIFT_AUTO, help=f"1-20; {FLOW_SHIFT_HELP}")
    parser.add_argument("--seed", type=int, default=-1, help="-1 draws one; the seed used is printed")
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, help="default unipc (the preset's with --preset)")
    parser.add_argument("--parity", choices=PARITY_CHOICES, default="diffusers",
                        help="where diffusers 0.42's Wan pipelines and Wan's reference differ (sigma spacing, CLIP "
                             "input cropped or squashed), follow diffusers (default, tested) or wan")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode: a step cache calibrated for the model (MagCache, with the published Wan 2.1 "
                             "ratios, or measured once for any other model) that skips transformer passes at a "
                             "small loss of quality")
    parser.add_argument("--step-cache", type=float, default=0.0, metavar="T",
                        help="expert step cache, 0-1 (default 0: off): where the first transformer block's output changed "
                             "by less than T (relative) since the last full pass, skip the other blocks and reuse "
                             "their change from that pass; 0.05-0.1 trade a little quality for fewer transformer "
                             "passes on real weights")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto",
                        help="attention kernel of the diffusion model (default auto: PyTorch SDPA, which picks "
                             "flash or memory-efficient kernels on a GPU); flash (flash-attn 2), flash3 "
                             "(FlashAttention 3, Hopper), sage (SageAttention) and xformers need their package and "
                             "a CUDA GPU, and all but xformers a bf16 or fp16 dtype")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each transformer block, for faster steps on a GPU; the first step "
                             "of a new size waits for the compiler")
    parser.add_argument("--offload", choices=OFFLOADS, default="none",
                        help="model: keep every network in RAM and move each to the GPU only for its stage (text "
                             "encoder, then CLIP and VAE, then the transformer, then the VAE), so a 14B model runs "
                             "on a 24 GB GPU; needs a CUDA device")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, help="default bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--lora", action="append", default=[], metavar="SOURCE[:SCALE]",
                        help="a LoRA file (or one in --model's loras folder), hub repo id or URL, scale 0-4 "
                             "(default 1); repeat for up to 3")


def add_parsers(subparsers):
    i2v = subparsers.add_parser("i2v", help="image to video")
    i2v.add_argument("--image", required=True)
    _add_common(i2v)
    i2v.set_defaults(run=run_i2v)
    v2v = subparsers.add_parser("v2v", help="video to video")
    v2v.add_argument("--video", required=True)
    v2v.add_argument("--strength", type=float, default=0.9, help="0.1-1.0: how much of the source is re-imagined")
    _add_common(v2v)
    v2v.set_defaults(run=run_v2v)
    tiny = subparsers.add_parser("tiny-models", help="write the tiny model files and LoRAs into a ComfyUI models folder")
    tiny.add_argument("--models-dir", required=True)
    tiny.set_defaults(run=run_tiny_models)


def _params(args, num_frames: int, **extra) -> SamplingParams:
    width, height = parse_size(args.size, "--size")
    return SamplingParams(
        prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height, num_frames=num_frames,
        steps=args.steps, guidance_scale=args.guidance_scale, flow_shift=args.flow_shift, seed=args.seed,
        sampler=args.sampler, parity=args.parity, preset=args.preset, **extra,
    )


def _output_path(args) -> Path:
    """--out, checked before any model loads: an mp4 that can be written and is not the run's own input."""
    if Path(args.out).suffix.lower() != ".mp4":
        raise WanInputError(f"--out={args.out!r} must end in .mp4")
    inputs = {"--image": getattr(args, "image", None), "--video": getattr(args, "video", None)}
    return check_output_path(args.out, "--out", inputs)


def _run(args, task: str, media: torch.Tensor, params: SamplingParams) -> int:
    out = _output_path(args)
    # diffusers and transformers take seconds to import: only the subcommands that generate pay for them
    from ..sampling import conditioning, pipeline
    from ..sampling.models import load_models
    from ..lora.sources import resolve_lora_file
    from ..files.model_files import resolve_model_files

    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    check_model_speed(args.attention, args.compile, args.device, dtype)
    check_offload(args.offload, args.device)
    check_range("step_cache", args.step_cache, *STEP_CACHE_RANGE)
    check_step_caches(args.fast, args.step_cache)
    loras = stack_from_options(args.lora)
    loras_dir = Path(args.model) / "loras" if args.model and args.model != "tiny" else None
    for entry in loras:  # a missing file or an unreachable URL fails here, before the models load
        resolve_lora_file(entry, loras_dir)
    files = resolve_model_files(args.model, task, args.diffusion_model, args.vae, args.text_encoder, args.clip_vision,
                                tokenizer=args.tokenizer)
    started = time.perf_counter()
    models = load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision, dtype, args.device,
                         weight_storage=args.weight_storage, tokenizer=files.tokenizer, offload=args.offload)
    with models.configured(loras=loras, loras_dir=loras_dir, attention=args.attention, compile=args.compile,
                           step_cache=args.step_cache, fast_mode=args.fast), \
            tqdm(total=params.steps, desc="sampling", unit="step", file=sys.stderr) as bar:
        if loras:
            print(models.lora_report.summary(), file=sys.stderr)

        def progress(step):
            bar.total = step.total
            bar.update(step.i + 1 - bar.n)

        generate = pipeline.generate_i2v if task == "i2v" else pipeline.generate_v2v
        generation = generate(models, media, params, progress)
    frames = conditioning.decode_latents(models, generation.latents)
    write_video(out, frames, DEFAULT_FPS)
    elapsed = time.perf_counter() - started
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, {DEFAULT_FPS} fps)")
    print(f"seed: {generation.seed}  {models.passes.line()}  wall time: {elapsed:.1f} s")
    return 0


def run_i2v(args) -> int:
    params = _params(args, frame_count(args.duration, args.frames))
    return _run(args, "i2v", read_image(args.image, name="--image"), params)


def run_v2v(args) -> int:
    video, _fps = read_video(args.video, name="--video")
    wanted = frame_count(args.duration, args.frames) if args.duration or args.frames else None
    num_frames = wanted or source_frame_count(video.shape[0])
    if num_frames > video.shape[0]:
        raise WanInputError(f"the source video {args.video!r} has {video.shape[0]} frames: fewer than the "
                            f"{num_frames} asked for; ask for at most {source_frame_count(video.shape[0])}")
    return _run(args, "v2v", video, _params(args, num_frames, strength=args.strength))


def run_tiny_models(args) -> int:
    from ..tiny import TINY_LORA_FILES, write_tiny_lora, write_tiny_models

    paths = list(write_tiny_models(args.models_dir).values())
    paths += [write_tiny_lora(Path(args.models_dir) / name, model) for model, name in TINY_LORA_FILES.items()]
    for path in paths:
        print(path)
    return 0
