"""``difference-finder diff REF CAND``: two images or two directories, computed here or,
with ``--server URL``, by a running service (:mod:`cli.remote`); the same output both ways."""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pipeline import add_pipeline_arguments, config_from_args, limits_from_args

if TYPE_CHECKING:
    import numpy as np

    from core.render import RenderConfig

__all__ = ["HEATMAP_COMPRESS_LEVEL", "RENDER_THREADS", "add_parser", "input_paths",
           "pair_record", "parse_metrics", "print_payload", "run", "write_heatmap"]

#: threads drawing heatmaps of a directory run
RENDER_THREADS = max(1, min(4, os.cpu_count() or 1))


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``diff`` on the CLI's subparsers."""
    p = sub.add_parser("diff", help="compare two images or two directories",
                       description=run.__doc__)
    p.add_argument("reference", help="reference image or directory")
    p.add_argument("candidate", help="candidate image or directory (paired by file name)")
    p.add_argument("-o", "--output", help="heatmap PNG (a directory for directory input)")
    p.add_argument("--json", action="store_true", help="print metrics and regions as JSON")
    p.add_argument("--server", help="send the work to a running service at this URL "
                   "(with the key in DF_API_KEY, when the server sets DF_API_KEYS)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metrics", type=parse_metrics, default="auto", metavar="NAMES",
                   help="scores to compute: comma-separated metric names (e.g. ssim,psnr), "
                   "'none', or 'auto' (the default: the configured metric when it is cheap or "
                   "the strategy computes it anyway, else mse and psnr)")
    add_pipeline_arguments(p)
    p.set_defaults(func=run)
    return p


def parse_metrics(text: str) -> str | bool | list[str]:
    """``--metrics``: ``auto``, ``none`` or comma-separated metric names (checked against
    the registry when the pipeline is built, so ``--help`` imports nothing heavy)."""
    value = text.strip()
    if value.lower() in ("auto", ""):
        return "auto"
    if value.lower() == "none":
        return False
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected metric names, 'auto' or 'none', got {text!r}")
    return names


def input_paths(args: argparse.Namespace) -> tuple[Path, Path, bool]:
    """``(reference, candidate, both are directories)``; an error when only one is, when
    a single pair's ``-o`` does not name a PNG, or directories' ``-o`` does."""
    from core.images import directory_pair

    a, b = Path(args.reference), Path(args.candidate)
    directories = directory_pair(a, b)
    if not directories and args.output and Path(args.output).suffix.lower() != ".png":
        # checked before any work (a .jpg name used to get PNG bytes)
        raise argparse.ArgumentTypeError(
            f"-o {args.output}: heatmaps are PNG files; give a name ending in .png")
    if directories and args.output and Path(args.output).suffix.lower() == ".png":
        # a directory named map.png would be made to hold one heatmap per pair
        raise argparse.ArgumentTypeError(
            f"-o {args.output}: directory input writes one heatmap per pair; give a directory")
    return a, b, directories


#: zlib level of heatmap PNGs: level 1 is several times faster than Pillow's default 6
#: and the files stay lossless (a few percent larger on smooth maps)
HEATMAP_COMPRESS_LEVEL = 1


def write_heatmap(path: Path, m: np.ndarray, render: RenderConfig) -> None:
    """Draw ``m`` as a PNG heatmap at ``path``, creating its folder."""
    from core.render import heatmap

    path.parent.mkdir(parents=True, exist_ok=True)
    heatmap(m, render).save(path, format="PNG", compress_level=HEATMAP_COMPRESS_LEVEL)


def pair_record(reference: Path, candidate: Path, result: dict[str, Any]) -> dict[str, Any]:
    """One pair's JSON record: its two paths, then the result's fields."""
    return {"reference": str(reference), "candidate": str(candidate), **result}


def print_payload(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Print the JSON when asked, or when no heatmap file was asked for; else one line per
    pair saying what was found ("a.png vs b.png: no significant difference found")."""
    if args.json or not args.output:
        print(json.dumps(payload, indent=2))
        return
    for record in payload.get("pairs", [payload]):
        print(f"{record['reference']} vs {record['candidate']}: {record['summary']}")


def run(args: argparse.Namespace) -> int:
    """Compare two images (or two directories of images)."""
    if args.server:
        from .remote import remote_diff

        return remote_diff(args)
    from core.finder import Finder
    from core.images import pair_directories

    cfg = config_from_args(args)
    limits = limits_from_args(args)
    finder = Finder.from_config(cfg, device=args.device)
    metrics = finder.score_names(args.metrics)  # unknown names fail before any work
    a, b, directories = input_paths(args)
    if directories:
        from tqdm import tqdm

        out_dir = Path(args.output) if args.output else None
        records = []
        # Heatmaps are drawn and encoded on a thread pool (Pillow's encoder releases the
        # GIL) while the next pair is computed.
        with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
            written = []
            for ra, rb in tqdm(pair_directories(a, b), desc="pairs", unit="pair",
                               file=sys.stderr, disable=args.quiet):
                res = finder.analyze(ra, rb, metrics=metrics, limits=limits)[0]
                if out_dir is not None:
                    written.append(pool.submit(write_heatmap, out_dir / f"{ra.stem}.png",
                                               res.map, cfg.render))
                records.append(pair_record(ra, rb, res.to_dict()))
            for job in written:
                job.result()  # a failed write raises here
        payload: dict[str, Any] = {"config": cfg.resolved(), "pairs": records}
    else:
        res = finder.analyze(a, b, metrics=metrics, limits=limits)[0]
        if args.output:
            write_heatmap(Path(args.output), res.map, cfg.render)
        payload = {"config": cfg.resolved(), **pair_record(a, b, res.to_dict())}
    print_payload(args, payload)
    return 0
