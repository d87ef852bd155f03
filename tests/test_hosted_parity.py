"""The job the hosted APIs run, locally: the picture's own shape at the resolution's area (auto size), and a v2v
source taken by time at 16 fps."""

import pytest
import torch
from PIL import Image

from wan_core.cli.main import main
from wan_core.errors import WanInputError
from wan_core.sampling.conditioning import fit_frames
from wan_core.sampling.params import SamplingParams, auto_size, source_frame_count
from wan_core.video_io import read_video, resample_to_fps, write_video


@pytest.mark.parametrize("picture, resolution, size", [
    ((1024, 768), "480p", (720, 544)),  # the numbers: Wan's reference formula on a 4:3 photo
    ((1024, 768), "720p", (1104, 816)),
    ((768, 1024), "480p", (544, 720)),
    ((1920, 1080), "480p", (832, 464)),  # 468.3 rounds down to a whole patch
    ((1920, 1080), "720p", (1280, 720)),
    ((500, 500), "480p", (624, 624)),
])
def test_auto_size_keeps_the_aspect_ratio_at_the_resolution_area(picture, resolution, size):
    assert auto_size(*picture, resolution) == size
    area = {"480p": 832 * 480, "720p": 1280 * 720}[resolution]
    assert size[0] * size[1] <= area and size[0] % 16 == 0 and size[1] % 16 == 0


def test_auto_size_refuses_what_it_cannot_make():
    with pytest.raises(WanInputError, match="resolution='1080p' is not allowed: choose one of 480p, 720p"):
        auto_size(640, 480, "1080p")
    with pytest.raises(WanInputError, match="gives height 3024, outside 64 to 1920: give an explicit size"):
        auto_size(100, 1000, "720p")


def marked_picture() -> torch.Tensor:
    """A 4:3 grey picture [1, 120, 160, 3] with a white top band and a black bottom band."""
    picture = torch.full((1, 120, 160, 3), 0.5)
    picture[:, :10], picture[:, -10:] = 1.0, 0.0
    return picture


def test_an_auto_size_keeps_the_whole_picture_and_an_explicit_size_crops():
    picture = marked_picture()
    resized = fit_frames(picture, *auto_size(160, 120, "480p"), fit="resize")
    assert resized.shape == (1, 544, 720, 3)
    assert resized[0, 0].mean() > 0.95 and resized[0, -1].mean() < 0.05  # both bands are still there
    cropped = fit_frames(picture, 832, 480)
    assert cropped.shape == (1, 480, 832, 3)
    assert abs(cropped[0, 0].mean() - 0.5) < 0.05 and abs(cropped[0, -1].mean() - 0.5) < 0.05  # cut off


def test_i2v_without_a_size_follows_the_picture(tiny_cache, tmp_path):
    picture = tmp_path / "photo.png"
    Image.new("RGB", (160, 120), (90, 140, 200)).save(picture)
    out = tmp_path / "out.mp4"
    assert main(["i2v", "--model", "tiny", "--image", str(picture), "--prompt", "a lake", "--frames", "1",
                 "--steps", "1", "--seed", "1", "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (1, 544, 720, 3)


def test_resampling_takes_the_frame_on_screen_at_each_16_fps_moment():
    frames = torch.arange(90, dtype=torch.float32).view(90, 1, 1, 1).expand(90, 2, 2, 3)  # 3 s at 30 fps
    resampled = resample_to_fps(frames, 30.0)
    assert resampled.shape[0] == 48  # 3 s at 16 fps
    assert resampled[:, 0, 0, 0].tolist() == [int(i * 30 / 16) for i in range(48)]
    assert resample_to_fps(frames, 16.0) is frames
    assert resample_to_fps(frames[:5], 8.0)[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(WanInputError, match="fps=0.0 is not a frame rate"):
        resample_to_fps(frames, 0.0)


def test_a_shorter_source_gives_what_it_has_and_says_so():
    assert source_frame_count(48) == (45, "the source has 48 frames at 16 fps (3.00 s): using 45 of the 81 asked for")
    assert source_frame_count(200) == (81, None)
    assert source_frame_count(200, 161) == (161, None)


def test_v2v_takes_seconds_of_the_source(tiny_cache, tmp_path, capsys):
    """A 3-second 30 fps source with no frame count gives 3 s at 16 fps; --duration counts source seconds."""
    source = write_video(tmp_path / "source.mp4", torch.rand(90, 64, 80, 3, generator=torch.Generator().manual_seed(1)),
                         fps=30)
    out = tmp_path / "out.mp4"
    common = ["v2v", "--model", "tiny", "--video", str(source), "--prompt", "rain", "--size", "80*64", "--steps", "1"]
    assert main([*common, "--out", str(out)]) == 0
    assert "using 45 of the 81 asked for" in capsys.readouterr().err
    video, fps = read_video(out)
    assert video.shape[0] == 45 and fps == 16
    assert main([*common, "--duration", "2", "--out", str(out)]) == 0
    assert read_video(out)[0].shape[0] == 33


def test_long_video_settings_are_checked():
    with pytest.raises(WanInputError, match="context_overlap=6 is not a multiple of 4"):
        SamplingParams(prompt="x", context_overlap=6)
    with pytest.raises(WanInputError, match="context_frames=80 is not of the form 4n\\+1"):
        SamplingParams(prompt="x", context_frames=80)
    with pytest.raises(WanInputError, match="riflex=True applies to one-pass runs"):
        SamplingParams(prompt="x", num_frames=161, riflex=True)
    assert SamplingParams(prompt="x", num_frames=161, riflex=True, one_pass=True).windowed is False
    assert SamplingParams(prompt="x", num_frames=161).windowed and not SamplingParams(prompt="x").windowed
