"""Where WanFlow keeps what it writes or downloads once: $WANFLOW_CACHE, else ~/.cache/wanflow."""

import os
from pathlib import Path


def wanflow_cache_dir() -> Path:
    return Path(os.environ.get("WANFLOW_CACHE") or Path.home() / ".cache" / "wanflow")
