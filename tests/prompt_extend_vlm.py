"""Run where torchvision imports (tests/comfyui_server.run_in_comfyui), as transformers loads Qwen2.5-VL's processor
only with it: prompt extension with the tiny Qwen2.5-VL that tiny-models writes, through the engine's Python API and
the command line. Writes what happened as JSON to OUT_DIR/result.json; test_prompt_extend.py checks it.

usage: prompt_extend_vlm.py IMAGE OUT_DIR
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import torch

from wan_core.cli.main import main
from wan_core.prompt_extend import DEFAULT_MAX_NEW_TOKENS, PromptExtender
from wan_core.tiny import tiny_vlm_path
from wan_core.video_io import read_image, read_video, write_video

PROMPT, SEED = "a cat walks", 3
SMALL = ["--size", "64*64", "--frames", "5", "--steps", "1", "--seed", "7"]

image, out = Path(sys.argv[1]), Path(sys.argv[2])
picture = read_image(image)  # [1, H, W, 3]
upside_down = picture.flip(1)
extender = PromptExtender.load(tiny_vlm_path())

shown = []  # what the vision tower was given and gave, one entry per call


def record(module, args, output):
    shown.append({"pixels": list(args[0].shape), "pixel_sum": args[0].double().sum().item(),
                  "features": output.pooler_output.flatten().tolist()})


extender.model.model.visual.register_forward_hook(record)


def extension(prompt=PROMPT, seed=SEED, max_new_tokens=32, picture=None) -> dict:
    """The answer, and what the vision tower saw while the model wrote it."""
    before = len(shown)
    text = extender.extend(prompt, seed, max_new_tokens, picture=picture)
    return {"text": text, "shown": shown[before:]}


inputs = extender.processor.apply_chat_template(extender.messages(PROMPT, picture), add_generation_prompt=True,
                                                tokenize=True, return_tensors="pt", return_dict=True)
result = {
    "sees_pictures": extender.sees_pictures,
    "model_class": type(extender.model).__name__,
    "rendered": extender.tokenizer.decode(inputs["input_ids"][0]),
    "image_grid_thw": inputs["image_grid_thw"].tolist(),
    "picture": extension(picture=picture),
    "picture_again": extension(picture=picture),
    "other_seed": extension(seed=SEED + 1, picture=picture),
    "upside_down": extension(picture=upside_down),
    "video": extension(picture=torch.cat([picture, upside_down])),  # frames [2, H, W, 3]: the first is shown
    "no_picture": extension(),
    "lengths": {limit: len(extender.answer_ids(PROMPT, SEED, limit, picture)) for limit in (16, 40)},
}

# The command line: i2v shows the picture, v2v the first frame of its source
write_video(out / "source.mp4", torch.cat([upside_down] * 4 + [picture] * 5), fps=16)
for task, source, media in (("i2v", ["--image", str(image)], picture),
                            ("v2v", ["--video", str(out / "source.mp4")], read_video(out / "source.mp4")[0])):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([task, "--model", "tiny", *source, "--prompt", "a valley", "--prompt-extend",
                     "--prompt-extend-model", str(tiny_vlm_path()), *SMALL, "--out", str(out / f"{task}.mp4")])
    result[task] = {"code": code, "stdout": stdout.getvalue(), "wrote": (out / f"{task}.mp4").is_file(),
                    "expected": extension("a valley", 7, DEFAULT_MAX_NEW_TOKENS, media)["text"],
                    "words_alone": extension("a valley", 7, DEFAULT_MAX_NEW_TOKENS)["text"]}
(out / "result.json").write_text(json.dumps(result))
