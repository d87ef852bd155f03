"""Command line: `python -m wan_core {i2v,v2v,remote,...}`. Each subcommand lives next to its engine module."""

from __future__ import annotations

import argparse
import sys

from ..errors import WanInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_core", description="Wan 2.1 video generation")
    subparsers = parser.add_subparsers(dest="command", required=True)
    from ..files.download import add_parser as add_download_parser
    from .cache import add_parser as add_cache_parser
    from .generate import add_parsers as add_generate_parsers
    from .remote import add_parser as add_remote_parser
    from .mini import add_parsers as add_mini_parsers

    add_generate_parsers(subparsers)
    add_remote_parser(subparsers)
    add_download_parser(subparsers)
    add_cache_parser(subparsers)
    add_mini_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except WanInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
