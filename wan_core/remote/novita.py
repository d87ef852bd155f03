"""Novita AI and HighwayAPI: one API family (same schema and answers), I2V only, the image given by URL."""

from __future__ import annotations

from .errors import AuthError, OutOfCreditError
from .http import ApiClient
from .provider import JobState, JobStatus, Provider, answer_field, reported_seed
from .request import SIZE_RESOLUTIONS, Param, RemoteRequest, lora_payload, payload_fields

SUBMIT_PATH = "/v3/async/wan-i2v"
RESULT_PATH = "/v3/async/task-result"

PARAMS = {
    "prompt": Param("prompt", length=(1, 2000)),
    "negative_prompt": Param("negative_prompt", length=(0, 2000)),
    "size": Param(choices=tuple(SIZE_RESOLUTIONS)),  # sent as width and height
    "loras": Param("loras", length=(0, 3), encode=lora_payload),
    "seed": Param("seed", range=(-1, 9_999_999_999)),
    "steps": Param("steps", range=(1, 40)),
    "guidance_scale": Param("guidance_scale", range=(0, 10)),
    "flow_shift": Param("flow_shift", range=(1, 10)),
    "safety_checker": Param("enable_safety_checker"),
    "fast": Param("fast_mode"),
}
STATUSES = {
    "TASK_STATUS_QUEUED": JobState.QUEUED,
    "TASK_STATUS_PROCESSING": JobState.RUNNING,
    "TASK_STATUS_SUCCEED": JobState.SUCCEEDED,
    "TASK_STATUS_FAILED": JobState.FAILED,
}


class NovitaStyleProvider(Provider):
    """Duration is fixed at 5 s here, so it is not in the table: any other duration is refused."""

    statuses = STATUSES
    url_only = True  # no public upload, and a data URI is not documented for Wan 2.1

    def parameters(self, task: str):
        return PARAMS

    def submit(self, client: ApiClient, request: RemoteRequest) -> str:
        payload = {**payload_fields(request, PARAMS), "image_url": request.image_url}
        if request.size:
            width, height = request.size.split("*")
            payload.update(width=int(width), height=int(height))
        return answer_field(client.post_json(SUBMIT_PATH, payload), "task_id", self, f"POST {SUBMIT_PATH}")

    def poll(self, client: ApiClient, job_id: str) -> JobStatus:
        answer = client.get_json(RESULT_PATH, params={"task_id": job_id})
        task = answer_field(answer, "task", self, f"GET {RESULT_PATH}", dict)
        status = task.get("status")
        videos = answer.get("videos") or [{}]
        return JobStatus(
            state=self.state_of(status),
            status=status,
            percent=task.get("progress_percent"),
            video_url=videos[0].get("video_url"),
            reason=task.get("reason") or None,
            seed=reported_seed((answer.get("extra") or {}).get("seed")),
        )


NOVITA = NovitaStyleProvider(
    "novita",
    "Novita AI",
    "https://api.novita.ai",
    error_reasons={"BILLING_BALANCE_NOT_ENOUGH": OutOfCreditError, "BILLING_AUTH_FAILED": AuthError},
)
HIGHWAY = NovitaStyleProvider(
    "highway",
    "HighwayAPI",
    "https://api.highwayapi.ai",
    error_reasons={"NOT_ENOUGH_BALANCE": OutOfCreditError, "INVALID_API_KEY": AuthError, "FAILED_TO_AUTH": AuthError},
)
