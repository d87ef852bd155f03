"""Videos past the trained 81 frames: context windows blended every step, and one pass with RIFLEx."""

import math
from pathlib import Path

import pytest
import torch

from wan_core.cli.main import main
from wan_core.sampling import pipeline
from wan_core.sampling.long_video import plan_windows, riflex, riflex_frequency, windowed
from wan_core.sampling.params import SamplingParams
from wan_core.video_io import read_video

IMAGE = Path(__file__).resolve().parents[1] / "examples" / "first_frame.png"
SMALL = dict(prompt="a cat walks", width=64, height=64, steps=1, seed=3)


def test_161_frames_take_three_even_windows_that_blend_to_one():
    windows = plan_windows(total=41, length=21, overlap=4)
    assert [(w.frames.start, w.frames.stop) for w in windows] == [(0, 17), (12, 29), (24, 41)]
    coverage = torch.zeros(41)
    for window in windows:
        coverage[window.frames] += window.weights
        assert window.weights.min() > 0
    assert torch.allclose(coverage, torch.ones(41))  # the ramps across each overlap add up to one
    assert [w.weights[0].item() for w in windows] == [1.0, pytest.approx(1 / 6), pytest.approx(1 / 6)]
    assert [(w.frames.start, w.frames.stop) for w in plan_windows(31, 21, 4)] == [(0, 18), (13, 31)]
    assert [(w.frames.start, w.frames.stop) for w in plan_windows(21, 21, 4)] == [(0, 21)]


def test_windows_see_their_own_frames_and_the_blend_is_exact_where_they_agree():
    seen = []

    def velocity(x, sigma, frames):  # [1, C, T_window, h, w]: a prediction that depends on the frame alone
        seen.append((frames.start, frames.stop, x.shape[2]))
        return 2 * x

    x = torch.randn(1, 4, 41, 2, 2)
    assert torch.allclose(windowed(velocity, 41, 21, 4)(x, 0.5), 2 * x)
    assert seen == [(0, 17, 17), (12, 29, 17), (24, 41, 17)]


def test_past_81_frames_i2v_runs_in_windows_and_one_pass_with_riflex_differs(tiny_i2v):
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    runs = {name: pipeline.generate_i2v(tiny_i2v, image, SamplingParams(num_frames=89, **options, **SMALL)).latents
            for name, options in [("windows", {}), ("one pass", {"one_pass": True}),
                                  ("riflex", {"one_pass": True, "riflex": True})]}
    assert all(latents.shape == (1, 16, 23, 8, 8) and torch.isfinite(latents).all() for latents in runs.values())
    assert not torch.allclose(runs["windows"], runs["one pass"])
    assert not torch.allclose(runs["riflex"], runs["one pass"])


def test_riflex_changes_one_temporal_frequency_for_the_run_only(tiny_i2v):
    rope = tiny_i2v.transformer.rope
    before = rope.freqs_cos.clone(), rope.freqs_sin.clone()
    with riflex(tiny_i2v.transformer, 41):
        changed = (rope.freqs_cos != before[0]).any(dim=0).nonzero().flatten().tolist()
        assert changed == [10, 11]  # frequency 6 of the temporal block, in its two columns
        assert rope.freqs_sin[7, 10].item() == pytest.approx(math.sin(7 * riflex_frequency(41)))
    assert torch.equal(rope.freqs_cos, before[0]) and torch.equal(rope.freqs_sin, before[1])
    with riflex(tiny_i2v.transformer, 21):  # the trained length: nothing to stretch
        assert torch.equal(rope.freqs_cos, before[0])


def test_ten_seconds_on_the_command_line_give_161_frames(tiny_cache, tmp_path):
    out = tmp_path / "long.mp4"
    assert main(["i2v", "--model", "tiny", "--image", str(IMAGE), "--prompt", "a valley", "--size", "64*64", "--duration", "10", "--steps", "1", "--guidance-scale", "1", "--context-overlap",
                 "8", "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (161, 64, 64, 3)
