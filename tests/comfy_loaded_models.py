"""Run inside a real ComfyUI tree (tests/comfyui_server.run_in_comfyui): load the tiny I2V model with this pack's
LoadWanModel, sample with WanI2VSampler, and print as JSON what ComfyUI's memory manager then holds (the network
each loaded model wraps, most recently loaded first), and what it holds after unloading everything as Free memory
does. Then a rerun with a new seed and the same prompts (the prompts cached), and what ComfyUI is told about a
block-swapped transformer with one resident block (the pack's own patcher for it, loaded as a stage loads it).

usage: comfy_loaded_models.py MODELS_DIR CUSTOM_NODES_DIR (holding this pack as wanflow/)
"""

import json
import sys
from pathlib import Path

models_dir, custom_nodes = Path(sys.argv[1]), sys.argv[2]
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI reads its own command line when comfy.model_management is imported
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_management  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402

for kind in ("diffusion_models", "vae", "text_encoders", "clip_vision"):
    folder_paths.add_model_folder_path(kind, str(models_dir / kind))
sys.path.insert(0, custom_nodes)
from wanflow.nodes import comfy_bridge  # noqa: E402
from wanflow.nodes.loading import LoadWanModel  # noqa: E402
from wanflow.nodes.sampling import WanI2VSampler  # noqa: E402
from wanflow.wan_core.tiny import TINY_FILES  # noqa: E402

(model,) = LoadWanModel.execute(*(TINY_FILES[name][1] for name in ("i2v", "vae", "text_encoder", "clip_vision")),
                                dtype="fp32", weight_storage="compute").result
WanI2VSampler.execute(model, torch.rand(1, 64, 80, 3), prompt="a valley", negative_prompt="blurry", width=80,
                      height=64, frames=9, steps=2, guidance=5.0, flow_shift=3.0, seed=1, sampler="euler")
networks = model.loaded.models.networks()


def held() -> list[str]:
    return [next(name for name, network in networks.items() if network is loaded.model.model.network)
            for loaded in comfy.model_management.current_loaded_models]


after_sampling = held()
comfy.model_management.unload_all_models()
after_unload, kept = held(), len(comfy_bridge.kept_weights)

(model,) = LoadWanModel.execute(*(TINY_FILES[name][1] for name in ("i2v", "vae", "text_encoder", "clip_vision")),
                                dtype="fp32", weight_storage="compute").result
WanI2VSampler.execute(model, torch.rand(1, 64, 80, 3), prompt="a valley", negative_prompt="blurry", width=80,
                      height=64, frames=9, steps=2, guidance=5.0, flow_shift=3.0, seed=2, sampler="euler")
networks = model.loaded.models.networks()
after_rerun = held()

from wanflow.wan_core.sampling.speed import block_swap_resident_bytes  # noqa: E402

transformer = networks["transformer"]
streamed = comfy_bridge.network_patcher("transformer", transformer, block_swap=True, resident_blocks=1)
comfy.model_management.load_models_gpu([streamed], force_full_load=True)
block_swap = {"reported": streamed.model_size(), "loaded": streamed.loaded_size(),
              "resident": block_swap_resident_bytes(transformer, 1),
              "moved_by_comfyui": [tensor.data_ptr() for tensor in streamed.model.parameters()],
              "first_block": [tensor.data_ptr() for tensor in transformer.blocks[0].parameters()],
              "listed": any(loaded.model is streamed for loaded in comfy.model_management.current_loaded_models)}
print(json.dumps({"after_sampling": after_sampling, "after_unload": after_unload, "kept": kept,
                  "after_rerun": after_rerun, "block_swap": block_swap}))
