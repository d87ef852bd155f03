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
from ..sampling.params import CONTEXT_OVERLAP_DEFAULT, DTYPES, FLOW_SHIFT_AUTO, FLOW_SHIFT_HELP, PARITY_CHOICES, \
    PRESET_CHOICES, PRESET_HELP, PRESET_NONE, RESOLUTION_AREAS, SAMPLER_NAMES, SIZE_AUTO, STEP_CACHE_RANGE, \
    TRAINED_FRAMES, SamplingParams, auto_size, check_step_caches, frame_count, parse_size, source_frame_count
from ..files.precision import WEIGHT_STORAGES
from ..sampling import parallel
from ..sampling.parallel import PARALLEL_CHOICES
from ..sampling.speed import ATTENTION_CHOICES, OFFLOADS, check_block_swap, check_model_speed, check_offload, \
    check_resident_blocks
from ..video_io import DEFAULT_FPS, check_output_path, read_image, read_video, resample_to_fps, write_video



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
    parser.add_argument("--prompt-extend", action="store_true",
                        help="rewrite the prompt into a detailed one with a local instruct model (printed) before "
                             "sampling; the model comes from --prompt-extend-model, else MODELS_DIR/LLM/; a "
                             "vision-language model is also shown the picture (v2v: the first source frame)")
    parser.add_argument("--prompt-extend-model", metavar="PATH",
                        help="a transformers chat model folder (e.g. Qwen2.5-1.5B-Instruct, or Qwen2.5-VL-3B-Instruct "
                             "to see the picture), or a folder of them")
    parser.add_argument("--size", default=SIZE_AUTO,
                        help="auto (default): the input's aspect ratio at --resolution's pixel area, the picture "
                             "resized whole; or W*H, multiples of 16 from 64 to 1920, the picture scaled and cropped")
    parser.add_argument("--resolution", choices=RESOLUTION_AREAS, default="480p",
                        help="pixel area of --size auto: 480p = 832*480, 720p = 1280*720 (default 480p)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, help="seconds at 16 fps (default 5: 81 frames); for v2v, "
                                                      "seconds of the source")
    length.add_argument("--frames", type=int, help="frame count of the form 4n+1")
    parser.add_argument("--context-frames", type=int, default=TRAINED_FRAMES,
                        help=f"longer videos are sampled in overlapping windows of at most this many frames, 4n+1 "
                             f"(default {TRAINED_FRAMES}, the length Wan 2.1 was trained on)")
    parser.add_argument("--context-overlap", type=int, default=CONTEXT_OVERLAP_DEFAULT,
                        help=f"frames neighbouring windows share at least, a multiple of 4 (default "
                             f"{CONTEXT_OVERLAP_DEFAULT})")
    parser.add_argument("--one-pass", action="store_true",
                        help="sample all frames in one pass instead of windows: attention cost grows with the "
                             "square of the length, and past ~81 frames motion may loop")
    parser.add_argument("--riflex", action="store_true",
                        help="with --one-pass: RIFLEx, a longer period of one temporal RoPE frequency so that up "
                             "to ~2x the trained length does not repeat")
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
                             "on a 24 GB GPU; blocks: the same, and the transformer's blocks stream to the GPU one "
                             "at a time while the one before computes, so 14B fp8 runs on a 12-16 GB GPU (not with "
                             "--step-cache); both need a CUDA device")
    parser.add_argument("--resident-blocks", type=int, default=0, metavar="N",
                        help="with --offload blocks: the transformer's first N blocks stay on the GPU while it "
                             "samples and only the others stream (default 0: all stream; 14B has 40 blocks of "
                             "about 0.75 GiB each in bf16, half that with fp8 weight storage); each one kept saves "
                             "its copy on every step, if the GPU has the room")
    parser.add_argument("--prompt-cache", choices=("disk", "memory"), default="disk",
                        help="disk (default): prompt embeddings are kept under $WANFLOW_CACHE/prompts (at most "
                             "$WANFLOW_PROMPT_CACHE_MB, default 256), so a rerun with the same prompts never runs the "
                             "text encoder; memory: nothing is written. `python -m wan_core cache clear` empties it")
    parser.add_argument("--parallel", choices=PARALLEL_CHOICES, default="none",
                        help="under torchrun: split each transformer pass over the processes (ulysses; ring with "
                             "--attention flash or sage), run the prompt's and the negative prompt's pass on two "
                             "processes (cfg), or both (cfg+ulysses, cfg+ring with an even count)")
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
    tiny = subparsers.add_parser("tiny-models", help="write the tiny model files, LoRAs and prompt-extension models "
                                                     "(a chat LLM and a vision-language one) into a ComfyUI models "
                                                     "folder")
    tiny.add_argument("--models-dir", required=True)
    tiny.set_defaults(run=run_tiny_models)


def _params(args, num_frames: int, media: torch.Tensor, **extra) -> SamplingParams:
    """media [T, H, W, 3]: the picture or source video whose aspect ratio --size auto keeps."""
    if args.size.strip().lower() == SIZE_AUTO:
        (width, height), fit = auto_size(media.shape[2], media.shape[1], args.resolution), "resize"
    else:
        (width, height), fit = parse_size(args.size, "--size"), "crop"
    return SamplingParams(
        prompt=args.prompt, negative_prompt=args.negative_prompt, width=width, height=height, num_frames=num_frames,
        steps=args.steps, guidance_scale=args.guidance_scale, flow_shift=args.flow_shift, seed=args.seed,
        sampler=args.sampler, parity=args.parity, preset=args.preset, fit=fit, context_frames=args.context_frames,
        context_overlap=args.context_overlap, one_pass=args.one_pass, riflex=args.riflex, **extra,
    )


def _output_path(args) -> Path:
    """--out, checked before any model loads: an mp4 that can be written and is not the run's own input."""
    if Path(args.out).suffix.lower() != ".mp4":
        raise WanInputError(f"--out={args.out!r} must end in .mp4")
    inputs = {"--image": getattr(args, "image", None), "--video": getattr(args, "video", None)}
    return check_output_path(args.out, "--out", inputs)


def _prompt_extend_model(args) -> Path | None:
    """The prompt-extension model folder, found before any model loads; None without --prompt-extend."""
    from ..prompt_extend import LLM_FOLDER, find_llm, missing_model_error
    from ..tiny import tiny_llm_path

    if not args.prompt_extend:
        if args.prompt_extend_model:
            raise WanInputError("--prompt-extend-model is given without --prompt-extend: add --prompt-extend")
        return None
    if args.prompt_extend_model:
        return find_llm(args.prompt_extend_model)
    if args.model == "tiny":
        return tiny_llm_path()
    if not args.model:
        raise missing_model_error("no --model folder or --prompt-extend-model was given")
    return find_llm(Path(args.model) / LLM_FOLDER)


def _extended(params: SamplingParams, llm: Path | None, media: torch.Tensor) -> SamplingParams:
    """params with the prompt rewritten by the local model (printed), seeded by the run's seed. A vision-language
    model is shown the first frame of media: the picture for i2v; for v2v the first source frame, the one an I2V
    model (as the mini one) conditions on and where the scene the prompt describes starts."""
    if llm is None:
        return params
    from dataclasses import replace

    from ..prompt_extend import PromptExtender

    extender = PromptExtender.load(llm)
    prompt = extender.extend(params.prompt, params.seed, picture=media)
    del extender  # the language model leaves memory before Wan's models load
    print(f"extended prompt: {prompt}")
    return replace(params, prompt=prompt)


def _run(args, task: str, media: torch.Tensor, params: SamplingParams, note: str | None = None) -> int:
    """note: said once every input is checked, before the work starts (e.g. a source shorter than asked)."""
    out = _output_path(args)
    plan = parallel.plan_from_environment(args.parallel)
    llm = _prompt_extend_model(args)
    # diffusers and transformers take seconds to import: only the subcommands that generate pay for them
    from ..files.loading import read_transformer_config
    from ..sampling import conditioning, pipeline
    from ..sampling.models import load_models
    from ..sampling.prompt_cache import PromptCache, disk_folder
    from ..lora.sources import resolve_lora_file
    from ..files.model_files import resolve_model_files

    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    check_model_speed(args.attention, args.compile, args.device, dtype)
    check_offload(args.offload, args.device)
    check_range("step_cache", args.step_cache, *STEP_CACHE_RANGE)
    check_step_caches(args.fast, args.step_cache)
    check_block_swap(args.offload, args.step_cache)
    check_resident_blocks(args.resident_blocks, args.offload)  # its count against the model's, once read below
    loras = stack_from_options(args.lora)
    loras_dir = Path(args.model) / "loras" if args.model and args.model != "tiny" else None
    for entry in loras:  # a missing file or an unreachable URL fails here, before the models load
        resolve_lora_file(entry, loras_dir)
    files = resolve_model_files(args.model, task, args.diffusion_model, args.vae, args.text_encoder, args.clip_vision,
                                tokenizer=args.tokenizer)
    config = read_transformer_config(files.diffusion_model)
    check_resident_blocks(args.resident_blocks, args.offload, config["num_layers"])
    parallel.check_plan(plan, config["num_attention_heads"], parallel.pass_tokens(params, config["patch_size"]),
                        params.guidance_scale, args.attention)
    if note and plan.writes_output:
        print(f"note: {note}", file=sys.stderr)
    started = time.perf_counter()
    device = parallel.start(plan, args.device)
    params.seed = parallel.shared_seed(plan, params.seed)
    params = _extended(params, llm, media)
    models = load_models(files.diffusion_model, files.vae, files.text_encoder, files.clip_vision, dtype, device,
                         weight_storage=args.weight_storage, tokenizer=files.tokenizer, offload=args.offload,
                         resident_blocks=args.resident_blocks, lazy_text_encoder=True)
    models.parallel = parallel.ParallelRun(plan, device) if plan.world_size > 1 else None
    if args.prompt_cache == "disk":
        models.prompt_cache = PromptCache(folder=disk_folder())
    with models.configured(loras=loras, loras_dir=loras_dir, attention=args.attention, compile=args.compile,
                           step_cache=args.step_cache, fast_mode=args.fast), \
            tqdm(total=params.steps, desc="sampling", unit="step", file=sys.stderr,
                 disable=not plan.writes_output) as bar:
        if loras and plan.writes_output:
            print(models.lora_report.summary(), file=sys.stderr)

        def progress(step):
            bar.total = step.total
            bar.update(step.i + 1 - bar.n)

        generate = pipeline.generate_i2v if task == "i2v" else pipeline.generate_v2v
        generation = generate(models, media, params, progress)
    parallel.finish(plan)
    if not plan.writes_output:  # every rank holds the same latents: rank 0 decodes and writes them
        return 0
    frames = conditioning.decode_latents(models, generation.latents)
    write_video(out, frames, DEFAULT_FPS)
    elapsed = time.perf_counter() - started
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, {DEFAULT_FPS} fps)")
    print(f"seed: {generation.seed}  {models.passes.line()}  wall time: {elapsed:.1f} s")
    return 0


def run_i2v(args) -> int:
    image = read_image(args.image, name="--image")
    return _run(args, "i2v", image, _params(args, frame_count(args.duration, args.frames), image))


def run_v2v(args) -> int:
    """The source is first brought to 16 fps by time, so --duration counts its seconds and the output plays at
    its speed; a shorter source gives what it has."""
    video, fps = read_video(args.video, name="--video")
    video = resample_to_fps(video, fps)
    wanted = frame_count(args.duration, args.frames) if args.duration or args.frames else None
    num_frames, note = source_frame_count(video.shape[0], wanted)
    note = note and f"--video={args.video!r}: {note}"
    return _run(args, "v2v", video, _params(args, num_frames, video, strength=args.strength), note)


def run_tiny_models(args) -> int:
    from ..tiny import TINY_LLM_FOLDER, TINY_LORA_FILES, TINY_VLM_FOLDER, write_tiny_llm, write_tiny_lora, \
        write_tiny_models, write_tiny_vlm

    paths = list(write_tiny_models(args.models_dir).values())
    paths += [write_tiny_lora(Path(args.models_dir) / name, model) for model, name in TINY_LORA_FILES.items()]
    paths.append(write_tiny_llm(Path(args.models_dir) / TINY_LLM_FOLDER))
    paths.append(write_tiny_vlm(Path(args.models_dir) / TINY_VLM_FOLDER))
    for path in paths:
        print(path)
    return 0
