"""Peak resident memory while loading a >= 2 GB Wan transformer, WanFlow against diffusers, side by side.

Writes a synthetic checkpoint with the real Wan 2.1 1.3B key names and shapes (dim 1536, 12 heads, ffn 8960,
T2V, ComfyUI's original names) in bf16, and the same weights as a diffusers folder. Each loader runs in a fresh
process; a psutil poller records its peak RSS above the RSS it had after imports, divided by the size of the
weights it loaded: during the load call, and after every weight has been read once (diffusers' from_pretrained
leaves weights as views of a memory map, so its pages only become resident when the model first runs). Compute dtype bf16 on both sides (the file's own dtype: nothing to convert).
Temporary files are deleted at the end.

python bench/bench_loading.py [--layers 40] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, threading, time, psutil, torch
sys.path.insert(0, ROOT)
from diffusers import WanTransformer3DModel
from wan_core.files.loading import load_transformer
process = psutil.Process()
peak = [0]
stop = threading.Event()
def poll():
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.005)
baseline = process.memory_info().rss
thread = threading.Thread(target=poll); thread.start()
started = time.perf_counter()
if SIDE == "wanflow":
    model = load_transformer(PATH, torch.bfloat16)
else:
    model = WanTransformer3DModel.from_pretrained(PATH, torch_dtype=torch.bfloat16)
elapsed = time.perf_counter() - started
peak[0] = max(peak[0], process.memory_info().rss)
loaded_peak = peak[0]
# Touch every weight once, as the first denoising step does: weights that are still views of a memory map
# become resident only now, so this is the memory the loaded model really occupies.
with torch.no_grad():
    for parameter in model.parameters():
        parameter.float().sum()
stop.set(); thread.join()
peak[0] = max(peak[0], process.memory_info().rss)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps(dict(baseline=baseline, loaded=loaded_peak, peak=peak[0], weights=weights, seconds=elapsed)))
"""


def write_checkpoint(folder: Path, layers: int) -> tuple[Path, Path]:
    """The 1.3B T2V architecture with `layers` blocks: a ComfyUI-layout file and a diffusers folder."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from wan_core.tiny import transformer_key_to_wan

    config = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=layers,
                  cross_attn_norm=True, qk_norm="rms_norm_across_heads")
    with init_empty_weights():
        empty = WanTransformer3DModel(**config)
    generator = torch.Generator().manual_seed(0)
    state = {name: (torch.randn(p.shape, generator=generator) * 0.02).to(torch.bfloat16)
             for name, p in empty.named_parameters()}
    comfy_file = folder / "wan2.1_t2v_synthetic_bf16.safetensors"
    save_file({transformer_key_to_wan(k): v for k, v in state.items()}, str(comfy_file))
    diffusers_folder = folder / "transformer"
    diffusers_folder.mkdir()
    save_file(state, str(diffusers_folder / "diffusion_pytorch_model.safetensors"))
    (diffusers_folder / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", **config}))
    return comfy_file, diffusers_folder


def measure(side: str, path: Path) -> dict:
    code = CHILD.replace("ROOT", repr(str(ROOT))).replace("SIDE", repr(side)).replace("PATH", repr(str(path)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["ratio"] = (row["peak"] - row["baseline"]) / row["weights"]
    row["loaded_ratio"] = (row["loaded"] - row["baseline"]) / row["weights"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="transformer blocks (30, the real 1.3B: 2.6 GiB)")
    parser.add_argument("--tmp", help="folder for the temporary checkpoint (default: the system's)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wanflow-bench-loading-", dir=args.tmp))
    try:
        comfy_file, diffusers_folder = write_checkpoint(folder, args.layers)
        size = comfy_file.stat().st_size
        rows = {"wan_core load_transformer (ComfyUI file)": measure("wanflow", comfy_file),
                "diffusers from_pretrained (same weights)": measure("diffusers", diffusers_folder)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"checkpoint: {size / 2**30:.2f} GiB, {args.layers} layers, bf16")
    print("| loader | weights (GiB) | peak RSS - baseline, load call (GiB) | ratio | peak RSS - baseline, "
          "load + first touch (GiB) | ratio | load time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['weights'] / 2**30:.2f} | {(row['loaded'] - row['baseline']) / 2**30:.2f} | "
              f"{row['loaded_ratio']:.3f} | {(row['peak'] - row['baseline']) / 2**30:.2f} | {row['ratio']:.3f} | "
              f"{row['seconds']:.1f} |")


if __name__ == "__main__":
    main()
