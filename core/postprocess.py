"""Post-processors: act on a difference map (N, [C,] H, W), per sample.

They chain: the pipeline's ``post_processor`` may be a list applied in order.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from .errors import ConfigError
from .numeric import gaussian_blur, otsu_threshold, quantile, stretch
from .registry import Registry

__all__ = ["POST_PROCESSORS"]

POST_PROCESSORS = Registry("post_processor")

Percentile = Annotated[float, Field(ge=0.0, le=100.0)]


@POST_PROCESSORS.register("identity")
def identity(m: torch.Tensor) -> torch.Tensor:
    """Do nothing (the default)."""
    return m


@POST_PROCESSORS.register("abs")
def absolute(m: torch.Tensor) -> torch.Tensor:
    """Absolute value (for signed maps: gradient with magnitude off, signed difference)."""
    return m.abs()


# keeps_units (registry meta, default True): whether the map's values keep the strategy's
# unit (PipelineConfig then keeps its hysteresis regions and fixed heatmap range); a bool, or
# a function of the step's parameters
@POST_PROCESSORS.register("normalize", keeps_units=False)
def normalize(m: torch.Tensor) -> torch.Tensor:
    """Stretch each sample's map to [0, 1]; a constant map becomes zeros."""
    return stretch(m)


def _clip_bounds(params: dict) -> None:
    lo, hi = params["low"], params["high"]
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"clip needs low <= high, got low={lo}, high={hi}")
    if params["mode"] == "percentile":
        for v in (lo, hi):
            if v is not None and not 0 <= v <= 100:
                raise ConfigError(f"clip percentiles must lie in [0, 100], got {v}")


@POST_PROCESSORS.register("clip", check=_clip_bounds)
def clip(
    m: torch.Tensor, *, low: float | None = None, high: float | None = 99.0,
    mode: Literal["value", "percentile"] = "percentile",
) -> torch.Tensor:
    """Clamp the map to [low, high]: absolute values, or per-sample percentiles.

    The default clips the top 1% so a few extreme pixels do not wash out the rest.
    """
    def bound(v: float | None) -> torch.Tensor | None:
        if v is None:
            return None
        return quantile(m, v) if mode == "percentile" else m.new_tensor(v)

    return torch.clamp(m, bound(low), bound(high))


@POST_PROCESSORS.register("smooth")
def smooth(m: torch.Tensor, *, sigma: Annotated[float, Field(gt=0.0, le=50.0)] = 2.0
           ) -> torch.Tensor:
    """Gaussian blur (reflect padding) to merge speckle into regions."""
    return gaussian_blur(m, sigma)


@POST_PROCESSORS.register("threshold", keeps_units=lambda params: not params["binary"])
def threshold(
    m: torch.Tensor, *, method: Literal["otsu", "percentile", "value"] = "otsu",
    value: float = 0.0, percentile: Percentile = 99.0, binary: bool = False,
) -> torch.Tensor:
    """Zero everything below a threshold (Otsu, a percentile, or a value).

    ``binary=True`` returns a 0/1 mask instead of the kept values.
    """
    if method == "otsu":
        t = otsu_threshold(m)
    elif method == "percentile":
        t = quantile(m, percentile)
    else:
        t = m.new_tensor(value)
    keep = m > t
    return keep.to(m.dtype) if binary else m * keep
