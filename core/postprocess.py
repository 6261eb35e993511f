"""Post-processors: act on a difference map (N, [C,] H, W), per sample.

They chain: the pipeline's ``post_processor`` may be a list applied in order.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from .errors import ConfigError
from .metrics import gaussian_window
from .registry import Registry

__all__ = ["POST_PROCESSORS", "otsu_threshold"]

POST_PROCESSORS = Registry("post_processor")

Percentile = Annotated[float, Field(ge=0.0, le=100.0)]


def _flat(m: torch.Tensor) -> torch.Tensor:
    return m.reshape(m.shape[0], -1)


def _per_sample(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (m.ndim - 1)))


def _quantile(m: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample percentile ``q`` (0-100); sorts, so any size works."""
    flat = _flat(m)
    k = q / 100.0 * (flat.shape[1] - 1)
    s = flat.sort(dim=1).values
    lo, hi = int(k), min(int(k) + 1, flat.shape[1] - 1)
    frac = k - int(k)
    return _per_sample(s[:, lo] * (1 - frac) + s[:, hi] * frac, m)


def otsu_threshold(m: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-sample Otsu threshold (maximises between-class variance)."""
    out = []
    for sample in _flat(m).float():
        lo, hi = sample.min(), sample.max()
        if hi <= lo:
            out.append(hi)
            continue
        hist = torch.histc(sample, bins=bins, min=float(lo), max=float(hi))
        centers = lo + (torch.arange(bins, device=m.device) + 0.5) * (hi - lo) / bins
        w0 = hist.cumsum(0)
        w1 = hist.sum() - w0
        s0 = (hist * centers).cumsum(0)
        mu0 = s0 / w0.clamp_min(1)
        mu1 = (s0[-1] - s0) / w1.clamp_min(1)
        between = w0 * w1 * (mu0 - mu1) ** 2
        i = int(between[:-1].argmax())
        out.append(lo + (i + 1) * (hi - lo) / bins)
    return _per_sample(torch.stack(out).to(m.dtype), m)


@POST_PROCESSORS.register("identity")
def identity(m: torch.Tensor) -> torch.Tensor:
    """Do nothing (the default)."""
    return m


@POST_PROCESSORS.register("abs")
def absolute(m: torch.Tensor) -> torch.Tensor:
    """Absolute value (for signed maps: gradient with magnitude off, signed difference)."""
    return m.abs()


@POST_PROCESSORS.register("normalize")
def normalize(m: torch.Tensor) -> torch.Tensor:
    """Stretch each sample's map to [0, 1]; a constant map becomes zeros."""
    flat = _flat(m)
    lo = _per_sample(flat.amin(1), m)
    hi = _per_sample(flat.amax(1), m)
    return (m - lo) / (hi - lo).clamp_min(torch.finfo(m.dtype).tiny)


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
        return _quantile(m, v) if mode == "percentile" else m.new_tensor(v)

    return torch.clamp(m, bound(low), bound(high))


@POST_PROCESSORS.register("smooth")
def smooth(m: torch.Tensor, *, sigma: Annotated[float, Field(gt=0.0, le=50.0)] = 2.0
           ) -> torch.Tensor:
    """Gaussian blur (reflect padding) to merge speckle into regions."""
    shape = m.shape
    x = m.reshape(-1, 1, *shape[-2:])
    r = max(1, int(3 * sigma + 0.5))
    r = min(r, shape[-2] - 1, shape[-1] - 1) if min(shape[-2:]) > 1 else 0
    if r == 0:
        return m
    g = gaussian_window(2 * r + 1, sigma, m.device).to(m.dtype)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return x.reshape(shape)


@POST_PROCESSORS.register("threshold")
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
        t = _quantile(m, percentile)
    else:
        t = m.new_tensor(value)
    keep = m > t
    return keep.to(m.dtype) if binary else m * keep
