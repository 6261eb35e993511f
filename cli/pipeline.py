"""The pipeline options every computing subcommand shares, and their merge with
``--config`` into one validated :class:`core.PipelineConfig`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import PipelineConfig
    from core.images import Limits

__all__ = ["add_pipeline_arguments", "config_from_args", "load_config", "parse_step"]


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


def load_config(text: str | None) -> dict[str, Any]:
    """``--config``: a JSON object, or ``@file.json``; nothing given -> ``{}``."""
    if not text:
        return {}
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(
                f"--config {text}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--config is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("--config must be a JSON object")
    return data


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs a pipeline."""
    g = p.add_argument_group("pipeline (see PipelineConfig; these override --config)")
    g.add_argument("--config", help="pipeline as JSON, or @file.json")
    g.add_argument("--pre", "--pre-processor", dest="pre_processor", type=parse_step,
                   help="e.g. highpass_filter:factor=0.2")
    g.add_argument("--strategy", type=parse_step,
                   help="significance (the default) | difference | gradient | map")
    g.add_argument("--metric", type=parse_step, help="mse | psnr | ssim | ms-ssim | lpips:net=vgg")
    g.add_argument("--post", "--post-processor", dest="post_processor", type=parse_step,
                   action="append", help="repeat to chain, e.g. --post smooth:sigma=2 --post abs")
    g.add_argument("--reduction", choices=["mean", "max", "none"])
    g.add_argument("--data-range", type=float)
    g.add_argument("--size-policy", choices=["error", "resize", "crop", "pad"])
    g.add_argument("--regions", dest="max_regions", type=int, help="how many regions to report")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    g.add_argument("--max-pixels", type=int, metavar="N",
                   help="largest image to decode, in pixels (default: Pillow's ~89 MP "
                        "decompression-bomb guard; with --server the server's DF_MAX_PIXELS)")
    r = p.add_argument_group("rendering")
    r.add_argument("--colormap", help="magma, viridis, inferno, ... (any cmap name)")
    r.add_argument("--vmin", type=float)
    r.add_argument("--vmax", type=float)
    r.add_argument("--percentile", type=float, help="vmax = this percentile of the map")
    r.add_argument("--colorbar", action="store_true", help="draw a colorbar beside the map")


def limits_from_args(args: argparse.Namespace) -> Limits | None:
    """``--max-pixels`` as the decoder's limits (None: Pillow's guard)."""
    from core.images import Limits

    n = getattr(args, "max_pixels", None)
    if n is None:
        return None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--max-pixels must be at least 1, got {n}")
    return Limits(max_pixels=n)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Merge --config with the individual options into one validated model."""
    from core.config import PipelineConfig

    data = load_config(args.config)
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
