"""Prompt extension with the tiny random Qwen2 chat model that `tiny-models` writes: loading, the chat template,
generation limits, seeds, the prompt reaching the sampler, and a missing model refused before any sampling."""

from pathlib import Path

import pytest
import torch

from wan_core.cli.main import main
from wan_core.errors import WanInputError
from wan_core.prompt_extend import SYSTEM_PROMPT, PromptExtender, find_llm
from wan_core.tiny import TINY_LLM_FOLDER, tiny_llm_path
from wan_core.video_io import read_video

IMAGE = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"
SMALL = ["--size", "64*64", "--frames", "5", "--steps", "1", "--seed", "7"]


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
    assert not cache.exists() and not (tmp_path / "o.mp4").exists()


def test_tiny_models_write_the_llm_where_comfyui_looks(tmp_path):
    assert main(["tiny-models", "--models-dir", str(tmp_path / "models")]) == 0
    assert find_llm(tmp_path / "models" / "LLM") == tmp_path / "models" / TINY_LLM_FOLDER
