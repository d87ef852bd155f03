"""Prompts encoded once: a rerun with the same prompts runs no text encoder (counted by a forward hook) and gives
the video a run without the cache gives; the on-disk level survives the process, stays within its bound and
clears."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from helpers import params, random_pictures

from wan_core.cli.main import main as cli_main
from wan_core.sampling import conditioning, pipeline
from wan_core.sampling.models import load_models
from wan_core.sampling.prompt_cache import PromptCache, disk_folder
from wan_core.video_io import pil_to_frame, read_video


def run(**changes):
    return replace(params("euler"), **changes)


def picture() -> torch.Tensor:
    return pil_to_frame(random_pictures(1)[0])[None]


class EncoderCalls:
    """Counts the text encoder's forward calls while the block runs."""

    def __init__(self, models):
        self.models, self.calls = models, 0

    def __enter__(self):
        self.handle = self.models.text_encoder.register_forward_hook(lambda *_: self._count())
        return self

    def _count(self):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


def recording(models, cache):
    stages = []
    return replace(models, prompt_cache=cache, placement=lambda _models, names: stages.append(names)), stages


def test_a_new_seed_with_the_same_prompts_runs_no_text_encoder_and_gives_the_same_video(tiny_i2v):
    models, stages = recording(tiny_i2v, PromptCache())
    with EncoderCalls(models) as first:
        pipeline.generate_i2v(models, picture(), run(seed=1))
    assert first.calls == 2 and stages[0] == ("text_encoder",)  # prompt and negative prompt
    stages.clear()
    with EncoderCalls(models) as second:
        cached = pipeline.generate_i2v(models, picture(), run(seed=2, steps=3)).latents
    assert second.calls == 0
    assert ("text_encoder",) not in stages  # ComfyUI would not load the text encoder at all
    uncached = replace(tiny_i2v, prompt_cache=None)
    with EncoderCalls(uncached) as without:
        reference = pipeline.generate_i2v(uncached, picture(), run(seed=2, steps=3)).latents
    assert without.calls == 2 and torch.equal(cached, reference)


def test_a_changed_prompt_runs_the_encoder_for_that_prompt_only(tiny_i2v):
    models, stages = recording(tiny_i2v, PromptCache())
    pipeline.generate_i2v(models, picture(), params("euler"))
    with EncoderCalls(models) as changed:
        pipeline.generate_i2v(models, picture(), run(prompt="a dog runs on the grass"))
    assert changed.calls == 1 and stages.count(("text_encoder",)) == 2


def test_an_encoder_from_no_file_is_never_cached(tiny_i2v):
    models = replace(tiny_i2v, text_encoder_identity=None, prompt_cache=PromptCache())
    for _ in range(2):
        with EncoderCalls(models) as counted:
            pipeline.encode_prompts(models, params("euler"))
        assert counted.calls == 2


def test_the_disk_cache_survives_the_process_stays_bounded_and_clears(tiny_i2v, tmp_path):
    folder = tmp_path / "prompts"
    first = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder))
    expected = pipeline.encode_prompts(first, params("euler"))
    assert len(list(folder.glob("*.safetensors"))) == 2
    later = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder))  # a new process: an empty memory level
    with EncoderCalls(later) as counted:
        again = pipeline.encode_prompts(later, params("euler"))
    assert counted.calls == 0 and all(torch.equal(a, b) for a, b in zip(again, expected))
    one_entry = max(path.stat().st_size for path in folder.glob("*.safetensors"))
    small = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder, max_bytes=2 * one_entry))
    for text in ("one", "two", "three"):
        pipeline.encode_prompts(small, run(prompt=text, guidance_scale=1.0))
    remaining = list(folder.glob("*.safetensors"))
    assert sum(path.stat().st_size for path in remaining) <= 2 * one_entry and len(remaining) < 5
    newest = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder))
    with EncoderCalls(newest) as counted:
        pipeline.encode_prompts(newest, run(prompt="three", guidance_scale=1.0))
    assert counted.calls == 0  # the least recently used went first
    assert small.prompt_cache.clear() == len(remaining) and not list(folder.glob("*"))


def test_cli_cache_clear_empties_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANFLOW_CACHE", str(tmp_path))
    folder = disk_folder()
    folder.mkdir(parents=True)
    (folder / ("0" * 64 + ".safetensors")).write_bytes(b"x")
    assert cli_main(["cache", "info"]) == 0 and "1 cached prompts" in capsys.readouterr().out
    assert cli_main(["cache", "clear"]) == 0
    assert not list(folder.glob("*.safetensors"))


def test_an_unreadable_cached_prompt_is_encoded_again(tiny_i2v, tmp_path):
    folder = tmp_path / "prompts"
    models = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder))
    pipeline.encode_prompts(models, run(guidance_scale=1.0))
    for path in folder.glob("*.safetensors"):
        path.write_bytes(b"not a safetensors file")
    fresh = replace(tiny_i2v, prompt_cache=PromptCache(folder=folder))
    with EncoderCalls(fresh) as counted:
        pipeline.encode_prompts(fresh, run(guidance_scale=1.0))
    assert counted.calls == 1


def test_the_command_line_reads_no_text_encoder_when_every_prompt_is_cached(tiny_cache, tmp_path, monkeypatch,
                                                                           capsys):
    """The text encoder file (a copy) is overwritten with garbage of its size and its modification time put back,
    so its identity, the cache key, is unchanged: a run whose prompts are cached on disk still works, and gives the
    video a run that encoded them gives; a new prompt has to read the file, and fails."""
    monkeypatch.setenv("WANFLOW_CACHE", str(tmp_path / "cache"))  # the prompt cache of these runs alone
    encoder = tmp_path / "umt5_tiny.safetensors"
    shutil.copyfile(tiny_cache / "tiny" / "text_encoders" / encoder.name, encoder)
    image = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"

    def cli(seed, out, prompt="a valley", cache="disk"):
        return cli_main(["i2v", "--model", "tiny", "--text-encoder", str(encoder), "--image", str(image),
                         "--prompt", prompt, "--negative-prompt", "blurry", "--size", "80*64", "--frames", "5",
                         "--steps", "2", "--seed", str(seed), "--prompt-cache", cache, "--out", str(tmp_path / out)])

    assert cli(2, "encoded.mp4", cache="memory") == 0  # encodes both prompts (a file new to every cache level)
    assert cli(1, "first.mp4") == 0 and len(list(disk_folder().glob("*.safetensors"))) == 2
    stat = encoder.stat()
    encoder.write_bytes(b"\xff" * stat.st_size)
    os.utime(encoder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cli(2, "cached.mp4") == 0
    assert torch.equal(read_video(tmp_path / "cached.mp4")[0], read_video(tmp_path / "encoded.mp4")[0])
    capsys.readouterr()
    assert cli(2, "new_prompt.mp4", prompt="a lake") == 2
    assert f"text encoder file {str(encoder)!r} is not a readable safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "new_prompt.mp4").exists()


def test_fp8_storage_of_the_text_encoder_keys_its_own_prompts(tiny_paths, tiny_t2v):
    """The key names the weight storage (the encoder need not be read to make it): fp8-stored weights give other
    embeddings than the same file's weights in the compute dtype."""
    fp8 = load_models(tiny_paths["t2v"], tiny_paths["vae"], tiny_paths["text_encoder"], weight_storage="fp8",
                      lazy_text_encoder=True)
    assert fp8.text_encoder is None
    assert conditioning.prompt_key(fp8, "a valley") != conditioning.prompt_key(tiny_t2v, "a valley")
