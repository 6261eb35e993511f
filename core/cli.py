"""The ``difference-finder`` command line: diff, serve (and the subcommands
other modules add). Every pipeline option maps onto :class:`PipelineConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import PipelineConfig
from .errors import DifferenceFinderError
from .metrics import finite_or_none

__all__ = ["build_parser", "main", "parse_step"]


def parse_step(text: str) -> str | dict[str, Any]:
    """``name``, ``name:key=value,key=value`` or a JSON object -> a step spec."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    name, _, rest = text.partition(":")
    if not rest:
        return name
    spec: dict[str, Any] = {"name": name}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value in {text!r}, got {item!r}")
        try:
            spec[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            spec[key.strip()] = value
    return spec


def _load_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("--config must be a JSON object")
    return data


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs a pipeline."""
    g = p.add_argument_group("pipeline (see PipelineConfig; these override --config)")
    g.add_argument("--config", help="pipeline as JSON, or @file.json")
    g.add_argument("--pre", "--pre-processor", dest="pre_processor", type=parse_step,
                   help="e.g. highpass_filter:factor=0.2")
    g.add_argument("--strategy", type=parse_step, help="difference | gradient | map")
    g.add_argument("--metric", type=parse_step, help="mse | psnr | ssim | ms-ssim | lpips:net=vgg")
    g.add_argument("--post", "--post-processor", dest="post_processor", type=parse_step,
                   action="append", help="repeat to chain, e.g. --post smooth:sigma=2 --post abs")
    g.add_argument("--reduction", choices=["mean", "max", "none"])
    g.add_argument("--data-range", type=float)
    g.add_argument("--size-policy", choices=["error", "resize", "crop", "pad"])
    g.add_argument("--regions", dest="max_regions", type=int, help="how many regions to report")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    r = p.add_argument_group("rendering")
    r.add_argument("--colormap", help="magma, viridis, inferno, ... (any cmap name)")
    r.add_argument("--vmin", type=float)
    r.add_argument("--vmax", type=float)
    r.add_argument("--percentile", type=float, help="vmax = this percentile of the map")
    r.add_argument("--colorbar", action="store_true", help="draw a colorbar beside the map")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Merge --config with the individual options into one validated model."""
    data = _load_config(args.config)
    for key in ("pre_processor", "strategy", "metric", "post_processor", "reduction",
                "data_range", "size_policy"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if getattr(args, "max_regions", None) is not None:
        data.setdefault("regions", {})["max_regions"] = args.max_regions
    render = data.setdefault("render", {})
    for key in ("colormap", "vmin", "vmax", "percentile"):
        if getattr(args, key, None) is not None:
            render[key] = getattr(args, key)
    if getattr(args, "colorbar", False):
        render["colorbar"] = True
    return PipelineConfig.model_validate(data)


def result_json(result: Any, reference: str, candidate: str) -> dict[str, Any]:
    """A PairResult as JSON-ready data (non-finite scores become null)."""
    return {
        "reference": reference,
        "candidate": candidate,
        "shape": list(result.map.shape),
        "metrics": {k: finite_or_none(v) for k, v in result.metrics.items()},
        "regions": [r.to_dict() for r in result.regions],
        "timing_ms": {k: round(v, 2) for k, v in result.timing_ms.items()},
    }


def _write_map(result: Any, path: Path, cfg: PipelineConfig) -> None:
    from .render import heatmap_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(heatmap_png(result.map, cfg.render))


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two images (or two directories of images)."""
    from .finder import Finder
    from .images import pair_directories

    if args.server:
        from service.client import remote_diff  # provided with the HTTP client

        return remote_diff(args)
    cfg = config_from_args(args)
    finder = Finder.from_config(cfg, device=args.device)
    a, b = Path(args.reference), Path(args.candidate)
    if a.is_dir() != b.is_dir():
        raise DifferenceFinderError(f"{a if a.is_dir() else b} is a directory, the other is not")
    if a.is_dir():
        from tqdm import tqdm

        pairs = pair_directories(a, b)
        out_dir = Path(args.output) if args.output else None
        records = []
        for ra, rb in tqdm(pairs, desc="pairs", unit="pair", file=sys.stderr,
                           disable=args.quiet):
            res = finder.analyze(ra, rb)[0]
            if out_dir is not None:
                _write_map(res, out_dir / f"{ra.stem}.png", cfg)
            records.append(result_json(res, str(ra), str(rb)))
        payload: Any = {"config": cfg.model_dump(), "pairs": records}
    else:
        res = finder.analyze(a, b)[0]
        if args.output:
            _write_map(res, Path(args.output), cfg)
        payload = {"config": cfg.model_dump(), **result_json(res, str(a), str(b))}
    if args.json or not args.output:
        print(json.dumps(payload, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service with uvicorn."""
    from service.server import serve

    serve(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="difference-finder", description="Show where two images differ.")
    sub = parser.add_subparsers(dest="command", required=True)

    diff = sub.add_parser("diff", help="compare two images or two directories",
                          description=cmd_diff.__doc__)
    diff.add_argument("reference", help="reference image or directory")
    diff.add_argument("candidate", help="candidate image or directory (paired by file name)")
    diff.add_argument("-o", "--output", help="heatmap PNG (a directory for directory input)")
    diff.add_argument("--json", action="store_true", help="print metrics and regions as JSON")
    diff.add_argument("--server", help="send the work to a running service at this URL")
    diff.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_pipeline_arguments(diff)
    diff.set_defaults(func=cmd_diff)

    serve = sub.add_parser("serve", help="run the HTTP service", description=cmd_serve.__doc__)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    from .compare_cli import add_parser as add_compare_parser  # `compare REF CAND...`
    from .fetch import add_weights_parser  # `weights fetch|list`, kept with the download code

    add_compare_parser(sub)

    add_weights_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
