"""The only place that reaches into diffusers', transformers' and torch's private names.

Each function here stands for something those libraries do but publish no API for. tests/test_adapters.py checks
that every name used here still exists, so a release that moves one fails there, naming it, instead of somewhere
deep in a run. Nothing else in wan_core, nodes, tests or bench uses a library's private name.
"""

from __future__ import annotations

import torch

# (module, attribute) pairs this module reads; the test imports each and says which one a release moved
PRIVATE_NAMES = (
    ("diffusers.models.attention_dispatch", "_check_attention_backend_requirements"),
    ("diffusers.models.attention_dispatch", "_AttentionBackendRegistry"),
    ("diffusers.models.modeling_utils", "ModelMixin._keep_in_fp32_modules"),
    ("transformers.modeling_utils", "PreTrainedModel._keep_in_fp32_modules"),
    ("torch.nn", "Module._compiled_call_impl"),
)


def attention_backend_problem(diffusers_name: str) -> str | None:
    """Why diffusers cannot run this attention backend here (a package missing or too old), or None.

    set_attention_backend runs the same check, but only on a built model; callers refuse a setting before any
    weights are read."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(diffusers_name))
    except RuntimeError as error:  # its message names the package to install
        return str(error)
    return None


def set_model_attention_backend(model, diffusers_name: str) -> None:
    """model.set_attention_backend(name) for this model alone.

    diffusers' set_attention_backend also makes the backend the process-wide default, which every other diffusers
    model, and a processor reset to "default" later, would then use; that default is put back as it was."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry.get_active_backend()[0]
    try:
        model.set_attention_backend(diffusers_name)
    finally:
        _AttentionBackendRegistry.set_active_backend(default)


def keep_in_fp32_modules(model) -> tuple[str, ...]:
    """The module names a diffusers or transformers model class (or instance) computes in float32 whatever the
    dtype; from_pretrained honours them, and a loader that builds the model itself must too."""
    return tuple(getattr(model, "_keep_in_fp32_modules", None) or ())


def uncompile(module: torch.nn.Module) -> None:
    """Undo nn.Module.compile(): the module runs eagerly again. torch has no public call for it; compile() keeps
    the compiled callable in _compiled_call_impl, and __call__ uses the plain forward when that is None."""
    module._compiled_call_impl = None


def enable_context_parallelism(model, config) -> None:
    """model.enable_parallelism(config=config), also on a machine without an accelerator (gloo processes on CPUs).

    diffusers 0.42 picks each rank's device as `rank % torch.accelerator.device_count()`, a division by zero where
    torch sees no accelerator; there every rank computes on the CPU whatever that index, so the count is read as 1
    for the duration of the call. tests/test_parallel.py says when diffusers no longer needs this."""
    if torch.accelerator.device_count() > 0:
        model.enable_parallelism(config=config)
        return
    device_count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        model.enable_parallelism(config=config)
    finally:
        torch.accelerator.device_count = device_count
