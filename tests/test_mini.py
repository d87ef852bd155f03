"""The mini model: its training script still runs and refuses bad input, the shipped files load through the normal
path, and on a held-out picture with held-out sentences its first frame is the picture, the camera pans the way
the prompt says and its LoRA grades the colours (loosely here; bench/bench_mini_quality.py measures the whole
held-out set, BENCHMARKS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_core.builtin import mini_data as data
from wan_core.builtin.mini import MINI_FILES, mini_model_paths
from wan_core.builtin.mini_quality import phase_shift
from wan_core.builtin.train_mini import PLANS, train_mini
from wan_core.cli.main import main
from wan_core.errors import WanInputError

HELD_OUT_SEED = data.PROCEDURAL_HELD_OUT_SEEDS[0]
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "first_frame.png")


# ---- the training script -----------------------------------------------------------------------------------------


def test_training_script_runs_every_stage_on_a_toy_size_and_its_files_load(tmp_path):
    out = tmp_path / "mini"
    record = train_mini(out, seed=3, plan=PLANS["smoke"])
    assert set(record["seconds"]) == {"vae", "precompute", "transformer", "lora", "total"}
    stages = ("vae", "curriculum", "transformer", "lora")
    assert all(np.isfinite(record[f"{stage}_losses"]).all() for stage in stages)
    # both transformer phases ran: the curriculum on latent moves, then the settling steps on encoded ones
    assert (len(record["curriculum_losses"]), len(record["transformer_losses"])) == (2, 2)
    paths = mini_model_paths(out)
    video = tmp_path / "toy.mp4"
    # the toy files go through the command line like any ComfyUI-layout files, with the LoRA in the stack
    assert main(["i2v", "--diffusion-model", str(paths["i2v"]), "--vae", str(paths["vae"]), "--text-encoder",
                 str(paths["text_encoder"]), "--clip-vision", str(paths["clip_vision"]), "--image",
                 EXAMPLE, "--prompt", "the camera pans slowly to the left", "--size", "160*96",
                 "--frames", "5", "--steps", "2", "--seed", "1", "--lora", str(paths["lora"]), "--out",
                 str(video)]) == 0
    assert video.stat().st_size > 0


def test_training_is_deterministic_for_a_seed(tmp_path):
    first = train_mini(tmp_path / "a", seed=5, plan=PLANS["smoke"])
    second = train_mini(tmp_path / "b", seed=5, plan=PLANS["smoke"])
    assert first["transformer_losses"] == second["transformer_losses"]
    assert first["lora_losses"] == second["lora_losses"]


def test_training_refuses_a_folder_that_is_not_empty_and_overwrites_nothing(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(WanInputError, match="not an empty folder"):
        train_mini(out, plan=PLANS["smoke"])
    assert main(["train-mini", "--out", str(out), "--plan", "smoke"]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_continuing_a_run_trains_its_transformer_and_decoder_further_and_keeps_the_encoders(tmp_path):
    from safetensors.torch import load_file

    train_mini(tmp_path / "a", seed=3, plan=PLANS["smoke"])
    record = train_mini(tmp_path / "b", seed=3, plan=PLANS["smoke"], continue_from=tmp_path / "a")
    assert record["continued_from"] == json.loads((tmp_path / "a" / "training.json").read_text())  # the whole chain
    state = {name: [load_file(mini_model_paths(tmp_path / run)[name]) for run in "ab"]
             for name in ("i2v", "vae", "text_encoder", "clip_vision")}
    for name in ("text_encoder", "clip_vision"):
        before, after = state[name]
        assert all(torch.equal(before[key], after[key]) for key in before)
    before, after = state["vae"]
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("encoder."))
    assert not all(torch.equal(before[key], after[key]) for key in before if key.startswith("decoder."))
    before, after = state["i2v"]
    # trained further from the earlier weights (two small steps), not started afresh (a new draw differs by far more)
    changes = [float((after[key].float() - before[key].float()).abs().max()) for key in before]
    assert 0 < max(changes) < 0.01


def test_continuing_needs_an_earlier_runs_files_and_excludes_reuse_vae(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = r"continue_from=.*lacks the \['vae', 'text_encoder', 'clip_vision', 'i2v'\]"
    with pytest.raises(WanInputError, match=missing):
        train_mini(tmp_path / "out", plan=PLANS["smoke"], continue_from=empty)
    with pytest.raises(WanInputError, match="not both"):
        train_mini(tmp_path / "out", plan=PLANS["smoke"], continue_from=empty, reuse_vae=empty)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_the_motion_curriculum_adds_the_opposite_moves_gradually_then_draws_all_evenly():
    from wan_core.builtin.train_mini import CURRICULUM, ONE_DIRECTION, motion_odds

    opposite = [data.MOTIONS.index(m) for m in ("pan_right", "zoom_out")]
    assert set(ONE_DIRECTION) | {"pan_right", "zoom_out"} == set(data.MOTIONS)
    assert motion_odds(0.0)[opposite].sum() == 0 and motion_odds(CURRICULUM[0])[opposite].sum() == 0
    shares = [motion_odds(p)[opposite].sum() for p in np.linspace(CURRICULUM[0], CURRICULUM[1], 6)]
    assert all(a < b for a, b in zip(shares, shares[1:]))
    assert np.allclose(motion_odds(CURRICULUM[1]), 1 / len(data.MOTIONS))
    assert np.allclose(motion_odds(1.0), 1 / len(data.MOTIONS))


@pytest.fixture
def toy_vae_and_picture():
    """(a random toy VAE, a procedural picture [3, SOURCE_H, SOURCE_W], its first frame's latent [16, h, w])"""
    from diffusers import AutoencoderKLWan

    from wan_core.builtin.train_mini import encode, first_frames

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16).eval()
    picture = torch.from_numpy(data.procedural_picture(7)).permute(2, 0, 1)
    return vae, picture, encode(vae, first_frames(picture[None])[:, :, None])[0, :, 0]


def test_encoded_moves_are_the_encodings_of_the_frames_the_camera_sees(toy_vae_and_picture):
    from wan_core.builtin.train_mini import encode, encoded_moves

    vae, picture, first = toy_vae_and_picture
    moves = encoded_moves(vae, picture[None], latent_frames=4)[0]  # [5, 16, 4, h, w]
    assert all(torch.equal(moves[m, :, 0], first) for m in range(len(data.MOTIONS)))
    still = moves[data.MOTIONS.index("still")]
    assert torch.equal(still, first[:, None].expand_as(still))
    for motion in ("pan_left", "zoom_out"):
        frame = data.camera_frames_at(picture, motion, [data.latent_frame_time(3)])  # [3, 1, H, W]
        alone = encode(vae, frame.transpose(0, 1)[:, :, None])[0, :, 0]
        assert torch.allclose(moves[data.MOTIONS.index(motion), :, 3], alone, atol=1e-5)
    assert not torch.allclose(moves[0, :, 3], moves[1, :, 3])  # left and right part


def test_encoded_moves_through_the_compiled_encoder_are_the_eager_ones(toy_vae_and_picture):
    from dataclasses import replace

    from wan_core.builtin.train_mini import compiled, encoded_moves, latent_means

    vae, picture, _ = toy_vae_and_picture
    latents_of = compiled(latent_means(vae), replace(PLANS["smoke"], compiled=True))
    eager = encoded_moves(vae, picture[None], latent_frames=3)
    fused = encoded_moves(vae, picture[None], latent_frames=3, latents_of=latents_of)
    assert (fused - eager).norm() < 1e-4 * eager.norm()


def test_latent_moves_are_windows_over_the_whole_pictures_latent_after_its_first_frame(toy_vae_and_picture):
    from wan_core.builtin.train_mini import encode, latent_moves

    vae, picture, first = toy_vae_and_picture
    moves = latent_moves(vae, picture[None], latent_frames=4)[0]  # [5, 16, 4, h, w]
    assert all(torch.equal(moves[m, :, 0], first) for m in range(len(data.MOTIONS)))
    source = encode(vae, picture[None, :, None])[0, :, 0]  # [16, SOURCE_H/8, SOURCE_W/8]
    top, left = (data.SOURCE_H - data.FRAME_H) // 16, (data.SOURCE_W - data.FRAME_W) // 16
    centre = source[:, top:top + data.FRAME_H // 8, left:left + data.FRAME_W // 8]  # the frame's window, unmoved
    still = moves[data.MOTIONS.index("still")]
    assert all(torch.allclose(still[:, t], centre, atol=1e-5) for t in range(1, 4))
    assert not torch.allclose(moves[0, :, 3], moves[1, :, 3])  # left and right part


def test_balanced_gains_keep_a_frames_spread_through_every_layer_on_the_fresh_vaes_path():
    from diffusers import AutoencoderKLWan

    from wan_core.builtin.train_mini import balance_signal_gains, zero_residual_branches

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16)
    zero_residual_branches(vae)
    frames = torch.stack([torch.from_numpy(data.procedural_picture(s, 64, 48)).permute(2, 0, 1) for s in (1, 2)])
    frames = frames[:, :, None] * 2 - 1  # [2, 3, 1, 48, 64]
    convs = {name: m for name, m in vae.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))}
    vae.decode(vae.encode(frames).latent_dist.mean).sample.sum().backward()
    # the path: the layers the decoded frame depends on (the residual and attention branches' last layers are zero,
    # so what comes before them in the branch gets no gradient)
    path = {name for name, m in convs.items() if m.weight.grad is not None and m.weight.grad.abs().sum() > 0
            and m.weight.abs().sum() > 0}
    assert {"encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out"} <= path
    before = {name: m.weight.detach().clone() for name, m in convs.items()}

    def ratios():  # output spread / input spread of each layer on the path, about each channel's mean
        seen = {}
        hooks = [convs[n].register_forward_hook(lambda _, i, o, n=n: seen.__setitem__(n, (i[0], o))) for n in path]
        with torch.no_grad():
            vae.decode(vae.encode(frames).latent_dist.mean)
        for hook in hooks:
            hook.remove()
        centred = {n: [t - t.mean(dim=[0, *range(2, t.dim())], keepdim=True) for t in pair] for n, pair in seen.items()}
        return {n: (y.std() / x.std()).item() for n, (x, y) in centred.items()}

    assert min(ratios().values()) < 0.7  # PyTorch's initialisation shrinks the signal
    balance_signal_gains(vae, frames)
    assert all(abs(r - 1) < 1e-3 for r in ratios().values())
    assert all(torch.equal(m.weight, before[n]) for n, m in convs.items() if n not in path)


def test_compiled_training_steps_compute_what_eager_steps_do():
    from dataclasses import replace

    from diffusers import AutoencoderKLWan

    from wan_core.builtin.train_mini import compile_blocks, compiled, flow_loss, transformer

    plan = replace(PLANS["smoke"], compiled=True)

    def loss_and_grads(function, module, *inputs):
        module.zero_grad()
        loss = function(*inputs)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=4, z_dim=16)
    frames = torch.rand(2, 3, 1, 32, 32) * 2 - 1

    def reconstruction(x):  # as stage 1 trains: encode, decode, the distance to the frames
        return (vae.decode(vae.encode(x).latent_dist.mean).sample - x).pow(2).mean()

    eager = loss_and_grads(reconstruction, vae, frames)
    fused = loss_and_grads(compiled(reconstruction, plan), vae, frames)
    assert fused[0] == pytest.approx(eager[0], rel=1e-4)
    assert (fused[1] - eager[1]).norm() < 1e-3 * eager[1].norm()

    model = transformer(plan)
    x0, condition = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 20, 2, 4, 4)
    text, tokens = torch.randn(1, 512, plan.text_dim), torch.randn(1, 17, plan.clip_width)

    def step():  # the same noise and sigma each time
        return flow_loss(model, x0, condition, text, tokens, np.random.default_rng(0), 3.0)

    eager = loss_and_grads(step, model)
    compile_blocks(model, plan)
    fused = loss_and_grads(step, model)
    # bf16 autocast in both: inductor may round its fused casts in another order
    assert fused[0] == pytest.approx(eager[0], rel=2e-2)
    assert (fused[1] - eager[1]).norm() < 5e-2 * eager[1].norm()


def test_training_conditions_are_the_engines_first_frame_conditions(mini_i2v):
    """The grey condition latents the transformer trains on are the ones the engine feeds it at every length: per
    picture up to GREY_HEAD, past it the latents the grey clip settles on."""
    from wan_core.builtin.train_mini import GREY_HEAD, first_frames, precompute
    from wan_core.sampling.conditioning import first_frame_condition

    latent_frames = GREY_HEAD + 3
    pictures = torch.stack([torch.from_numpy(data.procedural_picture(s)).permute(2, 0, 1) for s in range(5)])
    raw_moves = torch.zeros(5, len(data.MOTIONS), 16, latent_frames, data.FRAME_H // 8, data.FRAME_W // 8)
    condition = precompute(mini_i2v, pictures, raw_moves).condition  # [5, 16, T, h, w]
    engine = torch.cat([first_frame_condition(mini_i2v, frame.permute(1, 2, 0), 1 + 4 * (latent_frames - 1))
                        for frame in first_frames(pictures)])[:, 4:]  # [5, 16, T, h, w]
    assert condition.shape == engine.shape
    assert torch.allclose(condition[:, :, :GREY_HEAD], engine[:, :, :GREY_HEAD], atol=1e-3)
    settled = engine[:4, :, GREY_HEAD:].mean(0)
    assert all(torch.allclose(c, settled, atol=1e-3) for c in condition[:, :, GREY_HEAD:])


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_training_refuses_a_bad_step_count_before_any_work(tmp_path, steps, capsys):
    out = tmp_path / "new"
    assert main(["train-mini", "--out", str(out), "--plan", "smoke", "--dit-steps", steps]) == 2
    assert "dit_steps" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "new.partial").exists()


# ---- the shipped files -------------------------------------------------------------------------------------------


def test_shipped_mini_files_are_comfyui_layout_and_small():
    paths = mini_model_paths()
    for component, (folder, name) in MINI_FILES.items():
        assert paths[component].parent.name == folder and paths[component].name == name
    total = sum(path.stat().st_size for path in paths.values())
    assert total < 30 * 2**20, f"the mini files take {total / 2**20:.1f} MiB"


def test_mini_loads_through_the_normal_loader(mini_i2v):
    config = mini_i2v.transformer.config
    assert mini_i2v.is_i2v and config.in_channels == 36 and config.image_dim is not None
    assert mini_i2v.vae.config.z_dim == 16 and mini_i2v.image_encoder is not None


def test_model_mini_on_the_command_line_and_mini_models_command(tmp_path):
    video = tmp_path / "out.mp4"
    assert main(["i2v", "--model", "mini", "--image", EXAMPLE, "--prompt",
                 "the camera pans slowly to the left", "--size", "160*96", "--frames", "5", "--steps", "2",
                 "--seed", "0", "--out", str(video)]) == 0
    assert video.stat().st_size > 0
    models_dir = tmp_path / "models"
    assert main(["mini-models", "--models-dir", str(models_dir)]) == 0
    for folder, name in MINI_FILES.values():
        assert (models_dir / folder / name).is_file()
    assert (models_dir / "loras" / "wan21_mini_sepia_lora.safetensors").is_file()


# ---- what it learnt ----------------------------------------------------------------------------------------------


def test_phase_correlation_measures_a_known_shift():
    """The benchmark's own ruler: a picture moved 5 px right reads +5."""
    picture = data.procedural_picture(HELD_OUT_SEED)[:96, :160]
    moved = np.roll(picture, 5, axis=1)
    assert phase_shift(picture, moved)[1] == pytest.approx(5, abs=0.3)


def _held_out_video(models, prompt: str, frames: int, steps: int):
    """(decoded frames [T, 96, 160, 3], the held-out picture fitted to 160x96), both numpy in 0..1."""
    from wan_core.sampling import conditioning
    from wan_core.sampling.params import SamplingParams
    from wan_core.sampling.pipeline import generate_i2v

    picture = torch.from_numpy(data.procedural_picture(HELD_OUT_SEED))[None]
    params = SamplingParams(prompt=prompt, width=data.FRAME_W, height=data.FRAME_H, num_frames=frames, steps=steps,
                            seed=0)
    video = conditioning.decode_latents(models, generate_i2v(models, picture, params).latents).numpy()
    return video, conditioning.fit_frames(picture, data.FRAME_W, data.FRAME_H)[0].numpy()


def test_on_a_held_out_picture_the_first_frame_is_the_picture_and_the_camera_pans_as_prompted(mini_i2v):
    """Issue 12's targets, loosely, on a picture and sentences training never saw, at the README's 81 frames: the first
    frame reproduces the picture at >= 20 dB PSNR (the benchmark's target is 22), "pan left" moves the content right
    and "pan right" moves it left by at least 8 px between the first and the last frame (32 in training), and not in
    one jump: halfway it is only part of the way (bench/bench_mini_quality.py measures the whole held-out set)."""
    from wan_core.builtin.mini_quality import psnr, shift_track, steadiness

    for motion, sign in (("pan_left", 1), ("pan_right", -1)):
        video, picture = _held_out_video(mini_i2v, data.HELD_OUT_PROMPTS[motion][0], frames=81, steps=30)
        assert psnr(video[0], picture) >= 20.0, motion
        track = shift_track(video)
        assert sign * steadiness(track)["total_px"] >= 8.0, (motion, track[::8])
        assert abs(track[len(track) // 2]) < abs(track[-1]), (motion, track[::8])  # halfway it has not arrived yet


def test_the_sepia_lora_grades_the_colours(mini_i2v):
    """At strength 1 the frames' colours come at least a third closer to a sepia grade than at strength 0."""
    from wan_core.builtin.mini_quality import off_sepia
    from wan_core.lora.stack import LoraEntry

    off = {}
    try:
        for strength in (0.0, 1.0):
            with mini_i2v.configured(loras=(LoraEntry.from_text(str(mini_model_paths()["lora"]), strength),)):
                off[strength] = off_sepia(_held_out_video(mini_i2v, data.HELD_OUT_PROMPTS["still"][0], 21, 12)[0])
    finally:
        with mini_i2v.configured(loras=()):  # the shared fixture's base weights back for the other tests
            pass
    assert off[1.0] <= (1 - 1 / 3) * off[0.0], off


def test_fast_mode_on_the_mini_model_skips_at_least_40_percent_and_keeps_the_frames_close(mini_i2v):
    """Issue 16's check on trained weights: 30 steps with guidance, fast mode against the full run with the same seed.
    The first fast run of this schedule calibrates MagCache for the mini model and skips nothing."""
    from wan_core.builtin.mini_quality import psnr
    from wan_core.sampling import conditioning
    from wan_core.sampling.params import SamplingParams
    from wan_core.sampling.pipeline import generate_i2v
    from wan_core.video_io import read_image

    image = read_image(EXAMPLE)
    params = SamplingParams(prompt="the camera pans slowly to the left", width=160, height=96, num_frames=21,
                            steps=30, seed=1)

    def frames(fast_mode: bool):
        with mini_i2v.configured(fast_mode=fast_mode):
            latents = generate_i2v(mini_i2v, image, params).latents
        return conditioning.decode_latents(mini_i2v, latents).numpy(), mini_i2v.passes

    full, full_passes = frames(False)
    frames(True)  # calibration
    fast, fast_passes = frames(True)
    assert full_passes.passes == fast_passes.passes == 60 and full_passes.skipped == 0
    assert fast_passes.skipped >= 0.4 * fast_passes.passes, fast_passes.line()
    assert psnr(fast, full) >= 25.0
