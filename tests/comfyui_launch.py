"""Run a script from a ComfyUI tree on this CPU-only test machine: `python comfyui_launch.py COMFY_DIR SCRIPT [ARGS]`.

PyPI has only CUDA builds of torchvision, whose compiled operators cannot load next to the CPU torch. ComfyUI
imports torchvision at start-up; its Python parts import once the two operator schemas it registers fake kernels
for (`nms`, `qnms`) exist. The tests install it in a folder of its own on PYTHONPATH (comfyui_server.py).
Test-machine plumbing only: a user's ComfyUI has a matching torchvision.
"""

import runpy
import sys


class _TorchvisionSchemas:
    """Defines the schemas just before torchvision is first imported; importing torch any earlier would trip
    ComfyUI's "torch imported before this point" start-up check."""

    libraries = []

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            self.libraries.append(library)  # a Library's definitions last as long as the object
        return None


if __name__ == "__main__":
    comfy_dir, script, *script_args = sys.argv[1:]
    sys.meta_path.insert(0, _TorchvisionSchemas())
    sys.path.insert(0, comfy_dir)
    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")
