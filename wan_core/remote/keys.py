"""API keys: from the provider's environment variable or the user's keys file, and masked in every error."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import RemoteError, RemoteInputError
from .identity import ProviderIdentity

KEY_MASK = "***"


def keys_file() -> Path:
    """The user's key file: outside any workflow, so keys never travel with one."""
    return Path(os.environ.get("WANFLOW_KEYS_FILE") or Path.home() / ".config" / "wanflow" / "keys.json")


def load_api_key(provider: ProviderIdentity) -> str:
    """The key from the provider's environment variable, else from the keys file."""
    key = os.environ.get(provider.key_env, "").strip()
    if key:
        return key
    path = keys_file()
    stored = _read_keys_file(path, provider.name).get(provider.name)
    if isinstance(stored, str) and stored.strip():
        return stored.strip()
    raise RemoteInputError(
        f"no API key for {provider.label}: set {provider.key_env} or add \"{provider.name}\": \"<key>\" to {path}"
    )


def _read_keys_file(path: Path, name: str) -> dict:
    if not path.is_file():
        return {}
    expected = f'a JSON object such as {{"{name}": "<key>"}}'
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # neither message quotes the file's content
        raise RemoteInputError(f"keys file {str(path)!r} is not readable ({error}): expected {expected}") from None
    if not isinstance(keys, dict):
        raise RemoteInputError(f"keys file {str(path)!r} holds a {type(keys).__name__}: expected {expected}")
    return keys


def mask_key(text: str, key: str) -> str:
    return text.replace(key, KEY_MASK) if key else text


@contextmanager
def key_masked_errors(key: str):
    """Whatever a provider echoes back (an error body, a failure reason) never shows the key."""
    try:
        yield
    except RemoteError as error:
        error.args = tuple(mask_key(str(arg), key) for arg in error.args)
        raise
