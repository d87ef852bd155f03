"""Prompt extension with the tiny random Qwen2 chat model and the tiny random Qwen2.5-VL that `tiny-models` writes:
loading, the chat template, generation limits, seeds, the picture reaching the vision tower, the prompt reaching the
sampler, and a missing model refused before any sampling."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer
from transformers.utils import is_torchvision_available

from comfyui_server import comfyui_tree, run_in_comfyui
from wan_core.cli.main import main
from wan_core.errors import WanInputError
from wan_core.prompt_extend import MAX_PICTURE_PIXELS, PICTURE_SYSTEM_PROMPT, SYSTEM_PROMPT, PromptExtender, find_llm, \
    is_vision_language, shown_picture
from wan_core.tiny import TINY_LLM_FOLDER, TINY_VLM_FOLDER, tiny_llm_path, tiny_vlm_path
from wan_core.video_io import read_image, read_video

IMAGE = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"
SMALL = ["--size", "64*64", "--frames", "5", "--steps", "1", "--seed", "7"]
VLM_WORKER = Path(__file__).with_name("prompt_extend_vlm.py")


@pytest.fixture(scope="module")
def extender(tiny_cache):
    return PromptExtender.load(tiny_llm_path())


def test_the_tiny_model_answers_through_its_chat_template_within_the_token_limit(extender):
    rendered = extender.tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "a cat"}],
        add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("<|im_start|>system\n" + SYSTEM_PROMPT) and rendered.endswith("<|im_start|>assistant\n")
    for limit in (16, 40):
        assert 0 < len(extender.answer_ids("a cat walks", seed=1, max_new_tokens=limit)) <= limit
    with pytest.raises(WanInputError, match="max_new_tokens=2 is out of range: allowed 16 to 1024"):
        extender.answer_ids("a cat", seed=1, max_new_tokens=2)


def test_the_same_seed_gives_the_same_extension(extender):
    first = extender.extend("a cat walks", seed=3, max_new_tokens=32)
    assert first == extender.extend("a cat walks", seed=3, max_new_tokens=32)
    assert first != extender.extend("a cat walks", seed=4, max_new_tokens=32)
    state = torch.random.get_rng_state()
    extender.extend("a cat walks", seed=3, max_new_tokens=16)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone


def test_the_extended_prompt_is_printed_and_is_what_the_video_follows(tiny_cache, tmp_path, capsys, extender):
    extended_out, plain_out = tmp_path / "extended.mp4", tmp_path / "plain.mp4"
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", "--prompt-extend", *SMALL,
                 "--out", str(extended_out)]) == 0
    expected = extender.extend("a valley", seed=7)
    assert f"extended prompt: {expected}\n" in capsys.readouterr().out
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", expected, *SMALL,
                 "--out", str(plain_out)]) == 0
    assert torch.equal(read_video(extended_out)[0], read_video(plain_out)[0])


def test_a_missing_model_stops_before_any_model_is_built(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "untouched-cache"
    monkeypatch.setenv("WANFLOW_CACHE", str(cache))
    (tmp_path / "models").mkdir()
    common = ["i2v", "--image", str(IMAGE), "--prompt", "x", "--out", str(tmp_path / "o.mp4")]
    cases = [
        ([*common, "--models-dir", str(tmp_path / "models"), "--prompt-extend"], "models/LLM' is not a folder"),
        ([*common, "--model", "tiny", "--prompt-extend", "--prompt-extend-model", str(tmp_path)],
         "holds no model folder (config.json and *.safetensors)"),
        ([*common, "--model", "tiny", "--prompt-extend-model", str(tmp_path)], "without --prompt-extend"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert message in error, error
        if "--prompt-extend" in argv:
            assert "Qwen2.5-1.5B-Instruct" in error and "MODELS_DIR/LLM/" in error and "never fetched" in error
            assert "Qwen2.5-VL-3B-Instruct" in error and "sees the input picture" in error
    assert not cache.exists() and not (tmp_path / "o.mp4").exists()


def test_tiny_models_write_the_llm_and_the_vlm_where_comfyui_looks(tmp_path):
    assert main(["tiny-models", "--models-dir", str(tmp_path / "models")]) == 0
    assert find_llm(tmp_path / "models" / "LLM") == tmp_path / "models" / TINY_LLM_FOLDER
    assert find_llm(tmp_path / "models" / TINY_VLM_FOLDER) == tmp_path / "models" / TINY_VLM_FOLDER
    assert is_vision_language(tmp_path / "models" / TINY_VLM_FOLDER)
    assert not is_vision_language(tmp_path / "models" / TINY_LLM_FOLDER)


def test_a_text_only_model_writes_from_the_words_alone_when_given_a_picture(extender):
    assert not extender.sees_pictures
    picture = read_image(IMAGE)
    assert extender.extend("a cat walks", seed=3, max_new_tokens=32, picture=picture) == \
        extender.extend("a cat walks", seed=3, max_new_tokens=32)


def test_the_tiny_vlm_template_puts_the_picture_placeholder_before_the_prompt(tiny_cache):
    folder = tiny_vlm_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = json.loads((folder / "config.json").read_text())
    for name, token in (("image_token_id", "<|image_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
                        ("vision_end_token_id", "<|vision_end|>"), ("video_token_id", "<|video_pad|>")):
        assert config[name] == tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": PICTURE_SYSTEM_PROMPT},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat"}]}],
        add_generation_prompt=True, tokenize=False)
    assert rendered == (f"<|im_start|>system\n{PICTURE_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
                        "<|vision_start|><|image_pad|><|vision_end|>a cat<|im_end|>\n<|im_start|>assistant\n")


def test_a_large_picture_is_scaled_down_with_its_aspect_ratio_and_only_the_first_frame_is_shown():
    frames = torch.rand(2, 1200, 1800, 3)
    picture = shown_picture(frames)
    assert picture.width * picture.height <= MAX_PICTURE_PIXELS < 1200 * 1800
    assert abs(picture.width / picture.height - 1.5) < 0.01
    small = torch.rand(2, 48, 80, 3)
    picture = shown_picture(small)
    assert picture.size == (80, 48)
    assert np.array_equal(np.asarray(picture), (small[0] * 255).round().byte().numpy())


@pytest.mark.skipif(is_torchvision_available(), reason="checks the message given where torchvision is missing")
def test_a_vlm_without_torchvision_stops_before_any_wan_model_loads(tiny_cache, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "x", "--prompt-extend",
                 "--prompt-extend-model", str(tiny_vlm_path()), *SMALL, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "is a vision-language model whose processor needs a library that is not installed" in error, error
    assert "Torchvision" in error and "Qwen2.5-1.5B-Instruct" in error and not out.exists()


# ---- the tiny Qwen2.5-VL, run where torchvision imports (its processor needs it) --------------------------------


@pytest.fixture(scope="module")
def vlm(tiny_cache, tmp_path_factory):
    """What tests/prompt_extend_vlm.py saw: answers, what reached the vision tower, and two command-line runs."""
    out = tmp_path_factory.mktemp("vlm")
    result = run_in_comfyui(comfyui_tree(), VLM_WORKER, IMAGE, out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def test_the_vlm_loads_and_its_processor_puts_the_picture_in_the_chat(vlm):
    assert vlm["sees_pictures"] and vlm["model_class"] == "Qwen2_5_VLForConditionalGeneration"
    ((frames, rows, columns),) = vlm["image_grid_thw"]
    image_tokens = frames * rows * columns // 4  # the processor merges 2x2 patches into one image token
    assert vlm["rendered"].startswith(f"<|im_start|>system\n{PICTURE_SYSTEM_PROMPT}<|im_end|>\n")
    assert vlm["rendered"].endswith("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * image_tokens +
                                    "<|vision_end|>a cat walks<|im_end|>\n<|im_start|>assistant\n")
    # 320x192 scaled within the tiny processor's 112x112 pixels, in 14-pixel patches: 6 rows of 10
    assert (frames, rows, columns) == (1, 6, 10)


def test_the_picture_reaches_the_vision_tower_once_per_answer(vlm):
    (seen,) = vlm["picture"]["shown"]
    assert seen["pixels"] == [60, 3 * 2 * 14 * 14]  # 60 patches of 3 colours x 2 frames x 14 x 14 pixels
    assert vlm["no_picture"]["shown"] == []
    assert vlm["no_picture"]["text"] != vlm["picture"]["text"]


def test_the_same_picture_and_seed_give_the_same_text_and_a_different_picture_another(vlm):
    assert vlm["picture_again"]["text"] == vlm["picture"]["text"]
    assert vlm["other_seed"]["text"] != vlm["picture"]["text"]
    assert vlm["upside_down"]["shown"][0]["features"] != vlm["picture"]["shown"][0]["features"]
    assert vlm["upside_down"]["text"] != vlm["picture"]["text"]
    assert vlm["video"] == vlm["picture"]  # of frames, the first is shown
    assert vlm["lengths"] == {"16": 16, "40": 40}  # this answer runs past 40 tokens: each limit ends it


def test_the_command_line_shows_the_vlm_the_picture_and_prints_its_prompt(vlm):
    for task in ("i2v", "v2v"):  # v2v: the first source frame, upside down here
        run = vlm[task]
        assert run["code"] == 0 and run["wrote"]
        assert f"extended prompt: {run['expected']}\n" in run["stdout"]
        assert run["expected"] != run["words_alone"]
