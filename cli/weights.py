"""``difference-finder weights fetch|list``: download the LPIPS backbone files, or show
which are present (and, with ``--verify``, whether their hashes match)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "fetch", "list_weights", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``weights fetch`` and ``weights list`` to the CLI."""
    from core.weights import BACKBONES, DEFAULT_BASE_URL

    p = subparsers.add_parser("weights", help="download or list the LPIPS backbone weights",
                              description="Manage the torchvision backbone files LPIPS needs.")
    sub = p.add_subparsers(dest="weights_command", required=True)
    f = sub.add_parser("fetch", help="download missing files and check their hashes")
    f.add_argument("--nets", default=",".join(BACKBONES),
                   help=f"comma-separated subset of {','.join(BACKBONES)} (default: all)")
    f.add_argument("--dest", help="directory (default: $TORCH_HOME/hub/checkpoints)")
    f.add_argument("--base-url", help=f"default: $DF_WEIGHTS_BASE_URL or {DEFAULT_BASE_URL}")
    f.add_argument("--retries", type=int, default=3)
    f.add_argument("--cache", help="directory of earlier downloads to copy from and add to")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ls = sub.add_parser("list", help="show which files are present and where")
    ls.add_argument("--dest", help="directory (default: $TORCH_HOME/hub/checkpoints)")
    ls.add_argument("--verify", action="store_true", help="also check each file's hash")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``weights fetch`` or ``weights list`` (exit 1 if ``--verify`` finds a bad file)."""
    return fetch(args) if args.weights_command == "fetch" else list_weights(args)


def fetch(args: argparse.Namespace) -> int:
    """``weights fetch``: one line per net saying what was done."""
    from core.weights import fetch_weights

    results = fetch_weights(args.nets, base_url=args.base_url, dest=args.dest,
                            retries=args.retries, progress=not args.quiet, cache=args.cache)
    for r in results:
        print(f"{r.net:8} {r.action:10} {r.path}  sha256={r.sha256[:12]}...  "
              f"{r.size / 2**20:.1f} MiB")
    return 0


def list_weights(args: argparse.Namespace) -> int:
    """``weights list``: one line per net, its state and path."""
    from core.errors import ChecksumError
    from core.weights import BACKBONES, checkpoint_dir, verify_file

    folder = Path(args.dest) if args.dest else checkpoint_dir()
    ok = True
    for net, backbone in BACKBONES.items():
        path = folder / backbone.filename
        if not path.is_file():
            state = "missing"
        elif args.verify:
            try:
                verify_file(path, backbone)
                state = "present, hash ok"
            except ChecksumError:
                state, ok = "present, HASH MISMATCH", False
        else:
            state = f"present ({path.stat().st_size / 2**20:.1f} MiB)"
        print(f"{net:8} {state:24} {path}")
    return 0 if ok else 1
