"""WaveSpeedAI: I2V at 480p/720p and V2V at 480p; resolution, LoRAs and fast mode pick the model variant."""

from __future__ import annotations

from .errors import RemoteInputError
from .http import ApiClient
from .provider import JobState, JobStatus, Provider, answer_field, reported_seed
from .request import (
    SIZE_RESOLUTIONS,
    Param,
    RemoteRequest,
    lora_payload,
    mp4_bytes,
    payload_fields,
    png_bytes,
    resolution_of,
)

MODEL_PATH = "/api/v3/wavespeed-ai/wan-2.1"
RESULT_PATH = "/api/v3/predictions/{job_id}/result"
UPLOAD_PATH = "/api/v3/media/upload/binary"
MAX_UPLOAD_MB = {"image": 20, "video": 100}

SHARED_PARAMS = {
    "prompt": Param("prompt"),
    "negative_prompt": Param("negative_prompt"),
    "steps": Param("num_inference_steps", range=(1, 40)),
    "duration": Param("duration", range=(5, 10)),
    "guidance_scale": Param("guidance_scale", range=(0, 20)),
    "flow_shift": Param("flow_shift", range=(1, 10)),
    "seed": Param("seed", range=(-1, 2**31 - 1)),
    "loras": Param("loras", length=(0, 3), encode=lora_payload),
    "fast": Param(),  # the -ultra-fast variant
}
PARAMS = {
    "i2v": {
        **SHARED_PARAMS,
        "size": Param("size", choices=tuple(SIZE_RESOLUTIONS)),
        "safety_checker": Param("enable_safety_checker"),
    },
    "v2v": {**SHARED_PARAMS, "strength": Param("strength", range=(0.1, 1.0))},
}
STATUSES = {
    "created": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "cancelled": JobState.FAILED,
    "timeout": JobState.FAILED,
}


def model_variant(request: RemoteRequest) -> str:
    """e.g. 'i2v-720p-lora-ultra-fast'. V2V is 480p only, and its only ultra-fast variant is the LoRA one."""
    with_loras = bool(request.loras) or (request.task == "v2v" and request.fast)
    return (
        f"{request.task}-{resolution_of(request.size)}"
        + ("-lora" if with_loras else "")
        + ("-ultra-fast" if request.fast else "")
    )


class WaveSpeedProvider(Provider):
    tasks = ("i2v", "v2v")
    statuses = STATUSES

    def parameters(self, task: str):
        return PARAMS[task]

    def submit(self, client: ApiClient, request: RemoteRequest) -> str:
        payload = payload_fields(request, self.parameters(request.task))
        media_field = "image" if request.task == "i2v" else "video"
        payload[media_field] = self._media_url(client, request)
        path = f"{MODEL_PATH}/{model_variant(request)}"
        action = f"POST {path}"
        return answer_field(self._data(client, client.post_json(path, payload), action), "id", self, action)

    def poll(self, client: ApiClient, job_id: str) -> JobStatus:
        path = RESULT_PATH.format(job_id=job_id)
        data = self._data(client, client.get_json(path), f"GET {path}")
        status = data.get("status")
        inference_ms = (data.get("timings") or {}).get("inference")
        return JobStatus(
            state=self.state_of(status),
            status=status,
            video_url=next(iter(data.get("outputs") or []), None),
            reason=data.get("error") or None,
            nsfw=any(data.get("has_nsfw_contents") or []),
            seed=reported_seed(data.get("seed")),
            inference_seconds=inference_ms / 1000 if inference_ms else None,
        )

    def _data(self, client: ApiClient, answer: dict, action: str) -> dict:
        """The envelope's data; an envelope code other than 200 is a failure even under HTTP 200."""
        code = answer.get("code")
        if code != 200:
            raise client.error_for(code if isinstance(code, int) else 502, answer, action)
        return answer_field(answer, "data", self, action, dict)

    def _media_url(self, client: ApiClient, request: RemoteRequest) -> str:
        """The URL given, or the tensor uploaded: an image as PNG, frames as mp4."""
        if request.task == "i2v":
            if request.image_url:
                return request.image_url
            return self._upload(client, "image", "image.png", png_bytes(request.image), "image/png")
        if request.video_url:
            return request.video_url
        return self._upload(client, "video", "video.mp4", mp4_bytes(request.video, request.video_fps), "video/mp4")

    def _upload(self, client: ApiClient, kind: str, filename: str, content: bytes, mime: str) -> str:
        limit_mb = MAX_UPLOAD_MB[kind]
        if len(content) > limit_mb * 2**20:
            raise RemoteInputError(
                f"{kind} is {len(content) / 2**20:.1f} MB as {filename}: {self.label} uploads take at most {limit_mb} MB"
            )
        # An upload only stores a file, so repeating it after a failure is safe.
        answer = client.post_json(UPLOAD_PATH, files={"file": (filename, content, mime)}, idempotent=True)
        action = f"POST {UPLOAD_PATH}"
        return answer_field(self._data(client, answer, action), "download_url", self, action)


WAVESPEED = WaveSpeedProvider("wavespeed", "WaveSpeedAI", "https://api.wavespeed.ai")
