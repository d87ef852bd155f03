"""One rank of a multi-process run under torchrun, through the engine's Python API: the tiny I2V model, fixed
inputs, and (rank 0) the decoded float32 frames saved to argv[2], so a test compares them with one process's.

    torchrun --nproc_per_node N tests/parallel_worker.py MODE OUT.pt
"""

import os
import sys

import torch

from wan_core.sampling import conditioning, parallel, pipeline
from wan_core.sampling.models import load_models
from wan_core.sampling.params import SamplingParams
from wan_core.tiny import tiny_model_paths

SIZE, FRAMES, STEPS, SEED = (96, 64), 9, 3, 11


def generation_params() -> SamplingParams:
    return SamplingParams(prompt="a boat on a lake", negative_prompt="blurry", width=SIZE[0], height=SIZE[1],
                          num_frames=FRAMES, steps=STEPS, seed=SEED)


def run(mode: str) -> torch.Tensor | None:
    """Decoded frames [T, H, W, 3] on the rank that writes output, None on the others."""
    plan = parallel.plan_from_environment(mode)
    device = parallel.start(plan, "cpu")
    paths = tiny_model_paths(os.environ["WANFLOW_CACHE"])
    models = load_models(paths["i2v"], paths["vae"], paths["text_encoder"], paths["clip_vision"], device=device)
    models.parallel = parallel.ParallelRun(plan, device) if plan.world_size > 1 else None
    image = torch.linspace(0, 1, SIZE[0] * SIZE[1] * 3).reshape(1, SIZE[1], SIZE[0], 3)
    with models.configured():
        generation = pipeline.generate_i2v(models, image, generation_params())
    parallel.finish(plan)
    return conditioning.decode_latents(models, generation.latents) if plan.writes_output else None


if __name__ == "__main__":
    frames = run(sys.argv[1])
    if frames is not None:
        torch.save(frames, sys.argv[2])
