"""WanModels: one loaded Wan 2.1 model, and the one owner of the state a run puts on it.

A run's settings (LoRA stack, attention kernel, compiled blocks, step cache, VAE tiling) are applied through one
scoped call, used by the command line and the ComfyUI nodes alike:

    with models.configured(loras=stack, attention="sdpa", compile=False, fast_mode=True):
        generation = pipeline.generate_i2v(models, image, params)
    print(models.passes.line())  # e.g. "60 transformer passes, 31 skipped by fast mode"
    with models.configured(vae_tiling=True):
        frames = conditioning.decode_latents(models, generation.latents)

Two kinds of state, restored in two ways:
- per-run state (the step cache's and fast mode's hooks and cached residuals, VAE tiling) is on inside the block
  only (fast mode's MagCache for the sampling loop alone, `sampling`, where the step count is known) and switched
  off on exit, also on an exception or an interrupt: nothing of one run reaches the next (a tiled decode left on
  would tile the next run's first-frame encode and change its video).
- model state (LoRA stack, attention kernel, compiled blocks) costs seconds to switch (patching every touched
  weight, compiling), and ComfyUI runs the same graph again and again: it stays on after the block, and this object
  records what is on. The next configured() call that names another value switches exactly that; one naming the
  same value changes nothing (the same LoRA stack again contacts no hub and patches nothing); one that leaves a
  setting out (None) keeps it. A LoRA patch interrupted half-way puts the base weights back (lora/apply.py), so
  the recorded state is always the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import CLIPImageProcessorPil, CLIPVisionModel, T5Tokenizer, UMT5EncoderModel

from ..errors import WanInputError, check_range
from ..files.loading import load_clip_vision, load_text_encoder, load_transformer_with_sources, load_vae
from ..files.checkpoint import file_identity
from ..files.precision import check_weight_storage
from ..lora.apply import LoraPatches, LoraReport, set_lora_stack
from ..lora.stack import LoraStack
from . import magcache, speed
from .parallel import ParallelRun
from .params import STEP_CACHE_RANGE, check_step_caches
from .prompt_cache import SHARED_PROMPTS, PromptCache

# The networks a stage can ask for (WanModels.use); the tokenizer and image processor run on the CPU.
NETWORKS = ("transformer", "vae", "text_encoder", "image_encoder")


@dataclass
class WanModels:
    """Everything one generation needs. image_encoder is None for text-to-video models.

    `device` is the compute device: inputs go there, whatever device the networks wait on between stages. Before
    each stage the pipeline says which networks it runs (`use`); `placement(models, names)` then puts those on the
    compute device (model_offload for --offload model, ComfyUI's memory manager in the nodes). Without one nothing
    moves: the networks stay where they were loaded. One WanModels per loaded transformer: its model state
    (`lora`, `attention`, `compiled`, `sequence_split`) describes that transformer. `parallel` is this process's
    part in a multi-process run (parallel.py), None in a single process. text_encoder and tokenizer are None while
    a text encoder to be read on demand (`read_text_encoder`) has not been needed.
    """

    transformer: WanTransformer3DModel
    vae: AutoencoderKLWan
    text_encoder: UMT5EncoderModel | None
    tokenizer: T5Tokenizer | None
    image_encoder: CLIPVisionModel | None = None
    image_processor: CLIPImageProcessorPil | None = None
    device: torch.device | None = None  # None: where the transformer's weights are when the bundle is made
    placement: Callable[[WanModels, tuple[str, ...]], None] | None = None
    parallel: ParallelRun | None = None
    # what decides the text encoder's weights, set at load: its files (file_identity) and their weight storage. A
    # prompt's embedding is cached under it (None: an encoder from no file, encoded every time); prompt_cache None
    # turns caching off
    text_encoder_identity: tuple | None = None
    # reads (text_encoder, tokenizer) where the other networks wait, when use("text_encoder") finds none: the
    # command line's text encoder is read only for a prompt the cache misses (load_models' lazy_text_encoder)
    read_text_encoder: Callable[[], tuple[UMT5EncoderModel, T5Tokenizer]] | None = None
    offload: str = "none"  # as loaded (speed.OFFLOADS); "blocks": the transformer's blocks stream to `device`
    resident_blocks: int = 0  # as loaded, with offload "blocks": the first blocks, which move with the stage instead
    prompt_cache: PromptCache | None = field(default_factory=lambda: SHARED_PROMPTS)
    lora: LoraPatches = field(default_factory=LoraPatches, init=False, repr=False)
    attention: str = field(default="auto", init=False)  # as loaded: diffusers' default
    compiled: bool = field(default=False, init=False)
    sequence_split: bool = field(default=False, init=False)  # diffusers' context parallelism is on the transformer
    source: Path | None = field(default=None, init=False)  # the diffusion model's file or folder, when loaded from one
    passes: speed.PassCount = field(default_factory=speed.PassCount, init=False)  # the last sampling loop's cost
    fast_mode: bool = field(default=False, init=False)  # the running block's
    _in_run: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.device is None:
            self.device = self.transformer.patch_embedding.weight.device

    @property
    def is_i2v(self) -> bool:
        return self.transformer.config.image_dim is not None

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (the patch embedding is never stored in fp8)."""
        return self.transformer.patch_embedding.weight.dtype

    @property
    def lora_report(self) -> LoraReport:
        """How the LoRA stack now on the weights was applied."""
        return self.lora.report

    def networks(self) -> dict[str, torch.nn.Module]:
        """{name: network} for the networks this bundle has (no image encoder for text-to-video)."""
        return {name: getattr(self, name) for name in NETWORKS if getattr(self, name) is not None}

    def use(self, *names: str) -> None:
        """The next stage runs these networks: have them on the compute device."""
        unknown = [name for name in names if name not in NETWORKS]
        if unknown:
            raise ValueError(f"unknown network {unknown}: a stage uses some of {NETWORKS}")
        if "text_encoder" in names and self.text_encoder is None:
            self.text_encoder, self.tokenizer = self.read_text_encoder()
            self.check_compatible()
        if self.placement is not None:
            self.placement(self, names)

    @contextmanager
    def configured(self, *, loras: LoraStack | None = None, loras_dir: Path | None = None,
                   attention: str | None = None, compile: bool | None = None, step_cache: float = 0.0,
                   fast_mode: bool = False, vae_tiling: bool = False) -> Iterator[WanModels]:
        """Run the block with these settings (see the module's docstring for what stays after it).

        loras: a stack (empty: the base weights), attention: a speed.ATTENTION name, compile: compiled blocks; None
        keeps what is on. step_cache: the First Block Cache threshold (0: off), fast_mode: MagCache (magcache.py)
        and vae_tiling: tiled VAE encode and decode, all for this block only. Every value is checked before anything
        changes."""
        if self._in_run:
            raise RuntimeError("WanModels.configured is already active: one run at a time per loaded model")
        check_range("step_cache", step_cache, *STEP_CACHE_RANGE)
        check_step_caches(fast_mode, step_cache)
        speed.check_block_swap(self.offload, step_cache)
        if not isinstance(vae_tiling, bool):
            raise WanInputError(f"vae_tiling={vae_tiling!r} is not allowed: choose True or False")
        speed.check_model_speed(self.attention if attention is None else attention,
                                self.compiled if compile is None else compile, self.device, self.dtype)
        self._in_run, self.fast_mode, self.passes = True, fast_mode, speed.PassCount()
        try:
            self._set_model_state(loras, loras_dir, attention, compile)
            if vae_tiling:
                self.vae.enable_tiling()  # tiles above 256 px, encode and decode alike
            else:
                self.vae.disable_tiling()
            with speed.step_cache(self.transformer, step_cache):
                yield self
        finally:
            self.vae.disable_tiling()
            self._in_run = self.fast_mode = False

    @contextmanager
    def sampling(self, sigmas: list[float], width: int, height: int) -> Iterator[speed.PassCount]:
        """The sampling loop of a run over `sigmas`: fast mode's MagCache when the run asked for it, and the count of
        transformer passes (`passes`) the caller reports."""
        self.passes = speed.PassCount(cache="fast mode" if self.fast_mode else
                                      "the step cache" if self.transformer.is_cache_enabled else "")
        with speed.counting_passes(self.transformer, self.passes):
            if not self.fast_mode:
                yield self.passes
                return
            with magcache.fast_mode(self, sigmas, width, height) as plan:
                self.passes.cache = f"fast mode ({plan.source})" if plan.ratios is None else "fast mode"
                yield self.passes

    def _set_model_state(self, loras, loras_dir, attention, compile) -> None:
        if loras is not None:
            set_lora_stack(self, loras, loras_dir)  # a no-op for the stack already on
        if attention is not None and attention != self.attention:
            if self.sequence_split:  # diffusers checks the kernel when it splits, and cannot undo the split
                raise WanInputError(f"attention={attention!r}: the attention kernel of a model split for "
                                    f"sequence-parallel sampling stays {self.attention!r}")
            try:
                speed.set_attention(self.transformer, attention)
            except BaseException:  # processors half switched: all back to the default, which is then the truth
                speed.set_attention(self.transformer, "auto")
                self.attention = "auto"
                raise
            self.attention = attention
        if compile is not None and compile != self.compiled:
            speed.set_compiled(self.transformer, compile)  # one attribute per block: nothing half-done to track
            self.compiled = compile
        if self.parallel is not None and not self.sequence_split:
            # after the attention kernel: diffusers checks that kernel can split attention, and ring needs its own
            self.parallel.split_sequence(self.transformer)
            self.sequence_split = True

    def check_compatible(self):
        """Catch mixed-up files before any sampling: text width, VAE channels, a missing CLIP for I2V."""
        config = self.transformer.config
        if self.text_encoder is not None and self.text_encoder.config.d_model != config.text_dim:  # else when read
            raise WanInputError(
                f"text encoder width {self.text_encoder.config.d_model} does not match the diffusion model's "
                f"text width {config.text_dim}: use the UMT5 file made for this model"
            )
        if self.vae.config.z_dim != config.out_channels:
            raise WanInputError(f"VAE latent channels {self.vae.config.z_dim} != diffusion model's {config.out_channels}")
        if self.is_i2v:
            if self.image_encoder is None:
                raise WanInputError("this is an image-to-video diffusion model: it needs a CLIP vision file")
            if self.image_encoder.config.hidden_size != config.image_dim:
                raise WanInputError(
                    f"CLIP vision width {self.image_encoder.config.hidden_size} does not match the diffusion "
                    f"model's image width {config.image_dim}: use clip_vision_h"
                )


def model_offload(models: WanModels, names: tuple[str, ...]) -> None:
    """WanModels.placement for offload "model": the named networks on the compute device, all others on the CPU.

    What diffusers' enable_model_cpu_offload does, but with plain .to() at each stage rather than its accelerate
    hooks (cpu_offload_with_hook): those move a network at its first forward call and offload the previous one in
    a fixed chain, while here the pipeline says when each stage starts, and the VAE serves two stages (first frame,
    decoding) that such a chain orders only once. Networks leave first, so the GPU holds one stage at a time.
    """
    networks = models.networks()
    if models.offload == "blocks":  # group offloading's hooks move the rest of it; moving it whole undoes them
        networks["transformer"] = speed.resident_part(models.transformer, models.resident_blocks)
    for name in sorted(networks, key=lambda name: name in names):
        networks[name].to(models.device if name in names else "cpu")


def load_models(diffusion_model, vae, text_encoder, clip_vision=None, dtype=torch.float32, device="cpu", *,
                weight_storage: str | None = None, tokenizer=None, offload: str = "none",
                resident_blocks: int = 0, lazy_text_encoder: bool = False) -> WanModels:
    """Load the four components (clip_vision only matters for image-to-video models) and check they fit together.

    Each of them may be a file or a folder in any supported layout (see files/checkpoint.py). `dtype` is the
    compute dtype and `device` the compute device; weight_storage="fp8" keeps the transformer's and the text
    encoder's weights in float8_e4m3fn, upcast per layer. `tokenizer` is a tokenizer folder for text encoder files
    that carry none (see files/tokenizer.py for where else it looks). offload="model" keeps the networks on the
    CPU and moves each to `device` for its stage; offload="blocks" does so too, but streams the transformer's blocks
    to `device` one at a time during sampling, all but the first `resident_blocks` (speed.enable_block_swap).
    lazy_text_encoder: the text encoder file is read only when a stage needs it, which a run whose prompts are all
    in the prompt cache never does (the command line, whose process loads the models for one run; 11 GB of UMT5-XXL
    in bf16 then never reach memory). Speed settings and LoRAs are a run's: WanModels.configured.
    """
    storage = check_weight_storage(weight_storage)
    speed.check_offload(offload, device)
    speed.check_resident_blocks(resident_blocks, offload)  # and against the block count once the model is read
    home = "cpu" if offload != "none" else device  # where the networks wait between stages
    transformer, sources = load_transformer_with_sources(diffusion_model, dtype, weight_storage)
    transformer.to(home)
    if offload == "blocks":  # before the other networks are read: a resident_blocks past its blocks stops here
        speed.enable_block_swap(transformer, device, resident_blocks)

    def read_text_encoder():
        encoder, text_tokenizer = load_text_encoder(text_encoder, dtype, tokenizer, weight_storage)
        return encoder.to(home), text_tokenizer

    encoder, text_tokenizer = (None, None) if lazy_text_encoder else read_text_encoder()
    models = WanModels(transformer, load_vae(vae, dtype).to(home), encoder, text_tokenizer,
                       device=torch.device(device), placement=model_offload if offload != "none" else None,
                       offload=offload, resident_blocks=resident_blocks,
                       text_encoder_identity=(file_identity([text_encoder]), storage),
                       read_text_encoder=read_text_encoder)
    models.lora.sources = sources  # LoRA removal reads base weights back from the file instead of keeping copies
    if clip_vision is not None and transformer.config.image_dim is not None:
        models.image_encoder, models.image_processor = load_clip_vision(clip_vision, dtype)
        models.image_encoder.to(home)
    models.source = Path(diffusion_model) if isinstance(diffusion_model, (str, Path)) else None
    models.check_compatible()
    return models
