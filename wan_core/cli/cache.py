"""`python -m wan_core cache info|clear`: what WanFlow's prompt cache holds on disk, and emptying it."""

from __future__ import annotations


def add_parser(subparsers):
    cache = subparsers.add_parser("cache", help="the on-disk prompt cache ($WANFLOW_CACHE/prompts)")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: where it is, how many prompts and how much space; clear: remove them all")
    cache.set_defaults(run=run_cache)


def run_cache(args) -> int:
    from ..sampling.prompt_cache import clear_folder, disk_folder, disk_limit_bytes

    folder = disk_folder()
    if args.action == "clear":
        print(f"removed {clear_folder(folder)} cached prompts from {folder}")
        return 0
    files = list(folder.glob("*.safetensors"))
    size = sum(path.stat().st_size for path in files)
    print(f"{folder}: {len(files)} cached prompts, {size / 2**20:.1f} MiB of at most "
          f"{disk_limit_bytes() / 2**20:.0f} MiB ($WANFLOW_PROMPT_CACHE_MB)")
    return 0
