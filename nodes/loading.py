"""LoadWanModel and WanLoRAStack: model files from ComfyUI's folders, and the LoRA stack value."""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..wan_core.errors import WanInputError, check_choice
from ..wan_core.lora.stack import MAX_LORAS_PER_NODE, SCALE_RANGE, LoraEntry, extend_stack
from ..wan_core.files.precision import WEIGHT_STORAGES
from ..wan_core.sampling.params import DTYPES
from ..wan_core.sampling.speed import ATTENTION_CHOICES, check_model_speed, check_offload, check_resident_blocks
from .comfy_bridge import CATEGORY, NONE, WanLorasType, WanModel, WanModelType, compute_device, compute_dtype, \
    folder_choices, folder_file, load_wan, missing_from_folders


OFFLOAD_CHOICES = ("none", "blocks")  # whole networks per stage is what ComfyUI's memory manager does anyway


class LoadWanModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadWanModel",
            display_name="Load Wan 2.1 Model",
            category=CATEGORY,
            description="Loads a Wan 2.1 diffusion model with its VAE, text encoder and (for image-to-video) CLIP "
                        "vision; the architecture is read from the files.",
            inputs=[
                io.Combo.Input("diffusion_model", options=folder_choices("diffusion_models"),
                               tooltip="Wan 2.1 I2V or T2V model from models/diffusion_models "
                                       "(fp16, bf16, fp8_e4m3fn or fp8_scaled)."),
                io.Combo.Input("vae", options=folder_choices("vae"), tooltip="The Wan 2.1 VAE from models/vae."),
                io.Combo.Input("text_encoder", options=folder_choices("text_encoders"),
                               tooltip="UMT5-XXL from models/text_encoders."),
                io.Combo.Input("clip_vision", options=folder_choices("clip_vision", optional=True),
                               tooltip="CLIP ViT-H from models/clip_vision; needed by image-to-video models, "
                                       "'none' for text-to-video ones."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Compute precision; auto picks bf16 or fp16 on a GPU, fp32 on the CPU."),
                io.Combo.Input("weight_storage", options=list(WEIGHT_STORAGES), default=WEIGHT_STORAGES[0],
                               tooltip="fp8 keeps the diffusion model's and text encoder's weights in float8 "
                                       "(about half the memory of bf16) and upcasts one layer at a time to the "
                                       "compute precision."),
                # optional: prompts saved before these inputs existed still queue, with diffusers' defaults
                io.Combo.Input("attention", options=list(ATTENTION_CHOICES), default="auto", optional=True,
                               tooltip="Attention kernel. auto: PyTorch's own (SDPA), which picks a fast kernel "
                                       "on a GPU. flash (flash-attn 2), flash3 (FlashAttention 3, Hopper GPUs), "
                                       "sage (SageAttention) and xformers need their Python package and a CUDA "
                                       "GPU, and all but xformers a bf16 or fp16 dtype."),
                io.Boolean.Input("compile", default=False, optional=True,
                                 tooltip="torch.compile each transformer block, for faster steps on a GPU. The "
                                         "first run of a new size waits for the compiler; later runs reuse its "
                                         "work."),
                WanLorasType.Input("loras", optional=True, tooltip="LoRAs from a Wan LoRA Stack node."),
                io.Combo.Input("offload", options=list(OFFLOAD_CHOICES), default="none", optional=True,
                               tooltip="blocks: keep the diffusion model's blocks in RAM and stream each to the GPU "
                                       "while the one before computes, so 14B runs on a 12-24 GB GPU (slower "
                                       "steps; not with fast mode's step cache). Needs a CUDA GPU. ComfyUI "
                                       "already moves each whole network to the GPU only for its stage."),
                io.Int.Input("resident_blocks", default=0, min=0, optional=True,
                             tooltip="With offload blocks: how many of the diffusion model's first blocks stay on "
                                     "the GPU while it samples instead of streaming (0: all stream). 14B has 40 "
                                     "blocks of about 0.75 GiB each in bf16, half that with fp8 weight storage; "
                                     "each one kept saves its copy on every step, if the GPU has the room."),
            ],
            outputs=[WanModelType.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, diffusion_model, vae, text_encoder, clip_vision, dtype, attention="auto", compile=False,
                        offload="none", resident_blocks=0):
        missing = missing_from_folders(("diffusion_models", diffusion_model), ("vae", vae),
                                       ("text_encoders", text_encoder), ("clip_vision", clip_vision))
        try:  # an attention kernel, offload or resident block count that cannot run is said before anything loads
            check_model_speed(attention, compile, compute_device(), compute_dtype(check_choice("dtype", dtype, ["auto", *DTYPES])))
            blocks = None  # the model's block count, from its file's tensor shapes alone, when it is there
            if resident_blocks and missing is True:
                from ..wan_core.files.loading import read_transformer_config

                blocks = read_transformer_config(folder_file("diffusion_models", diffusion_model))["num_layers"]
            check_resident_blocks(resident_blocks, check_choice("offload", offload, OFFLOAD_CHOICES), blocks)
            check_offload(offload, compute_device())
        except WanInputError as error:
            return str(error) if missing is True else f"{missing}; {error}"
        return missing

    @classmethod
    def execute(cls, diffusion_model, vae, text_encoder, clip_vision, dtype, weight_storage, attention="auto",
                compile=False, loras=None, offload="none", resident_blocks=0):
        files = (folder_file("diffusion_models", diffusion_model), folder_file("vae", vae),
                 folder_file("text_encoders", text_encoder), folder_file("clip_vision", clip_vision))
        # the weights are shared by every graph that loads the same files; the speed settings go with this output
        loaded = load_wan(files, compute_dtype(dtype), weight_storage, offload, resident_blocks)
        return io.NodeOutput(WanModel(loaded, tuple(loras or ()), attention, compile))


def _lora_inputs(slot: int) -> list[io.Input]:
    return [
        io.Combo.Input(f"lora_{slot}", options=folder_choices("loras", optional=True),
                       tooltip="A LoRA file from models/loras, or 'none'."),
        io.String.Input(f"source_{slot}", default="",
                        tooltip="Instead of a file: a hub repo id (owner/name, or owner/name/file.safetensors when "
                                "the repo holds several) or an http(s) URL; downloaded once into a cache."),
        io.Float.Input(f"strength_{slot}", default=1.0, min=SCALE_RANGE[0], max=SCALE_RANGE[1], step=0.05,
                       tooltip="How strongly this LoRA applies, 0 to 4."),
    ]


def _entry(file_name: str, source: str, strength: float) -> LoraEntry | None:
    source = source.strip()
    if source:
        return LoraEntry.from_text(source, strength)
    if file_name == NONE:
        return None
    return LoraEntry(str(folder_file("loras", file_name)), strength)


class WanLoRAStack(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanLoRAStack",
            display_name="Wan LoRA Stack",
            category=CATEGORY,
            description=f"Up to {MAX_LORAS_PER_NODE} LoRAs, applied in order; chain a stack in to extend it. The "
                        "same stack works for local sampling and the hosted APIs.",
            inputs=[slot_input for slot in range(1, MAX_LORAS_PER_NODE + 1) for slot_input in _lora_inputs(slot)]
                   + [WanLorasType.Input("loras", optional=True, tooltip="A stack to extend.")],
            outputs=[WanLorasType.Output(display_name="loras")],
        )

    @classmethod
    def validate_inputs(cls, lora_1, lora_2, lora_3):
        return missing_from_folders(("loras", lora_1), ("loras", lora_2), ("loras", lora_3))

    @classmethod
    def execute(cls, loras=None, **slots) -> io.NodeOutput:
        entries = [_entry(slots[f"lora_{slot}"], slots[f"source_{slot}"], slots[f"strength_{slot}"])
                   for slot in range(1, MAX_LORAS_PER_NODE + 1)]
        return io.NodeOutput(extend_stack(loras, [entry for entry in entries if entry is not None]))
