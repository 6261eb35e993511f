"""Strategies: how a per-pixel difference map is made from a pair.

A strategy takes ``(reference, candidate, metric)`` where ``metric`` is the
configured metric bound to its parameters (``metric(ref, cand, want_map)``),
and returns ``(map (N, C, H, W), MetricOutput or None)``. Returning the metric
output it computed anyway saves a second pass when scores are wanted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError
from .metrics import MetricOutput
from .registry import Registry

__all__ = ["STRATEGIES", "BoundMetric"]

STRATEGIES = Registry("strategy")

BoundMetric = Callable[[torch.Tensor, torch.Tensor, bool], MetricOutput]


@STRATEGIES.register("difference", uses_metric=False, needs_grad=False)
def difference(
    ref: torch.Tensor, cand: torch.Tensor, metric: BoundMetric, *, absolute: bool = True
) -> tuple[torch.Tensor, MetricOutput | None]:
    """Pixel-wise difference ``candidate - reference`` (absolute by default).

    The metric is not used to build the map.
    """
    d = cand - ref  # a new tensor (and no autograd here): abs_ may work in place
    return (d.abs_() if absolute else d), None


@STRATEGIES.register("gradient", uses_metric=True, needs_grad=True)
def gradient(
    ref: torch.Tensor, cand: torch.Tensor, metric: BoundMetric, *, magnitude: bool = True
) -> tuple[torch.Tensor, MetricOutput | None]:
    """Which pixels moved the score: d(distance)/d(candidate), times H*W.

    Sign: positive where brightening the candidate pixel would make it *more*
    different from the reference (distance = MSE, LPIPS, -PSNR, 1-SSIM, ...).
    ``magnitude=True`` (default) returns the absolute value. Multiplying by
    the pixel count makes values independent of image size. Samples are
    independent: the summed distance's gradient is each sample's own.
    """
    # A detached alias, not a copy: the caller's tensor keeps requires_grad=False,
    # and autograd refuses in-place changes to a leaf that requires grad.
    var = cand.detach().requires_grad_(True)
    with torch.enable_grad():
        out = metric(ref.detach(), var, False)
        (grad,) = torch.autograd.grad(out.distance.sum(), var)
    grad = grad * (cand.shape[-2] * cand.shape[-1])  # a new tensor: abs_ may work in place
    detached = MetricOutput(out.score.detach(), out.distance.detach(), None)
    return (grad.abs_() if magnitude else grad), detached


@STRATEGIES.register("map", uses_metric=True, needs_grad=False, needs_map=True)
def metric_map(
    ref: torch.Tensor, cand: torch.Tensor, metric: BoundMetric
) -> tuple[torch.Tensor, MetricOutput | None]:
    """Where the images are locally dissimilar: the metric's own spatial map.

    MSE/PSNR: squared error; SSIM: 1 - local SSIM; LPIPS: its spatial map.
    """
    out = metric(ref, cand, True)
    if out.map is None:
        raise ConfigError("this metric has no spatial map; use the gradient strategy")
    return out.map, out


# the default strategy lives in a module of its own; importing it registers it, so
# ``STRATEGIES`` always holds it, whichever module was imported first
from . import significance  # noqa: E402, F401
