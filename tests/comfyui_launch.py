"""Run a script from a ComfyUI tree on this CPU-only test machine: `python comfyui_launch.py COMFY_DIR SCRIPT [ARGS]`.

PyPI has only CUDA builds of torchvision, whose compiled operators cannot load next to the CPU torch. ComfyUI
imports torchvision at start-up; its Python parts import once the two operator schemas it registers fake kernels
for (`nms`, `qnms`) exist. The tests install it in a folder of its own on PYTHONPATH (comfyui_server.py).
Test-machine plumbing only: a user's ComfyUI has a matching torchvision.
"""

import runpy
import sys

import torch

_TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")
for _name in ("nms", "qnms"):
    _TORCHVISION_SCHEMAS.define(f"{_name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

if __name__ == "__main__":
    comfy_dir, script, *script_args = sys.argv[1:]
    sys.path.insert(0, comfy_dir)
    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")
