"""``difference-finder serve``: the HTTP service under uvicorn."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``serve`` on the CLI's subparsers."""
    p = sub.add_parser("serve", help="run the HTTP service", description=run.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the HTTP service with uvicorn."""
    from service.server import serve

    serve(host=args.host, port=args.port)
    return 0
