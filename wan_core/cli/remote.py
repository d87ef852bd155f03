"""`python -m wan_core remote --provider NAME {i2v,v2v,fetch} ...`: run one job on a hosted API and save its mp4, or
fetch the mp4 of a job submitted before by its id."""

from __future__ import annotations

import argparse
import sys

from ..lora.stack import stack_from_options
from ..remote import (
    PROVIDERS,
    RemoteCancelled,
    RemoteError,
    RemoteInputError,
    RemoteProgress,
    RemoteRequest,
    WaitSettings,
    fetch_remote,
    run_remote,
)
from ..remote.request import hosted_size
from ..video_io import check_output_path, read_image, read_video

REPEAT_PROGRESS_SECONDS = 10.0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "remote",
        help="run I2V or V2V on a hosted Wan 2.1 API",
        description="Run Wan 2.1 on a hosted API. The key comes from <PROVIDER>_API_KEY or the keys file "
        "(~/.config/wanflow/keys.json, or WANFLOW_KEYS_FILE).",
    )
    parser.add_argument("--provider", required=True, choices=list(PROVIDERS))
    tasks = parser.add_subparsers(dest="task", required=True)
    output = _output_options()
    shared = _shared_options()

    i2v = tasks.add_parser("i2v", parents=[shared, output], help="image to video")
    image = i2v.add_mutually_exclusive_group(required=True)
    image.add_argument("--image", help="image file (uploaded where the provider allows it)")
    image.add_argument("--image-url", help="http(s) URL of the image")

    v2v = tasks.add_parser("v2v", parents=[shared, output], help="video to video")
    video = v2v.add_mutually_exclusive_group(required=True)
    video.add_argument("--video", help="video file (re-encoded to mp4 and uploaded)")
    video.add_argument("--video-url", help="http(s) URL of the video")
    v2v.add_argument("--strength", type=float, help="how far to move from the source video, 0.1 to 1 (0.9)")

    fetch = tasks.add_parser("fetch", parents=[output], help="wait for a job submitted before and save its mp4",
                             description="The mp4 of a job submitted before (an interrupted or timed-out run prints "
                                         "its id), waited for and downloaded as a run does it.")
    fetch.add_argument("job_id", metavar="JOB_ID")

    parser.set_defaults(run=run)


def _output_options() -> argparse.ArgumentParser:
    """Where the mp4 goes and how long to wait for it: the same for a new job and for fetching one."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--out", required=True, help="mp4 to write, exactly as the provider sent it")
    options.add_argument("--timeout", type=float, default=WaitSettings.total_timeout,
                         help="total seconds for the job, submit to the last downloaded byte (1800)")
    options.add_argument("--poll-interval", type=float, default=WaitSettings.poll_interval, help="seconds between polls (3)")
    return options


def _shared_options() -> argparse.ArgumentParser:
    """Options of both tasks; left unset they keep RemoteRequest's defaults, which every provider accepts."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--prompt", required=True)
    options.add_argument("--negative-prompt")
    size = options.add_mutually_exclusive_group()
    size.add_argument("--size", help="W*H: 832*480, 480*832, 1280*720 or 720*1280")
    size.add_argument("--resolution", choices=("480p", "720p"),
                      help="the size of this resolution in the picture's orientation (the provider keeps the "
                           "picture's aspect ratio at its area)")
    options.add_argument("--duration", type=int, help="seconds (5)")
    options.add_argument("--steps", type=int, help="sampling steps (30)")
    options.add_argument("--guidance-scale", type=float, help="(5)")
    options.add_argument("--flow-shift", type=float, help="(the provider's default for the resolution)")
    options.add_argument("--seed", type=int, help="-1 for random (-1)")
    options.add_argument("--lora", action="append", default=[], metavar="SOURCE[:SCALE]",
                         help="hub repo id or URL, scale 0 to 4 (1); repeat for up to 3")
    options.add_argument("--fast", action="store_true", default=None, help="the provider's fast mode")
    options.add_argument("--no-safety-checker", dest="safety_checker", action="store_false", default=None)
    options.add_argument("--prompt-extend", action="store_true", default=None, help="let the provider rewrite the prompt")
    return options


def run(args) -> int:
    inputs = {"--image": getattr(args, "image", None), "--video": getattr(args, "video", None)}
    check_output_path(args.out, "--out", inputs)
    settings = WaitSettings(total_timeout=args.timeout, poll_interval=args.poll_interval)
    options = {"out_path": args.out, "settings": settings, "on_progress": ProgressPrinter()}
    try:
        if args.task == "fetch":
            result = fetch_remote(args.provider, args.job_id, **options)
        else:
            result = run_remote(args.provider, _request_from(args), **options)
    except RemoteInputError:
        raise  # wan_core.cli reports input errors with exit code 2
    except RemoteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 130 if isinstance(error, RemoteCancelled) else 1
    print(result.info)
    print(f"saved: {result.video_path}")
    return 0


def _request_from(args) -> RemoteRequest:
    media = _media_from(args)
    if args.resolution:
        args.size = hosted_size(args.task, args.resolution, media.get("image", media.get("video")))
    values = {
        "task": args.task,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "size": args.size.replace("x", "*") if args.size else None,
        "duration": args.duration,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "flow_shift": args.flow_shift,
        "seed": args.seed,
        "loras": stack_from_options(args.lora),
        "fast": args.fast,
        "safety_checker": args.safety_checker,
        "prompt_extend": args.prompt_extend,
        "strength": getattr(args, "strength", None),  # v2v only
        **media,
    }
    return RemoteRequest(**{name: value for name, value in values.items() if value is not None})


def _media_from(args) -> dict:
    if args.task == "i2v":
        image = read_image(args.image, name="--image") if args.image else None
        return {"image": image, "image_url": args.image_url}
    if not args.video:
        return {"video_url": args.video_url}
    frames, fps = read_video(args.video, name="--video")
    return {"video": frames, "video_fps": fps}


class ProgressPrinter:
    """Prints a line when the status or percent changes, and at least every REPEAT_PROGRESS_SECONDS."""

    def __init__(self):
        self._shown = None
        self._shown_at = float("-inf")

    def __call__(self, progress: RemoteProgress) -> None:
        state = (progress.status, progress.percent)
        if state == self._shown and progress.elapsed - self._shown_at < REPEAT_PROGRESS_SECONDS:
            return
        self._shown, self._shown_at = state, progress.elapsed
        print(progress.line(), flush=True)
