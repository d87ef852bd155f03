"""What the ComfyUI registry and ComfyUI-Manager read: pyproject.toml's [tool.comfy] and requirements.txt."""

import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def _installed_requirements(name: str, extras: set[str] = frozenset()) -> set[str]:
    """Names of the installed distributions `name` (with `extras`) depends on, transitively."""
    wanted, seen = [(name, set(extras))], set()
    while wanted:
        current, current_extras = wanted.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = metadata.requires(current) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            environment = [{"extra": extra} for extra in current_extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environment):
                wanted.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return seen - {name}


def test_installing_the_tests_keeps_torchvision_out():
    """PyPI's torchvision is a CUDA build that replaces the CPU torch; ComfyUI's copy is installed apart."""
    assert "torch" in _installed_requirements("wanflow", {"test"})
    assert "torchvision" not in _installed_requirements("wanflow", {"test"})
