"""``python -m service [--host H] [--port P]``: the server, without the CLI package."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from .server import serve
from .settings import setting_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        lines = "\n".join(f"  {line}" for line in setting_errors(exc))
        print(f"python -m service: invalid setting:\n{lines}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
