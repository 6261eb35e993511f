"""``difference-finder diff --server URL``: the pairs sent to a running service through
:class:`service.client.Client`; same arguments, output and exit codes as a local diff."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diff import input_paths, pair_record, print_payload, write_heatmap
from .pipeline import config_from_args

if TYPE_CHECKING:
    from service.client import DiffResult

__all__ = ["remote_diff", "result_fields"]


def result_fields(result: DiffResult) -> dict[str, Any]:
    """A service answer's fields in the order a local diff prints them (no map)."""
    return {"shape": list(result.map.shape), "metrics": result.metrics,
            "regions": result.regions, "summary": result.summary,
            "timing_ms": result.timing_ms}


def remote_diff(args: argparse.Namespace) -> int:
    """The CLI's ``diff --server URL``: same arguments and output as a local diff."""
    from core.images import pair_directories
    from service.client import Client, ServiceError

    cfg = config_from_args(args)
    a, b, directories = input_paths(args)
    try:
        with Client(args.server, api_key=os.environ.get("DF_API_KEY")) as client:
            if directories:
                pairs = pair_directories(a, b)
                out_dir = Path(args.output) if args.output else None
                results = client.diff_many(pairs, cfg, progress=not args.quiet,
                                           metrics=args.metrics)
                records = []
                for (ra, rb), res in zip(pairs, results, strict=True):
                    if out_dir is not None:
                        write_heatmap(out_dir / f"{ra.stem}.png", res.map, cfg.render)
                    records.append(pair_record(ra, rb, result_fields(res)))
                config = results[0].config if results else cfg.resolved(mode="json")
                payload: dict[str, Any] = {"config": config, "pairs": records}
            else:
                res = client.diff(a, b, cfg, metrics=args.metrics)
                if args.output:
                    write_heatmap(Path(args.output), res.map, cfg.render)
                payload = {"config": res.config, **pair_record(a, b, result_fields(res))}
    except ServiceError as exc:
        hint = ""
        if exc.status == 401:  # the CLI's key comes from the environment
            hint = (" (the CLI sends DF_API_KEY as the key)" if os.environ.get("DF_API_KEY")
                    else " (set DF_API_KEY to the server's key)")
        print(f"difference-finder: error: {exc}{hint}", file=sys.stderr)
        return 1
    print_payload(args, payload)
    return 0
