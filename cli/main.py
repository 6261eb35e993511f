"""The top-level parser and ``main``: subcommands registered, errors turned into exit
codes (2 for an invalid pipeline, 1 for any other error the user can fix)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import compare, diff, serve, weights

__all__ = ["build_parser", "main", "report"]


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
    except Exception as exc:
        return report(exc, DifferenceFinderError)


def report(exc: Exception, known: type[Exception]) -> int:
    """Print an error the user can fix and return its exit status (2 for an invalid
    pipeline, 1 otherwise); re-raise any other. pydantic is imported here, not with the
    parser, so ``--help`` stays light."""
    from pydantic import ValidationError

    if type(exc).__name__ in ("ValidationError", "SettingsError"):
        from service.settings import setting_errors  # the service's DF_* environment

        settings = setting_errors(exc)
        if settings is not None:
            lines = [f"  {line}" for line in settings]
            print("difference-finder: invalid setting:\n" + "\n".join(lines), file=sys.stderr)
            return 2
    if isinstance(exc, ValidationError):
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                 for e in exc.errors()]
        print("difference-finder: invalid pipeline:\n" + "\n".join(lines), file=sys.stderr)
        return 2
    if isinstance(exc, BrokenPipeError):  # `... --json | head`: the reader left, no error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 1
    if isinstance(exc, (known, json.JSONDecodeError, argparse.ArgumentTypeError, OSError)):
        print(f"difference-finder: error: {exc}", file=sys.stderr)
        return 1
    raise exc
