"""A checkpoint made by ComfyUI's own Wan model class, with small arbitrary dimensions, in ComfyUI's layout:
it loads, computes what ComfyUI computes, and generates a video through the command line."""

import os
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from comfyui_server import comfyui_tree, run_in_comfyui
from wan_core.files.loading import load_transformer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("make_comfy_wan_checkpoint.py")
# dim 384 = 3 heads of 128 (the loader reads heads as width / 128), ffn 640, 3 layers; text width 64 = tiny UMT5.
DIM, HEADS, FFN, LAYERS, TEXT_DIM = 384, 3, 640, 3, 64


@pytest.fixture(scope="module")
def comfy_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("comfy-made")
    checkpoint, reference = folder / "wan_comfy_made_i2v.safetensors", folder / "reference.safetensors"
    result = run_in_comfyui(comfyui_tree(), SCRIPT, checkpoint, reference, DIM, HEADS, FFN, LAYERS, TEXT_DIM,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint, reference


def test_comfy_made_checkpoint_computes_what_comfyui_computes(comfy_checkpoint):
    checkpoint, reference = comfy_checkpoint
    assert all(key.startswith("model.diffusion_model.") for key in load_file(checkpoint))
    model = load_transformer(checkpoint)
    config = model.config
    assert (config.num_attention_heads * config.attention_head_dim, config.num_layers, config.ffn_dim) == \
        (DIM, LAYERS, FFN)
    assert (config.in_channels, config.image_dim, config.text_dim) == (36, 1280, TEXT_DIM)
    data = load_file(reference)
    with torch.no_grad():
        output = model(data["x"], data["t"], data["context"], encoder_hidden_states_image=data["clip_fea"],
                       return_dict=False)[0]
    # float32 on both sides, different attention kernels: agreement to float32 rounding of a 3-layer network
    assert (output - data["output"]).abs().max() <= 1e-4 * data["output"].abs().max()


def test_comfy_made_checkpoint_generates_through_the_command_line(comfy_checkpoint, tiny_paths, tmp_path):
    models = tmp_path / "models"
    for folder, name, source in [("diffusion_models", "wan_comfy_made_i2v.safetensors", comfy_checkpoint[0]),
                                 ("vae", "wan_2.1_vae.safetensors", tiny_paths["vae"]),
                                 ("text_encoders", "umt5_xxl_fp16.safetensors", tiny_paths["text_encoder"])]:
        (models / folder).mkdir(parents=True)
        (models / folder / name).symlink_to(source)
    # ComfyUI's I2V model takes 1280-wide CLIP ViT-H features: a 1-layer CLIP vision tower of that width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=256, num_hidden_layers=2,
                                                num_attention_heads=16, image_size=32, patch_size=8))
    (models / "clip_vision").mkdir()
    save_file({"vision_model." + k.removeprefix("vision_model."): v.contiguous() for k, v in clip.state_dict().items()},
              str(models / "clip_vision" / "clip_vision_h.safetensors"))
    out = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "wan_core", "i2v", "--models-dir", models, "--diffusion-model",
         "wan_comfy_made_i2v.safetensors", "--image", ROOT / "examples" / "first_frame.png", "--prompt", "a valley",
         "--size", "64*64", "--frames", "5", "--steps", "2", "--seed", "4", "--device", "cpu", "--out", out],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert (stream.width, stream.height, len(frames)) == (64, 64, 5)
    assert max(frame.std() for frame in frames) > 1.0  # an actual picture, not a blank
