"""Sampling speed of a Wan 2.1 14B-sized transformer: diffusers' WanImageToVideoPipeline next to wan_core with
each speed setting, on the same weights, in one run. Made for a GPU session; `--preset small` runs it on a CPU.

The transformer has the real 14B I2V architecture (width 5120, 40 heads, 40 blocks, ffn 13824) with random
weights, built on the device in the compute dtype, because no model hub is reachable from the GPU machines. The
encoders and the VAE are the tiny ones (the transformer's text and image embedders take their widths), so text
cross-attention still sees 512 tokens but image cross-attention 17 tokens instead of CLIP-H's 257: a negligible
part of a step next to self-attention over 21x60x104 = 32760 tokens at 480p. Per-step time is what compares;
whole-generation time includes the tiny VAE, which is not the real VAE's cost.

Every configuration runs `--steps` steps (fp8 storage and then block swap last: neither is undone; block swap
after fp8 storage streams the fp8 weights); the first step (kernel selection, compilation) is left out of the
per-step median. Rows are ratios to diffusers' pipeline with its defaults (PyTorch SDPA). "blocks" is block swap
(offload "blocks", speed.enable_block_swap): the transformer's weights go back to the CPU and each block streams
to the GPU for its turn, so its peak GPU memory is the figure to compare with "auto"'s; "blocks=N" keeps the
first N blocks resident (--resident-blocks N). One blocks configuration a process: the swap is not undone.

    python bench/bench_speed.py [--preset 14b|small] [--size 832*480] [--frames 81] [--steps 4]
                                [--configs diffusers auto sdpa fp8 compile cache=0.1 fast 4step sage flash flash3 blocks|blocks=N]

fast is fast mode (MagCache; the 14B shape takes the published I2V 480p/720p ratios, the small one is calibrated
by its first run, which is then left out); 4step is the distill preset (4 steps, guidance 1, whatever --steps says).
Every row says its transformer passes and how many a cache skipped.

Several GPUs: `torchrun --nproc_per_node N bench/bench_speed.py --parallel ulysses|cfg|cfg+ulysses ...` runs the
wan_core configurations split over the N processes (diffusers' pipeline, which runs whole on every rank, is left
out); rank 0 prints the table. Seconds per step against one GPU: the same command with --nproc_per_node 1 and no
--parallel, run right before or after on the same machine.
"""

from __future__ import annotations

import argparse
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
from PIL import Image
from reference import reference_pipeline

from wan_core.sampling import magcache, parallel, pipeline
from wan_core.errors import WanInputError
from wan_core.files.loading import WAN_HEAD_DIM
from wan_core.sampling.models import load_models, model_offload
from wan_core.sampling.params import DTYPES, WAN_NEGATIVE_PROMPT, SamplingParams
from wan_core.sampling.speed import enable_block_swap
from wan_core.files.precision import FP8_STORAGE_DTYPE
from wan_core.tiny import IMAGE_DIM, TEXT_DIM, tiny_model_paths
from wan_core.video_io import pil_to_frame

PRESETS = {"14b": dict(dim=5120, layers=40, ffn=13824), "small": dict(dim=256, layers=2, ffn=1024)}
PROMPT, SEED, SHIFT = "a cat walks on the grass", 1, 3.0


def random_transformer(preset: str, device, dtype) -> WanTransformer3DModel:
    """The I2V architecture at the preset's size, initialised by diffusers on the device, in the compute dtype."""
    size = PRESETS[preset]
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = WanTransformer3DModel(
                num_attention_heads=size["dim"] // WAN_HEAD_DIM, attention_head_dim=WAN_HEAD_DIM, in_channels=36,
                out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=size["ffn"], num_layers=size["layers"],
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=IMAGE_DIM,
                added_kv_proj_dim=size["dim"])
    finally:
        torch.set_default_dtype(default_dtype)
    return transformer.eval().requires_grad_(False)


def synchronised_clock(device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def run_diffusers(models, picture, args, stamps: list) -> None:
    reference = reference_pipeline(models, SHIFT)

    def on_step(_pipe, _i, _t, kwargs):
        stamps.append(synchronised_clock(args.device))
        return kwargs

    reference(image=picture, prompt=PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT,
              height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps,
              generator=torch.Generator().manual_seed(SEED), output_type="latent", callback_on_step_end=on_step)


def run_wan_core(models, picture, args, stamps: list, settings: dict, preset: str = "none") -> None:
    sampling = dict(preset=preset) if preset != "none" else dict(steps=args.steps, flow_shift=SHIFT)
    params = SamplingParams(prompt=PROMPT, width=args.width, height=args.height, num_frames=args.frames, seed=SEED,
                            **sampling)
    with models.configured(**settings):
        pipeline.generate_i2v(models, pil_to_frame(picture)[None], params,
                              lambda _step: stamps.append(synchronised_clock(args.device)))


def configure(models, config: str) -> dict:
    """This configuration's WanModels.configured settings (fp8 storage is switched on the shared transformer)."""
    if config == "fp8":
        models.transformer.enable_layerwise_casting(storage_dtype=FP8_STORAGE_DTYPE, compute_dtype=models.dtype)
    if config.split("=")[0] == "blocks":  # as load_models(offload="blocks", resident_blocks=N) leaves it
        models.resident_blocks = int(config.split("=")[1]) if "=" in config else 0
        models.transformer.to("cpu")
        enable_block_swap(models.transformer, models.device, models.resident_blocks)
        models.offload, models.placement = "blocks", model_offload  # the resident blocks move with the stage
    return dict(attention=config if config in ("sdpa", "sage", "flash", "flash3", "xformers") else "auto",
                compile=config == "compile", fast_mode=config == "fast",
                step_cache=float(config.split("=")[1]) if config.startswith("cache=") else 0.0)


def measure(models, picture, args, config: str) -> dict:
    stamps = []
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = synchronised_clock(args.device)
    if config == "diffusers":
        with models.configured(**configure(models, "auto")):  # the transformer as diffusers loads it
            run_diffusers(models, picture, args, stamps)
    else:
        if config == "fast" and magcache.published_table(models.transformer, args.width, args.height) is None:
            run_wan_core(models, picture, args, [], configure(models, config))  # calibrates this model once
            started = synchronised_clock(args.device)
        run_wan_core(models, picture, args, stamps, configure(models, config), "4step" if config == "4step" else "none")
    steps = np.diff([started, *stamps])
    return {"step": statistics.median(steps[1:]) if len(steps) > 1 else steps[0],
            "first": steps[0], "total": stamps[-1] - started,
            "passes": "-" if config == "diffusers" else models.passes.line(),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=PRESETS, default="14b")
    parser.add_argument("--size", default="832*480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    parser.add_argument("--configs", nargs="+",
                        default=["diffusers", "auto", "fp8", "cache=0.1", "compile", "blocks"])
    parser.add_argument("--parallel", choices=parallel.PARALLEL_CHOICES, default="none",
                        help="under torchrun: split the wan_core configurations over the processes")
    args = parser.parse_args()
    if sum(config.split("=")[0] == "blocks" for config in args.configs) > 1:
        parser.error("one blocks configuration a process: block swap cannot be switched off again")
    args.width, args.height = map(int, args.size.split("*"))
    dtype = DTYPES[args.dtype]
    plan = parallel.plan_from_environment(args.parallel)
    args.device = str(parallel.start(plan, args.device))
    if plan.world_size > 1:
        args.configs = [config for config in args.configs if config != "diffusers"]

    paths = tiny_model_paths()
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"], dtype=dtype,
                         device=args.device)
    models.transformer = random_transformer(args.preset, args.device, dtype)
    models.parallel = parallel.ParallelRun(plan, torch.device(args.device)) if plan.world_size > 1 else None
    models.source = None  # not the tiny file's transformer: fast mode keys a calibration by these weights instead
    # fp8 storage rounds the weights and diffusers cannot switch it off again: it runs last but block swap, whose
    # hooks stay on the transformer as well
    configs = sorted(args.configs, key=lambda config: {"fp8": 1, "blocks": 2}.get(config.split("=")[0], 0))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))

    results = {}
    for config in configs:
        try:
            results[config] = measure(models, picture, args, config)
        except WanInputError as error:  # a kernel this machine lacks: said in the table, the others still run
            results[config] = {"error": str(error)}
        print(f"{config}: {results[config]}", file=sys.stderr, flush=True)
    parallel.finish(plan)
    if not plan.writes_output:
        return

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {device_name}; torch {torch.__version__}, python {platform.python_version()}")
    print(f"command: python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"workload: {args.preset} I2V transformer, random weights, {args.dtype}; {args.size}, {args.frames} "
          f"frames, {args.steps} UniPC steps, guidance 5 (two passes a step); parallel {args.parallel} over "
          f"{plan.world_size} process(es)")
    reference = results.get("diffusers", {}).get("step")
    print("| configuration | s/step | vs diffusers | first step (s) | total (s) | transformer passes | "
          "peak GPU memory (GiB) |\n|---|---|---|---|---|---|---|")
    for config, result in results.items():
        config = f"{config} (fp8 storage)" if config.startswith("blocks") and "fp8" in results else config
        if "error" in result:
            print(f"| {config} | - | - | - | - | - | {result['error']} |")
            continue
        ratio = f"{result['step'] / reference:.3f}" if reference else "-"
        print(f"| {config} | {result['step']:.3f} | {ratio} | {result['first']:.2f} | {result['total']:.1f} | "
              f"{result['passes']} | {result['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
