"""Run inside a real ComfyUI tree (tests/comfyui_server.run_in_comfyui): build ComfyUI's own Wan 2.1 I2V model
with small, arbitrary dimensions, give it seeded random weights, and save it the way ComfyUI saves a diffusion
model (every key under `model.diffusion_model.`). Also saves ComfyUI's output for fixed inputs, so the test can
compare WanFlow's forward pass with ComfyUI's on the same weights.

usage: make_comfy_wan_checkpoint.py OUT.safetensors REFERENCE.safetensors DIM HEADS FFN LAYERS TEXT_DIM
"""

import sys

import torch
from safetensors.torch import save_file

out, reference, dim, heads, ffn, layers, text_dim = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI reads its own command line when comfy.model_management is imported
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.ops  # noqa: E402
from comfy.ldm.wan.model import WanModel  # noqa: E402

model = WanModel(model_type="i2v", in_dim=36, dim=dim, ffn_dim=ffn, freq_dim=256, text_dim=text_dim, out_dim=16,
                 num_heads=heads, num_layers=layers, operations=comfy.ops.disable_weight_init)
generator = torch.Generator().manual_seed(1234)
with torch.no_grad():  # ComfyUI's layers skip initialisation (weights come from files): fill them ourselves
    for name, parameter in model.named_parameters():
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm_k_img.weight", "norm3.weight")) or \
                (name.startswith("img_emb.proj.") and name.split(".")[2] in ("0", "4") and name.endswith("weight")):
            parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
        else:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(parameter.shape[-1], 16) ** 0.5)
model.eval()
save_file({"model.diffusion_model." + k: v.contiguous() for k, v in model.state_dict().items()}, out)

# Text context as both pipelines feed it: 512 positions, the prompt's tokens then zeros (diffusers' attention
# takes everything before the last 512 positions as image context).
context = torch.zeros(1, 512, text_dim)
context[:, :7] = torch.randn(1, 7, text_dim, generator=generator)
inputs = dict(x=torch.randn(1, 36, 2, 8, 8, generator=generator), t=torch.tensor([600.0]), context=context,
              clip_fea=torch.randn(1, 257, 1280, generator=generator))
with torch.no_grad():
    output = model(inputs["x"], inputs["t"], inputs["context"], clip_fea=inputs["clip_fea"])
save_file({**inputs, "output": output.contiguous()}, reference)
print("saved", out)
