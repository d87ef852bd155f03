"""GMI Cloud: Wan 2.1 I2V through its request queue; the resolution picks the model, few parameters besides."""

from __future__ import annotations

from .http import ApiClient
from .provider import JobState, JobStatus, Provider, answer_field, reported_seed
from .request import SIZE_RESOLUTIONS, Param, RemoteRequest, payload_fields, png_data_uri, resolution_of

REQUESTS_PATH = "/api/v1/ie/requestqueue/apikey/requests"
MODELS = {"480p": "Wan-AI_Wan2.1-I2V-14B-480P", "720p": "Wan-AI_Wan2.1-I2V-14B-720P"}
# GMI documents the image field under both names, so both carry it; the model reads the one it knows.
IMAGE_FIELDS = ("path_to_image", "path_input_image")

PARAMS = {
    "prompt": Param("prompt"),
    "size": Param(choices=tuple(SIZE_RESOLUTIONS)),  # picks the model; the output follows the image's orientation
    "duration": Param("video_length", choices=(5, 10)),
    "seed": Param("seed", range=(-1, 2**31 - 1)),
    "prompt_extend": Param("prompt_extend"),
}
STATUSES = {
    "queued": JobState.QUEUED,
    "dispatched": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "cancelled": JobState.FAILED,
}


class GmiProvider(Provider):
    statuses = STATUSES

    def parameters(self, task: str):
        return PARAMS

    def submit(self, client: ApiClient, request: RemoteRequest) -> str:
        # Whether GMI wants a URL or inline data is not settled: a URL goes as given, a tensor as a PNG data URI.
        image = request.image_url or png_data_uri(request.image)
        payload = {**payload_fields(request, PARAMS), **dict.fromkeys(IMAGE_FIELDS, image)}
        body = {"model": MODELS[resolution_of(request.size)], "payload": payload}
        return answer_field(client.post_json(REQUESTS_PATH, body), "request_id", self, f"POST {REQUESTS_PATH}")

    def poll(self, client: ApiClient, job_id: str) -> JobStatus:
        answer = client.get_json(f"{REQUESTS_PATH}/{job_id}")
        outcome = answer.get("outcome") or {}
        status = answer.get("status")
        return JobStatus(
            state=self.state_of(status),
            status=status,
            video_url=outcome.get("video_url") or _first_media_url(outcome),
            # GMI does not document where a failure's reason goes, so the usual places are tried in turn.
            reason=answer.get("error") or outcome.get("error") or answer.get("message") or None,
            seed=reported_seed(outcome.get("seed", (answer.get("payload") or {}).get("seed"))),
        )


def _first_media_url(outcome: dict) -> str | None:
    """Some GMI models answer with outcome.media_urls[0].url instead of outcome.video_url."""
    media = outcome.get("media_urls") or [{}]
    return media[0].get("url")


# GMI documents 429 and 503 as answers to retry: the request was refused, so no job exists.
GMI = GmiProvider("gmi", "GMI Cloud", "https://console.gmicloud.ai", refused_submit_statuses={429, 503})
