"""``difference-finder compare REF CAND... -o out/``: the figure, every map on one
shared scale, improvement maps over a baseline, and the scores as a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .pipeline import add_pipeline_arguments, config_from_args, limits_from_args

if TYPE_CHECKING:
    from core.results import Comparison

__all__ = ["add_parser", "file_names", "parse_labels", "run", "score_table"]


def parse_labels(text: str | None) -> list[str] | None:
    """``a,b,c`` or a JSON list of strings -> labels."""
    if text is None:
        return None
    text = text.strip()
    if text.startswith("["):
        from core.errors import InputError

        labels = json.loads(text)
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise InputError("--labels as JSON must be a list of strings")
        return labels
    return [part.strip() for part in text.split(",")]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``compare`` subcommand on the CLI's subparsers."""
    from core.formats import FIGURE_FORMATS

    p = sub.add_parser("compare", help="one reference against several candidates: a figure",
                       description=run.__doc__)
    p.add_argument("reference", help="reference image")
    p.add_argument("candidates", nargs="+", help="candidate images, in figure order")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--labels", help="one per candidate: a,b,c or a JSON list "
                   "(default: file names)")
    p.add_argument("--baseline", help="label of the candidate the others are measured against")
    p.add_argument("--format", choices=FIGURE_FORMATS, default="png", help="figure format")
    p.add_argument("--dpi", type=int, default=300, help="resolution recorded in the figure")
    p.add_argument("--insets", type=int, default=2, help="zoomed insets (0 for none)")
    p.add_argument("--panel-width", type=int, help="panel width in pixels (default: image "
                   "width, at most 384)")
    p.add_argument("--json", action="store_true", help="print the summary JSON to stdout")
    add_pipeline_arguments(p)
    p.set_defaults(func=run)
    return p


def file_names(labels: list[str]) -> list[str]:
    """File-system-safe, unique names for labels."""
    names: list[str] = []
    for label in labels:
        base = re.sub(r"[^\w.-]+", "_", label).strip("._") or "candidate"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def score_table(comparison: Comparison) -> str:
    """The scores as an aligned plain-text table, one row per candidate."""
    keys = list(dict.fromkeys(k for c in comparison.candidates for k in c.metrics))
    rows = [["label", *keys]]
    for c in comparison.candidates:
        values = [c.metrics.get(k) for k in keys]
        rows.append([c.label, *("-" if v is None else f"{v:.4f}" for v in values)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    reasons = {name: why for c in comparison.candidates for name, why in c.skipped.items()}
    lines += [f"no {name}: {why}" for name, why in reasons.items()]
    lines += [f"{c.label}: {c.summary}" for c in comparison.candidates]
    for i in comparison.improvement:
        lines.append(f"{i.label} vs {comparison.baseline}: better on "
                     f"{i.improved_fraction:.1%} of pixels, worse on {i.worsened_fraction:.1%}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compare candidates with one reference; write the figure, maps and scores to -o."""
    from core.compare import compare
    from core.figure import IMPROVEMENT_COLORMAP, figure_bytes
    from core.render import RenderConfig, heatmap_png

    cfg = config_from_args(args)
    comparison = compare(args.reference, args.candidates, parse_labels(args.labels),
                         args.baseline, cfg, device=args.device, limits=limits_from_args(args))
    out = Path(args.output)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    options = {"insets": args.insets}
    if args.panel_width:
        options["panel_width"] = args.panel_width
    figure = out / f"figure.{args.format}"
    figure.write_bytes(figure_bytes(comparison, args.format, args.dpi, **options))
    names = file_names(comparison.labels)
    vmin, vmax = comparison.scale
    shared = cfg.render.with_range(vmin, vmax)  # the pipeline's scale and unit label
    for c, name in zip(comparison.candidates, names, strict=True):
        (out / "maps" / f"{name}.png").write_bytes(heatmap_png(c.map, shared))
    if comparison.improvement:
        (out / "improvement").mkdir(exist_ok=True)
        lo, hi = comparison.improvement_scale
        diverging = RenderConfig(colormap=IMPROVEMENT_COLORMAP, vmin=lo, vmax=hi)
        by_label = dict(zip(comparison.labels, names, strict=True))
        for i in comparison.improvement:
            (out / "improvement" / f"{by_label[i.label]}.png").write_bytes(
                heatmap_png(i.map, diverging))
    summary = comparison.summary()
    summary["files"] = {"figure": figure.name,
                        "maps": {c.label: f"maps/{n}.png"
                                 for c, n in zip(comparison.candidates, names, strict=True)}}
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(score_table(comparison))
        print(f"figure: {figure}")
    return 0
