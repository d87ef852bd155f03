"""The tiny Wan 2.1 model: every component with the real architecture, small deterministic random weights,
written as ComfyUI-layout files so that it loads through exactly the path real weights take.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import sentencepiece
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers, convert_wan_vae_to_diffusers
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from .cache import wanflow_cache_dir
from .files.loading import TOKENIZER_TENSOR, WAN_HEAD_DIM
from .files.wan_names import diffusers_key_map, rename, transformer_key_to_wan

SEED = 2101
TEXT_DIM, IMAGE_DIM = 64, 64
TINY_FILES = {
    "i2v": ("diffusion_models", "wan2.1_tiny_i2v.safetensors"),
    "t2v": ("diffusion_models", "wan2.1_tiny_t2v.safetensors"),
    "vae": ("vae", "wan2.1_tiny_vae.safetensors"),
    "text_encoder": ("text_encoders", "umt5_tiny.safetensors"),
    "clip_vision": ("clip_vision", "clip_vision_tiny.safetensors"),
}
TINY_LLM_FOLDER = "LLM/wan_tiny_prompt_llm"  # a tiny random Qwen2 chat model for prompt extension
TINY_VLM_FOLDER = "LLM/wan_tiny_prompt_vlm"  # a tiny random Qwen2.5-VL, for prompt extension that sees the picture
TINY_LORA_FILES = {"i2v": "loras/wan21_tiny_i2v_lora.safetensors", "t2v": "loras/wan21_tiny_t2v_lora.safetensors"}
# Text the tiny tokenizer learns its pieces from: prompt words in English and Chinese, like Wan's own prompts.
TOKENIZER_CORPUS = """a cat walks on the grass in the sun, the camera pans slowly to the left
a woman smiles and turns her head, soft light, cinematic, high quality, detailed
waves crash on a rocky shore at sunset, slow motion, wide shot
a red car drives through a rainy city street at night with neon lights
色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量
JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的
形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走
""" * 8


def _seeded(build, offset: int):
    """Build a module with default initialisation drawn from a fixed seed, whatever the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + offset)
        return build().eval()


def tiny_transformer(image_to_video: bool) -> WanTransformer3DModel:
    extra = dict(image_dim=IMAGE_DIM, added_kv_proj_dim=2 * WAN_HEAD_DIM) if image_to_video else {}
    return _seeded(lambda: WanTransformer3DModel(
        num_attention_heads=2, attention_head_dim=WAN_HEAD_DIM, in_channels=36 if image_to_video else 16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=512, num_layers=2, **extra,
    ), offset=1 if image_to_video else 2)


def tiny_vae() -> AutoencoderKLWan:
    return _seeded(lambda: AutoencoderKLWan(base_dim=8, z_dim=16), offset=3)


def tiny_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False)
    return _seeded(lambda: UMT5EncoderModel(config), offset=4)


def tiny_clip_vision() -> CLIPVisionModel:
    config = CLIPVisionConfig(hidden_size=IMAGE_DIM, intermediate_size=128, num_hidden_layers=3, num_attention_heads=1,
                              image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5)
    return _seeded(lambda: CLIPVisionModel(config), offset=5)


def tiny_tokenizer_model() -> bytes:
    """A real sentencepiece unigram model with T5's special ids (pad 0, eos 1, unk 2), trained deterministically."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_CORPUS.splitlines()), model_writer=model, vocab_size=200,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    return model.getvalue()


# ---- diffusers names -> ComfyUI (original Wan) names ------------------------------------------------------------

_RESNET_TO_WAN = [(r"\.norm1\.", ".residual.0."), (r"\.conv1\.", ".residual.2."), (r"\.norm2\.", ".residual.3."),
                  (r"\.conv2\.", ".residual.6."), (r"\.conv_shortcut\.", ".shortcut.")]
_VAE_TO_WAN = [
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.", lambda m: f"{m[1]}.middle.{2 * int(m[2])}.RESNET."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1."),
    (r"^encoder\.down_blocks\.(\d+)\.(?=norm|conv)", r"encoder.downsamples.\1.RESNET."),
    (r"^encoder\.down_blocks\.", "encoder.downsamples."),
    (r"^decoder\.up_blocks\.(\d)\.resnets\.(\d)\.", lambda m: f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.RESNET."),
    (r"^decoder\.up_blocks\.(\d)\.upsamplers\.0\.", lambda m: f"decoder.upsamples.{4 * int(m[1]) + 3}."),
]


def vae_key_to_wan(key: str) -> str:
    key = rename(key, _VAE_TO_WAN)
    if ".RESNET." in key:
        head, tail = key.split(".RESNET.")
        key = head + rename("." + tail, _RESNET_TO_WAN)
    return key


def comfy_state(module, key_to_wan, converter) -> dict[str, torch.Tensor]:
    """The module's weights under original Wan names, checked to convert back exactly with diffusers' converter."""
    state = {key_to_wan(name): tensor.contiguous() for name, tensor in module.state_dict().items()}
    round_trip = diffusers_key_map(converter, {key: tensor.shape for key, tensor in state.items()})
    if set(round_trip) != set(module.state_dict()):
        raise RuntimeError("tiny model key layout does not round-trip through diffusers' Wan converter")
    return state


def write_tiny_models(models_dir) -> dict[str, Path]:
    """Write every tiny component into ComfyUI's folder layout under models_dir; returns {component: path}."""
    models_dir = Path(models_dir)
    tokenizer_bytes = tiny_tokenizer_model()
    vocab_size = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_bytes).get_piece_size()
    states = {
        "i2v": comfy_state(tiny_transformer(True), transformer_key_to_wan, convert_wan_transformer_to_diffusers),
        "t2v": comfy_state(tiny_transformer(False), transformer_key_to_wan, convert_wan_transformer_to_diffusers),
        "vae": comfy_state(tiny_vae(), vae_key_to_wan, convert_wan_vae_to_diffusers),
        "text_encoder": {k: v for k, v in tiny_text_encoder(vocab_size).state_dict().items() if "embed_tokens" not in k}
        | {TOKENIZER_TENSOR: torch.from_numpy(np.frombuffer(tokenizer_bytes, dtype=np.uint8).copy())},
        "clip_vision": {"vision_model." + k.removeprefix("vision_model."): v.contiguous()
                        for k, v in tiny_clip_vision().state_dict().items()},
    }
    paths = {}
    for component, state in states.items():
        folder, name = TINY_FILES[component]
        paths[component] = models_dir / folder / name
        paths[component].parent.mkdir(parents=True, exist_ok=True)
        temporary = paths[component].with_suffix(".partial")
        save_file(state, str(temporary), metadata={"format": "pt", "wanflow": "tiny"})
        os.replace(temporary, paths[component])
    return paths


def tiny_model_paths(cache_dir=None) -> dict[str, Path]:
    """The tiny model files, written once into a cache folder ($WANFLOW_CACHE or ~/.cache/wanflow)."""
    cache_dir = Path(cache_dir or wanflow_cache_dir()) / "tiny"
    paths = {component: cache_dir / folder / name for component, (folder, name) in TINY_FILES.items()}
    if not all(path.is_file() for path in paths.values()):
        paths = write_tiny_models(cache_dir)
    return paths


# ---- a tiny LoRA ----------------------------------------------------------------------------------------------


def tiny_lora_state(model: str = "i2v", rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA on every linear layer of the tiny model's blocks, in ComfyUI's layout (original Wan names,
    lora_A [rank, in] / lora_B [out, rank] / alpha = rank / 2). B is random, not zero as at the start of training,
    so that the LoRA visibly changes the model."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in tiny_transformer(model == "i2v").named_modules():
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            wan = "diffusion_model." + transformer_key_to_wan(name + ".weight").removesuffix(".weight")
            state[f"{wan}.lora_A.weight"] = 0.1 * torch.randn(rank, module.in_features, generator=generator)
            state[f"{wan}.lora_B.weight"] = 0.1 * torch.randn(module.out_features, rank, generator=generator)
            state[f"{wan}.alpha"] = torch.tensor(rank / 2)
    return state


def write_tiny_lora(path, model: str = "i2v", rank: int = 4, seed: int = 0) -> Path:
    """Write tiny_lora_state(...) as a .safetensors file, like a LoRA a user drops into ComfyUI's loras folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_lora_state(model, rank, seed), str(path), metadata={"format": "pt"})
    return path


# ---- a tiny prompt-extension LLM ------------------------------------------------------------------------------

# ChatML, the format of Qwen2.5's chat template: the messages in turn, then the assistant's turn opened. A message's
# content is a string, or (for a vision-language model) a list of text and image parts, each image written as
# Qwen2.5-VL's placeholder, which its processor widens to one <|image_pad|> per image token.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLM_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2.5-VL's picture tokens; its processor looks up the video one too, though only pictures are shown here
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def tiny_llm_tokenizer(extra_special_tokens=()):
    """A byte-level BPE tokenizer with Qwen's chat tokens (and extra_special_tokens), trained on the tiny corpus and
    the system prompt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .prompt_extend import SYSTEM_PROMPT

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[*LLM_SPECIAL_TOKENS, *extra_special_tokens],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([*TOKENIZER_CORPUS.splitlines(), *SYSTEM_PROMPT.splitlines()], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE)


def _save_chat_model(folder, model, tokenizer) -> Path:
    """Save a tiny chat model with its tokenizer as a folder like one a user downloads into models/LLM."""
    from transformers import GenerationConfig

    folder = Path(folder)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_llm(folder) -> Path:
    """A tiny random Qwen2 chat model (the architecture of Qwen2.5-Instruct) with its tokenizer; its answers are
    random words, for testing the whole path."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_llm_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    return _save_chat_model(folder, _seeded(lambda: Qwen2ForCausalLM(config), offset=6), tokenizer)


def tiny_llm_path(cache_dir=None) -> Path:
    """The tiny prompt-extension model, written once into the tiny model cache."""
    folder = Path(cache_dir or wanflow_cache_dir()) / "tiny" / TINY_LLM_FOLDER
    return folder if (folder / "config.json").is_file() else write_tiny_llm(folder)


def write_tiny_vlm(folder) -> Path:
    """A tiny random Qwen2.5-VL (the architecture of Qwen2.5-VL-Instruct) with its processor's files: the tokenizer
    with the picture tokens, the chat template, and an image processor that shows it pictures of at most 112x112
    pixels (64 patches of 14x14, 16 image tokens). Its answers are random words, for testing the whole path."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = tiny_llm_tokenizer(VISION_SPECIAL_TOKENS)
    token_ids = dict(zip(("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"),
                         tokenizer.convert_tokens_to_ids(VISION_SPECIAL_TOKENS)))
    # Weights drawn ten times wider than the default 0.02: at that scale every next token is about as likely as any
    # other, and the seed alone would pick the words whatever the picture; this way the answer follows what it is shown
    init = 0.2
    # mrope_section splits each attention head's 8 rotary frequencies between time, height and width
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, initializer_range=init,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
    # Window attention (56-pixel windows: 2x2 merged patches) in the first block, full attention in the second, the
    # two kinds the real one mixes
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1], out_hidden_size=64,
                  initializer_range=init)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **token_ids)
    folder = _save_chat_model(folder, _seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), offset=7), tokenizer)
    # The PIL image processor saves without torchvision; the processor built from these files needs it to load
    Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=28 * 28,
                             max_pixels=112 * 112).save_pretrained(folder)
    return folder


def tiny_vlm_path(cache_dir=None) -> Path:
    """The tiny vision-language prompt-extension model, written once into the tiny model cache."""
    folder = Path(cache_dir or wanflow_cache_dir()) / "tiny" / TINY_VLM_FOLDER
    return folder if (folder / "preprocessor_config.json").is_file() else write_tiny_vlm(folder)


# ---- tiny distill LoRAs in lightx2v's and CausVid's layouts --------------------------------------------------------

DISTILL_LAYOUTS = ("lightx2v", "causvid")


def tiny_distill_lora_state(model: str = "i2v", layout: str = "lightx2v", rank: int = 4,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA for the tiny model laid out as the published step-distill LoRAs are (lightx2v's
    wan2.1_i2v_lora_rank64_lightx2v_4step, kijai's CausVid extractions): keys `diffusion_model.<Wan name>`; a
    lora_down/lora_up pair without .alpha on every Linear layer but the head; `.diff_b` on every bias; `.diff`
    (a full delta) on the head, the patch embedding and every norm with a weight; and, for lightx2v only,
    `blocks.N.diff_m` on each block's AdaLN modulation. Their extractor stores small tensors as full deltas, which on
    the 14B model are exactly these; the tiny model's are all small, so the choice follows the 14B file."""
    if layout not in DISTILL_LAYOUTS:
        raise ValueError(f"layout={layout!r}: one of {DISTILL_LAYOUTS}")
    generator = torch.Generator().manual_seed(seed)
    transformer = tiny_transformer(model == "i2v")

    def small(shape) -> torch.Tensor:
        return 0.05 * torch.randn(*shape, generator=generator)

    state = {}
    for name, module in transformer.named_modules():
        wan = "diffusion_model." + transformer_key_to_wan(name + ".weight").removesuffix(".weight")
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if not isinstance(weight, torch.Tensor):
            continue
        if isinstance(module, torch.nn.Linear) and name != "proj_out":
            state[f"{wan}.lora_down.weight"] = small((rank, module.in_features))
            state[f"{wan}.lora_up.weight"] = small((module.out_features, rank))
        else:
            state[f"{wan}.diff"] = small(weight.shape)
        if isinstance(bias, torch.Tensor):
            state[f"{wan}.diff_b"] = small(bias.shape)
    if layout == "lightx2v":
        for index, block in enumerate(transformer.blocks):
            state[f"diffusion_model.blocks.{index}.diff_m"] = small(block.scale_shift_table.shape)
    return state


def write_tiny_distill_lora(path, model: str = "i2v", layout: str = "lightx2v", rank: int = 4, seed: int = 0) -> Path:
    """Write tiny_distill_lora_state(...) as a .safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_distill_lora_state(model, layout, rank, seed), str(path), metadata={"format": "pt"})
    return path
