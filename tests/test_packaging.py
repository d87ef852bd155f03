"""What the ComfyUI registry and ComfyUI-Manager read: pyproject.toml's [tool.comfy] and requirements.txt."""

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_BRINGS = {"torch", "numpy", "pillow"}


def _name(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-")


def test_comfy_registry_accepts_the_project_file():
    result = subprocess.run(["comfy", "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "checks passed" in result.stdout + result.stderr, result.stdout + result.stderr
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["comfy"]["PublisherId"]


def test_requirements_match_the_project_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert sorted(requirements) == sorted(dep for dep in project if _name(dep) not in COMFYUI_BRINGS)
