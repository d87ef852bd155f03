"""wan_core/adapters.py holds every private library name WanFlow uses: each must still exist, and a release that
moves one fails here by name. Also: nothing outside that module uses a private name of a library object."""

import importlib
import re
from pathlib import Path

import pytest
import torch

from wan_core import adapters

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module,name", adapters.PRIVATE_NAMES)
def test_every_private_name_the_adapters_use_still_exists(module, name):
    owner = importlib.import_module(module)
    *path, attribute = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    assert hasattr(owner, attribute), (
        f"{module}.{name} is gone in this release: update wan_core/adapters.py, the one place that uses it")


def test_a_model_attention_backend_leaves_the_process_default_alone(tiny_t2v):
    registry = getattr(importlib.import_module("diffusers.models.attention_dispatch"), "_AttentionBackendRegistry")
    default = registry.get_active_backend()[0]
    adapters.set_model_attention_backend(tiny_t2v.transformer, "native")
    try:
        assert registry.get_active_backend()[0] == default
    finally:
        tiny_t2v.transformer.reset_attention_backend()


def test_uncompile_returns_a_module_to_eager_mode():
    module = torch.nn.Linear(2, 2)
    module.compile()
    adapters.uncompile(module)
    assert module(torch.ones(1, 2)).shape == (1, 2) and not torch.compiler.is_compiling()
    assert getattr(module, "_compiled_call_impl") is None


def test_no_private_library_name_outside_the_adapters():
    """`obj._name` where obj is not self or cls: a library object's private attribute (our own modules' private
    helpers are called by plain name, never through an object)."""
    private = re.compile(r"(\w+)\._[a-z]")
    offenders = []
    for folder in ("wan_core", "nodes", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "wan_core" / "adapters.py" or path == Path(__file__):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                code = re.sub(r"(['\"]).*?\1", "''", code)  # names inside strings are text, not attribute access
                if any(match[1] not in ("self", "cls") for match in private.finditer(code)):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private library names outside wan_core/adapters.py:\n" + "\n".join(offenders)
