"""Stand-ins for the four hosted Wan 2.1 APIs: real HTTP on 127.0.0.1, following /work/shared/PROVIDERS.md.

A StandIn serves one provider. Its attributes script the job (how many polls until it ends, how it ends, which
errors come first) and it records every request, so a test can assert what was sent, or that nothing was.
Import the fixtures into a test module to use them: serve, remote_env, and the autouse no_key_in_output.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import json
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import torch

from wan_core.video_io import write_video

FAKE_KEY = "sk-wanflow-FAKE-7f3a9c1e-do-not-leak"
WRONG_KEY = "sk-wanflow-WRONG-0b5d2e88-do-not-leak"  # a key the stand-ins refuse, and echo back
PROVIDER_NAMES = ("wavespeed", "novita", "gmi", "highway")
RESULT_FRAMES, RESULT_HEIGHT, RESULT_WIDTH, RESULT_FPS = 9, 48, 64, 16
KEEP = object()  # StandIn.poll_status: answer with the job's real status

WAVESPEED_VARIANTS = {
    f"{task}-{variant}"
    for task, variants in {
        "i2v": [f"{res}{lora}{fast}" for res in ("480p", "720p") for lora in ("", "-lora") for fast in ("", "-ultra-fast")],
        "v2v": ["480p", "480p-lora", "480p-lora-ultra-fast"],
    }.items()
    for variant in variants
}
WAVESPEED_FIELDS = {
    "i2v": {"image", "prompt", "negative_prompt", "size", "num_inference_steps", "duration", "guidance_scale",
            "flow_shift", "seed", "enable_safety_checker"},
    "v2v": {"video", "prompt", "negative_prompt", "strength", "num_inference_steps", "duration", "guidance_scale",
            "flow_shift", "seed"},
}
NOVITA_FIELDS = {"prompt", "image_url", "negative_prompt", "width", "height", "loras", "seed", "steps",
                 "guidance_scale", "flow_shift", "enable_safety_checker", "fast_mode", "extra"}
GMI_MODELS = {"Wan-AI_Wan2.1-I2V-14B-480P", "Wan-AI_Wan2.1-I2V-14B-720P"}
GMI_IMAGE_FIELDS = {"path_to_image", "path_input_image"}  # documented under both names
GMI_FIELDS = {"prompt", "video_length", "prompt_extend", "seed"} | GMI_IMAGE_FIELDS
AUTH_REASONS = {"novita": "BILLING_AUTH_FAILED", "highway": "FAILED_TO_AUTH"}
# Status words by provider, for: waiting in the queue, running, done, failed.
STATUS_WORDS = {
    "wavespeed": ("created", "processing", "completed", "failed"),
    "novita": ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"),
    "highway": ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING", "TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"),
    "gmi": ("queued", "processing", "success", "failed"),
}


@functools.cache
def result_video_bytes() -> bytes:
    """A real small mp4, what every stand-in job produces."""
    ramp = torch.linspace(0, 1, RESULT_WIDTH).expand(RESULT_FRAMES, RESULT_HEIGHT, RESULT_WIDTH)
    frames = torch.stack([ramp, ramp.flip(-1), torch.full_like(ramp, 0.5)], dim=-1)
    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / "result.mp4", frames, fps=RESULT_FPS).read_bytes()


@dataclass
class Fault:
    """An error answer; in_envelope puts it in WaveSpeedAI's envelope under HTTP 200."""

    status: int
    reason: str = ""
    message: str = "stand-in fault"
    retry_after: str | None = None
    in_envelope: bool = False
    body: bytes | None = None  # sent as it is, with content_type, instead of the provider's error JSON
    content_type: str = "text/html"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    json: dict | None
    authorized: bool
    files: dict = field(default_factory=dict)  # multipart field -> (filename, content type, bytes)


class StandIn:
    """One provider's API. Script it through the attributes below before the engine calls it."""

    def __init__(self, provider: str):
        self.provider = provider
        self.polls_to_finish = 2  # the job ends on this poll
        self.outcome = "success"  # "success", "failed", "nsfw" or "never"
        self.fail_reason = "CUDA out of memory on the worker"
        self.faults: dict[str, list[Fault]] = {"upload": [], "submit": [], "poll": [], "download": []}
        self.video_bytes = result_video_bytes()
        self.video_content_type = "video/mp4"
        self.url_ttl = 30.0  # seconds a result URL stays valid
        self.reported_seed = 424242
        self.gmi_media_urls = False  # answer with outcome.media_urls[0].url instead of outcome.video_url
        self.poll_status = KEEP  # a status word that replaces the real one in every poll answer; None leaves it out
        self.download_cuts: list[int] = []  # each download in turn sends this many body bytes, then hangs up
        self.trickle_delay = 0.0  # seconds between the single bytes of a download body, as a host that trickles
        self.bytes_served = 0  # download body bytes written to the wire
        self.download_ranges: list[str | None] = []  # the Range header of each download
        self.requests: list[Recorded] = []
        self.jobs: dict[str, dict] = {}
        self.uploads: list[tuple[str, str, bytes]] = []
        self._links: dict[str, float] = {}  # result token -> expiry time
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls(self, action: str) -> list[Recorded]:
        """Recorded requests of one kind: upload, submit, poll or download."""
        return [request for request in self.requests if _route(self.provider, request.method, request.path)[0] == action]

    # -------------------------------------------------------------------------------- routing

    def answer(self, method: str, url: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(url)
        request = Recorded(method, parts.path, parse_qs(parts.query), None,
                           headers.get("Authorization") == f"Bearer {FAKE_KEY}")
        with self._lock:
            self.requests.append(request)
            action, job_id = _route(self.provider, method, parts.path)
            job_id = job_id or next(iter(request.query.get("task_id", [])), None)
            if action is None:
                return self._error(Fault(404, "MODEL_NOT_FOUND", f"no route {method} {parts.path}"))
            faults = self.faults[action]
            if faults:
                return self._error(faults.pop(0))
            if action == "download":
                return self._download(job_id, headers.get("Range"))
            if not request.authorized:
                # Some real APIs echo what they got; the engine must mask it.
                given = headers.get("Authorization", "").removeprefix("Bearer ")
                return self._error(Fault(401, AUTH_REASONS.get(self.provider, ""), f"invalid api key {given}"))
            if action == "poll":
                return self._poll(job_id)
            if action == "upload":
                return self._upload(request, headers.get("Content-Type"), body)
            return self._submit(request, body)

    def _upload(self, request: Recorded, content_type: str, body: bytes):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            request.files[name] = (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        if "file" not in request.files:
            return self._error(Fault(400, message="multipart field 'file' is missing"))
        self.uploads.append(request.files["file"])
        filename = request.files["file"][0]
        return self._json(self._envelope({"type": "file", "download_url": f"{self.base_url}/media/{filename}"}))

    def _submit(self, request: Recorded, body: bytes):
        request.json = payload = json.loads(body or b"{}")
        problem = self._payload_problem(request.path, payload)
        if problem:
            return self._error(Fault(400, "INVALID_REQUEST_BODY", problem))
        job_id = uuid.uuid4().hex[:12]
        self.jobs[job_id] = {"polls": 0, "payload": payload, "token": None}
        return self._json(self._submitted(job_id))

    def _poll(self, job_id: str):
        job = self.jobs.get(job_id)
        if job is None:
            return self._error(Fault(404, "TASK_NOT_FOUND", f"no job {job_id}"))
        job["polls"] += 1
        finished = self.outcome != "never" and job["polls"] >= self.polls_to_finish
        if finished and self.outcome != "failed" and job["token"] is None:
            job["token"] = uuid.uuid4().hex
            self._links[job["token"]] = time.monotonic() + self.url_ttl
        return self._json(self._job_answer(job_id, job, finished))

    def _download(self, token: str, byte_range: str | None):
        self.download_ranges.append(byte_range)
        if time.monotonic() > self._links.get(token, 0):
            xml = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return 403, {"Content-Type": "application/xml"}, xml
        start = int(re.fullmatch(r"bytes=(\d+)-", byte_range).group(1)) if byte_range else 0
        if not start:
            return 200, {"Content-Type": self.video_content_type}, self.video_bytes
        size = len(self.video_bytes)
        return 206, {"Content-Type": self.video_content_type, "Content-Range": f"bytes {start}-{size - 1}/{size}"}, \
            self.video_bytes[start:]

    def send_body(self, wfile, content: bytes) -> bool:
        """Write a download body as scripted (whole, cut off or trickled); False when the connection must close."""
        with self._lock:
            cut = self.download_cuts.pop(0) if self.download_cuts else None
        body = content if cut is None else content[:cut]
        pieces = [body[i:i + 1] for i in range(len(body))] if self.trickle_delay else [body]
        try:
            for piece in pieces:
                wfile.write(piece)
                wfile.flush()
                self.bytes_served += len(piece)
                time.sleep(self.trickle_delay)
        except OSError:  # the client gave up
            return False
        return cut is None

    # -------------------------------------------------------------------------------- provider dialects

    def _payload_problem(self, path: str, payload: dict) -> str | None:
        if self.provider == "wavespeed":
            variant = path.rsplit("/", 1)[-1]
            allowed = WAVESPEED_FIELDS[variant[:3]] | ({"loras"} if "-lora" in variant else set())
            required = {"prompt", "image" if variant.startswith("i2v") else "video"}
        elif self.provider == "gmi":
            if payload.get("model") not in GMI_MODELS:
                return f"unknown model {payload.get('model')!r}"
            payload = payload.get("payload") or {}
            allowed, required = GMI_FIELDS, {"prompt"}
            if not GMI_IMAGE_FIELDS & set(payload):
                return "the input image is missing"
        else:
            allowed, required = NOVITA_FIELDS, {"prompt", "image_url"}
        unknown, missing = set(payload) - allowed, required - set(payload)
        if unknown or missing:
            return f"unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        return None

    def _submitted(self, job_id: str) -> dict:
        if self.provider == "wavespeed":
            return self._envelope(self._wavespeed_data(job_id, STATUS_WORDS["wavespeed"][0], []))
        if self.provider == "gmi":
            now = int(time.time())
            return {"request_id": job_id, "model": "Wan-AI_Wan2.1-I2V-14B-480P", "status": "queued",
                    "created_at": now, "updated_at": now, "queued_at": now}
        return {"task_id": job_id}

    def _job_answer(self, job_id: str, job: dict, finished: bool) -> dict:
        queued, running, done, failed = STATUS_WORDS[self.provider]
        status = (failed if self.outcome == "failed" else done) if finished else (queued if job["polls"] == 1 else running)
        answer = self._job_answer_with(job_id, job, finished, status)
        if self.poll_status is not KEEP:
            holder = answer["data"] if self.provider == "wavespeed" else answer["task"] if "task" in answer else answer
            holder["status"] = self.poll_status
            if self.poll_status is None:
                del holder["status"]
        return answer

    def _job_answer_with(self, job_id: str, job: dict, finished: bool, status: str) -> dict:
        queued, running, done, failed = STATUS_WORDS[self.provider]
        video_url = f"{self.base_url}/results/{job['token']}.mp4" if job["token"] else None
        reason = self.fail_reason if status == failed else ""
        if self.provider == "wavespeed":
            data = self._wavespeed_data(job_id, status, [video_url] if video_url else [])
            data.update(error=reason, has_nsfw_contents=[self.outcome == "nsfw"] if video_url else [])
            return self._envelope(data)
        if self.provider == "gmi":
            outcome = {}
            if video_url:
                outcome = ({"media_urls": [{"url": video_url}]} if self.gmi_media_urls else {"video_url": video_url})
                outcome["thumbnail_image_url"] = f"{self.base_url}/results/thumb.png"
            return {"request_id": job_id, "status": status, "payload": job["payload"].get("payload"),
                    "outcome": outcome, **({"error": reason} if reason else {})}
        percent = 100 if finished else round(100 * job["polls"] / max(self.polls_to_finish, 2))
        return {
            "task": {"task_id": job_id, "task_type": "WAN_I2V", "status": status, "reason": reason, "eta": 0,
                     "progress_percent": percent},
            "videos": [{"video_url": video_url, "video_url_ttl": "3600", "video_type": "mp4"}] if video_url else [],
            "images": [],
            "extra": {"seed": str(self.reported_seed)},
        }

    def _wavespeed_data(self, job_id: str, status: str, outputs: list) -> dict:
        return {
            "id": job_id, "model": "wavespeed-ai/wan-2.1", "outputs": outputs,
            "urls": {"get": f"{self.base_url}/api/v3/predictions/{job_id}/result"},
            "has_nsfw_contents": [], "status": status, "created_at": "2025-01-01T00:00:00Z", "error": "",
            "timings": {"inference": 1234 if outputs else 0},
        }

    @staticmethod
    def _envelope(data: dict) -> dict:
        return {"code": 200, "message": "success", "data": data}

    def _error(self, fault: Fault):
        if fault.body is not None:
            return fault.status, {"Content-Type": fault.content_type}, fault.body
        if self.provider == "wavespeed":
            body = {"code": fault.status, "message": fault.message, "data": None}
        elif self.provider == "gmi":
            body = {"error": fault.message}
        else:
            body = {"code": fault.status, "reason": fault.reason, "message": fault.message, "metadata": {}}
        headers = {"Content-Type": "application/json"}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        status = 200 if fault.in_envelope else fault.status
        return status, headers, json.dumps(body).encode()

    @staticmethod
    def _json(body: dict):
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


# (method, path pattern, action); a "job" group holds the job id or result token.
ROUTES = {
    "wavespeed": [("POST", r"/api/v3/media/upload/binary", "upload"),
                  ("POST", r"/api/v3/wavespeed-ai/wan-2\.1/(%s)" % "|".join(sorted(WAVESPEED_VARIANTS)), "submit"),
                  ("GET", r"/api/v3/predictions/(?P<job>\w+)/result", "poll")],
    "novita": [("POST", r"/v3/async/wan-i2v", "submit"), ("GET", r"/v3/async/task-result", "poll")],
    "gmi": [("POST", r"/api/v1/ie/requestqueue/apikey/requests", "submit"),
            ("GET", r"/api/v1/ie/requestqueue/apikey/requests/(?P<job>\w+)", "poll")],
}
ROUTES["highway"] = ROUTES["novita"]
DOWNLOAD_ROUTE = ("GET", r"/results/(?P<job>\w+)\.mp4", "download")


def _route(provider: str, method: str, path: str) -> tuple[str | None, str | None]:
    """(action, job id or token from the path) for a request; (None, None) when no route matches."""
    for route_method, pattern, action in [*ROUTES[provider], DOWNLOAD_ROUTE]:
        match = re.fullmatch(pattern, path)
        if method == route_method and match:
            return action, match.groupdict().get("job")
    return None, None


def _handler_for(standin: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes; don't stall on delayed ACKs

        def do_GET(self):
            self._respond()

        def do_POST(self):
            self._respond()

        def _respond(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, content = standin.answer(self.command, self.path, self.headers, body)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            if _route(standin.provider, self.command, urlsplit(self.path).path)[0] == "download" and status < 300:
                self.close_connection = not standin.send_body(self.wfile, content)
            else:
                self.wfile.write(content)

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


@pytest.fixture(name="no_key_in_output", autouse=True)
def no_key_in_output_fixture(capfd):
    """Whatever a test printed, on stdout or stderr, from Python or a subprocess, shows no key."""
    yield
    out, err = capfd.readouterr()
    for key in (FAKE_KEY, WRONG_KEY):
        assert key not in out and key not in err, "an API key was printed"


@pytest.fixture(name="remote_env")
def remote_env_fixture(monkeypatch, tmp_path):
    """Only the fake key, and no keys file, whatever the machine running the tests has configured."""
    for name in PROVIDER_NAMES:
        monkeypatch.delenv(f"{name.upper()}_API_KEY", raising=False)
        monkeypatch.delenv(f"{name.upper()}_BASE_URL", raising=False)
    monkeypatch.setenv("WANFLOW_KEYS_FILE", str(tmp_path / "no-keys.json"))
    return monkeypatch


@pytest.fixture(name="serve")
def serve_fixture(remote_env):
    """serve(provider) -> a started StandIn, with the provider's base URL and the fake key in the environment."""
    started = []

    def start(provider: str) -> StandIn:
        standin = StandIn(provider).start()
        started.append(standin)
        remote_env.setenv(f"{provider.upper()}_BASE_URL", standin.base_url)
        remote_env.setenv(f"{provider.upper()}_API_KEY", FAKE_KEY)
        return standin

    yield start
    for standin in started:
        standin.stop()
