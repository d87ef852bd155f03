"""Applying and removing a stack of three rank-32 LoRAs on a ~1 GB Wan transformer: wan_core against diffusers.

The model is a WanTransformer3DModel with the 1.3B model's widths (dim 1536, 12 heads, ffn 8960, text 4096) and
fewer blocks, random bf16 weights, written once as a safetensors file and loaded from it by each side (wan_core reads
the base weights back from that file when it removes a stack). The three LoRAs (ComfyUI layout, every linear layer
of every block) are written once too; each side then runs in a fresh subprocess so that its peak RSS is its own:
  wan_core:  set_lora_stack(models, stack) / set_lora_stack(models, None)
  diffusers: WanPipeline.load_lora_weights x3 + set_adapters + fuse_lora / unfuse_lora + unload_lora_weights
Extra peak memory is the highest RSS while applying (a 2 ms sampler) minus the RSS before; "kept" is what stays
resident after applying (diffusers' adapter layers). Both are also given as a fraction of the touched weights (the
weights the stack changes, in their bf16 size).

    python bench/bench_lora.py [--layers 11] [--rank 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCALES = (1.0, 0.7, 0.5)
MIB = 2**20


def meta_model(layers: int):
    """The 1.3B model's shapes with `layers` blocks, on the meta device (no memory yet)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        return WanTransformer3DModel(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                                     text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=layers)


def write_model(path: Path, layers: int) -> Path:
    """meta_model with bf16 weights drawn from a fixed seed, saved as one safetensors file."""
    import torch
    from safetensors.torch import save_file

    model = meta_model(layers).to_empty(device="cpu").to(torch.bfloat16).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    save_file(model.state_dict(), str(path))
    return path


def load_model(path: str):
    """The model and where its weights came from, as WanFlow's loader reads any diffusion model file."""
    import torch

    from wan_core.files.loading import load_transformer_with_sources

    return load_transformer_with_sources(path, torch.bfloat16)


def write_loras(folder: Path, layers: int, rank: int) -> list[Path]:
    """Three ComfyUI-layout LoRAs on every linear layer of every block (bf16, alpha = rank / 2)."""
    import torch
    from safetensors.torch import save_file

    from wan_core.files.wan_names import transformer_key_to_wan

    paths = []
    for index in range(3):
        generator, state = torch.Generator().manual_seed(index), {}
        for name, (out_features, in_features) in linear_shapes(layers).items():
            wan = "diffusion_model." + transformer_key_to_wan(name + ".weight").removesuffix(".weight")
            state[f"{wan}.lora_A.weight"] = (torch.randn(rank, in_features, generator=generator) * 0.01).bfloat16()
            state[f"{wan}.lora_B.weight"] = (torch.randn(out_features, rank, generator=generator) * 0.01).bfloat16()
            state[f"{wan}.alpha"] = torch.tensor(rank / 2)
        paths.append(folder / f"lora_{index}.safetensors")
        save_file(state, str(paths[-1]))
    return paths


def linear_shapes(layers: int) -> dict[str, tuple[int, int]]:
    """{diffusers name: (out, in)} of the blocks' linear layers."""
    import torch

    return {name: tuple(module.weight.shape) for name, module in meta_model(layers).named_modules()
            if name.startswith("blocks.") and isinstance(module, torch.nn.Linear)}


class PeakRss:
    """Highest resident set size seen while the block runs, sampled every 2 ms."""

    def __init__(self):
        import psutil

        self.process, self.peak, self.running = psutil.Process(), 0, False

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self.peak, self.running = self.start, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.end = self.process.memory_info().rss

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / MIB

    @property
    def kept_mib(self) -> float:
        return (self.end - self.start) / MIB


def measure(side: str, model_path: str, paths: list[str]) -> dict:
    import torch

    torch.set_grad_enabled(False)
    model, sources = load_model(model_path)
    size_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    touched_mib = sum(module.weight.numel() * module.weight.element_size() for name, module in model.named_modules()
                      if name.startswith("blocks.") and isinstance(module, torch.nn.Linear)) / MIB
    base = model.blocks[0].attn1.to_q.weight.clone()
    apply, remove = _wan_core(model, sources, paths) if side == "wan_core" else _diffusers(model, paths)
    timings = {}
    with PeakRss() as applying:
        started = time.perf_counter()
        apply()
        timings["apply_s"] = time.perf_counter() - started
    changed = not torch.equal(model.blocks[0].attn1.to_q.weight, base)
    with PeakRss() as removing:
        started = time.perf_counter()
        remove()
        timings["remove_s"] = time.perf_counter() - started
    return dict(side=side, model_mib=size_mib, touched_mib=touched_mib, **timings,
                apply_extra_peak_mib=applying.extra_mib, apply_extra_per_touched=applying.extra_mib / touched_mib,
                kept_after_apply_mib=applying.kept_mib, remove_extra_peak_mib=removing.extra_mib, changed=changed,
                restored_bit_exact=torch.equal(model.blocks[0].attn1.to_q.weight, base))


def _wan_core(model, sources, paths):
    from wan_core.sampling.models import WanModels
    from wan_core.lora.apply import set_lora_stack
    from wan_core.lora.stack import LoraEntry

    models = WanModels(model, None, None, None)
    models.lora.sources = sources  # as load_models records them
    stack = tuple(LoraEntry(path, scale) for path, scale in zip(paths, SCALES))
    return (lambda: set_lora_stack(models, stack)), (lambda: set_lora_stack(models, None))


def _diffusers(model, paths):
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=model)
    names = [f"lora_{index}" for index in range(len(paths))]

    def apply():
        for path, name in zip(paths, names):
            pipe.load_lora_weights(path, adapter_name=name)
        pipe.set_adapters(names, adapter_weights=list(SCALES))
        pipe.fuse_lora(adapter_names=names)

    def remove():
        pipe.unfuse_lora()
        pipe.unload_lora_weights()

    return apply, remove


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=11, help="transformer blocks (11: about 1 GB in bf16)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--model-file", help=argparse.SUPPRESS)
    parser.add_argument("--loras", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.model_file, args.loras)))
        return
    with tempfile.TemporaryDirectory() as folder:
        model_path = str(write_model(Path(folder) / "model.safetensors", args.layers))
        paths = [str(path) for path in write_loras(Path(folder), args.layers, args.rank)]
        results = {}
        for side in ("wan_core", "diffusers"):
            done = subprocess.run([sys.executable, __file__, "--side", side, "--model-file", model_path,
                                   "--loras", *paths], capture_output=True, text=True, check=True)
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, theirs = results["wan_core"], results["diffusers"]
    print(f"model: {ours['model_mib']:.0f} MiB bf16 ({ours['touched_mib']:.0f} MiB touched), {args.layers} blocks of "
          f"dim 1536; three rank-{args.rank} LoRAs; "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| metric | wan_core | diffusers | ratio |\n|---|---|---|---|")
    for key in ("apply_s", "remove_s", "apply_extra_peak_mib", "apply_extra_per_touched", "kept_after_apply_mib",
                "remove_extra_peak_mib"):
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        print(f"| {key} | {ours[key]:.2f} | {theirs[key]:.2f} | {ratio:.2f} |")
    print(f"patched: {ours['changed']} / {theirs['changed']}; restored bit-exact: "
          f"{ours['restored_bit_exact']} / {theirs['restored_bit_exact']}")


if __name__ == "__main__":
    main()
