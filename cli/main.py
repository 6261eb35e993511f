"""The top-level parser and ``main``: subcommands registered, errors turned into exit
codes (2 for an invalid pipeline, 1 for any other error the user can fix)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from . import compare, diff, serve, weights

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """``difference-finder`` with its four subcommands."""
    parser = argparse.ArgumentParser(
        prog="difference-finder", description="Show where two images differ.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (diff, serve, compare, weights):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from core.errors import DifferenceFinderError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                 for e in exc.errors()]
        print("difference-finder: invalid pipeline:\n" + "\n".join(lines), file=sys.stderr)
        return 2
    except (DifferenceFinderError, json.JSONDecodeError, argparse.ArgumentTypeError,
            OSError) as exc:
        print(f"difference-finder: error: {exc}", file=sys.stderr)
        return 1
