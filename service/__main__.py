"""``python -m service [--host H] [--port P]``: the server, without the CLI package."""

from __future__ import annotations

import argparse
import sys

from core.errors import DifferenceFinderError

from .server import serve
from .settings import setting_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except DifferenceFinderError as exc:  # e.g. DF_DEVICES names a device not here
        print(f"python -m service: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        errors = setting_errors(exc)
        if errors is None:
            raise
        lines = "\n".join(f"  {line}" for line in errors)
        print(f"python -m service: invalid setting:\n{lines}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
