"""Sampling on several processes started by torchrun: sequence-parallel and guidance-parallel.

    torchrun --nproc_per_node N -m wan_core i2v ... --parallel ulysses|ring|cfg|cfg+ulysses|cfg+ring

- Sequence-parallel (ulysses, ring): diffusers' context parallelism (`ContextParallelConfig`,
  `ModelMixin.enable_parallelism` with the `_cp_plan` diffusers ships for the Wan transformer). Each rank holds the
  whole transformer and a slice of the video's tokens; Ulysses trades slices for heads with an all-to-all around
  self-attention, ring passes key/value slices around. Cross-attention (text and image tokens) stays whole on
  every rank, as diffusers' plan leaves it.
- Guidance-parallel (cfg): with guidance other than 1 each step needs a pass with the prompt and one with the
  negative prompt; two ranks run one each and exchange the results, as xDiT's and LightX2V's CFG parallelism do.
  cfg+ulysses / cfg+ring split N = 2k ranks into two guidance groups of k sequence-parallel ranks.

Everything else runs on every rank (text and image encoders, VAE: small beside the transformer), and every rank
draws the same noise (pipeline.initial_noise is device independent, and the seed is rank 0's), so every rank holds
the same latents after every step; only rank 0 writes the video. torch.distributed and diffusers do all splitting
and gathering: gloo on the CPU (how the tests run it), NCCL on CUDA GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..errors import WanInputError, check_choice

PARALLEL_CHOICES = ("none", "ulysses", "ring", "cfg", "cfg+ulysses", "cfg+ring")
# Ring attention merges partial results by their log-sum-exp, which PyTorch's SDPA does not return; of our
# attention kernels (speed.ATTENTION) these give it to diffusers' ring implementation.
RING_ATTENTION = ("flash", "sage")
JOIN_TIMEOUT = timedelta(minutes=10)  # a rank that never joins (a crashed sibling) ends the run instead of hanging


@dataclass(frozen=True)
class ParallelPlan:
    """How this process takes part in a run: `guidance` ranks per step (1 or 2) times `sequence` ranks per pass."""

    mode: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def guidance(self) -> int:
        return 2 if self.mode.startswith("cfg") else 1

    @property
    def sequence(self) -> int:
        return self.world_size // self.guidance

    @property
    def sequence_kind(self) -> str | None:
        """'ulysses' or 'ring' when the video's tokens are split over ranks."""
        kind = self.mode.removeprefix("cfg").removeprefix("+")
        return kind or None

    @property
    def guidance_rank(self) -> int:
        """0: this rank runs the prompt's pass; 1: the negative prompt's. Ranks are laid out guidance-major."""
        return self.rank // self.sequence

    @property
    def writes_output(self) -> bool:
        return self.rank == 0


def plan_from_environment(mode: str, environ=os.environ) -> ParallelPlan:
    """The plan for --parallel MODE in a process torchrun started (it sets RANK, WORLD_SIZE, LOCAL_RANK); checked
    before anything loads."""
    check_choice("parallel", mode, PARALLEL_CHOICES)
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if mode == "none":
        if world_size > 1:
            raise WanInputError(f"{world_size} processes were started (torchrun) but --parallel is 'none': every "
                                "process would make the same video; choose one of "
                                f"{', '.join(PARALLEL_CHOICES[1:])}")
        return ParallelPlan()
    if "WORLD_SIZE" not in environ:
        raise WanInputError(f"--parallel {mode} needs several processes: start it with "
                            f"`torchrun --nproc_per_node N -m wan_core ... --parallel {mode}`")
    plan = ParallelPlan(mode, int(environ["RANK"]), world_size, int(environ.get("LOCAL_RANK", environ["RANK"])))
    if mode == "cfg" and world_size != 2:
        raise WanInputError(f"--parallel cfg runs the prompt's and the negative prompt's pass on one process each: "
                            f"it takes exactly 2 processes, not {world_size}; for more, use cfg+ulysses")
    if plan.guidance == 2 and world_size % 2:
        raise WanInputError(f"--parallel {mode} needs an even number of processes (2 guidance groups), not "
                            f"{world_size}")
    if plan.sequence_kind and plan.sequence < 2:
        raise WanInputError(f"--parallel {mode} with {world_size} processes leaves one per guidance group: use "
                            "--parallel cfg, or more processes")
    return plan


def check_plan(plan: ParallelPlan, heads: int, pass_tokens: list[int], guidance_scale: float, attention: str) -> None:
    """Refuse what the model, the video's size or the settings cannot split, before any weights are read.

    heads: the transformer's attention heads (40 for 14B, 12 for 1.3B); pass_tokens: the video's tokens in each
    kind of pass, T_lat * H/16 * W/16 (T_lat of a context window), which diffusers cuts into equal slices."""
    if plan.mode == "none":
        return
    if plan.guidance == 2 and guidance_scale == 1.0:
        raise WanInputError(f"--parallel {plan.mode} splits the prompt's and the negative prompt's passes, but "
                            "guidance 1 runs no negative pass: use --parallel ulysses, or a guidance other than 1")
    if plan.sequence_kind == "ulysses" and heads % plan.sequence:
        raise WanInputError(f"--parallel {plan.mode} over {plan.sequence} processes per pass: the degree must "
                            f"divide the model's {heads} attention heads (allowed: "
                            f"{', '.join(str(n) for n in range(2, heads + 1) if heads % n == 0)})")
    if plan.sequence_kind == "ring" and attention not in RING_ATTENTION:
        raise WanInputError(f"--parallel {plan.mode} needs an attention kernel that returns its log-sum-exp "
                            f"({' or '.join(RING_ATTENTION)}), not --attention {attention}; or use ulysses")
    uneven = [tokens for tokens in pass_tokens if tokens % plan.sequence]
    if plan.sequence_kind and uneven:
        raise WanInputError(f"the video's {uneven[0]} tokens per pass do not split into {plan.sequence} equal "
                            "parts: choose a size or frame count whose T_lat * H/16 * W/16 they divide")


def pass_tokens(params, patch_size: tuple[int, int, int]) -> list[int]:
    """The video's tokens per transformer pass (per context window when it has windows): latent frames and pixels
    over the patch size."""
    from .long_video import pass_lengths

    _, _, _, height, width = params.latent_shape()
    per_frame = (height // patch_size[1]) * (width // patch_size[2])
    return sorted(frames // patch_size[0] * per_frame for frames in pass_lengths(params))


def start(plan: ParallelPlan, device: str) -> torch.device:
    """Join the process group (a no-op for one process); the compute device of this rank."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and plan.world_size > 1:
        device = torch.device("cuda", plan.local_rank)
    if plan.world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=JOIN_TIMEOUT, device_id=device if device.type == "cuda"
                                             else None)
    return device


def shared_seed(plan: ParallelPlan, seed: int) -> int:
    """Rank 0's seed on every rank: a seed drawn at random (-1) differs per process."""
    if plan.world_size == 1:
        return seed
    value = torch.tensor([seed], dtype=torch.int64)
    torch.distributed.broadcast(value, src=0)
    return int(value.item())


class ParallelRun:
    """The process groups of a started plan: the guidance pair's group and the sequence-parallel mesh."""

    def __init__(self, plan: ParallelPlan, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh

        self.plan = plan
        ring = plan.sequence if plan.sequence_kind == "ring" else 1
        ulysses = plan.sequence if plan.sequence_kind == "ulysses" else 1
        self.mesh = init_device_mesh(device.type, (plan.guidance, ring, ulysses),
                                     mesh_dim_names=("guidance", "ring", "ulysses"))
        self.ring, self.ulysses = ring, ulysses

    def split_sequence(self, transformer) -> None:
        """Turn on diffusers' context parallelism on the transformer, over this rank's sequence group."""
        if not self.plan.sequence_kind:
            return
        from diffusers import ContextParallelConfig

        from ..adapters import enable_context_parallelism

        config = ContextParallelConfig(ring_degree=self.ring if self.ring > 1 else None,
                                       ulysses_degree=self.ulysses if self.ulysses > 1 else None,
                                       mesh=self.mesh["ring", "ulysses"])
        enable_context_parallelism(transformer, config)

    def guidance_pair(self, predict_positive, predict_negative) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) velocities, each rank computing its own half and receiving the other's."""
        mine = (predict_positive if self.plan.guidance_rank == 0 else predict_negative)().contiguous()
        both = [torch.empty_like(mine) for _ in range(2)]
        torch.distributed.all_gather(both, mine, group=self.mesh.get_group("guidance"))
        return both[0], both[1]


def finish(plan: ParallelPlan) -> None:
    if plan.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
