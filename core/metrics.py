"""Image-quality metrics, each giving a per-sample score, a differentiable
distance (higher = more different, for the gradient strategy) and, where the
metric has one, a spatial dissimilarity map at the input's resolution.

Metric functions take ``(reference, candidate, data_range, want_map)`` and
keyword-only parameters; register your own with ``@METRICS.register(name)``.
``costly=True`` marks a metric whose score costs much more than a difference map (SSIM,
MS-SSIM, LPIPS): ``Finder.analyze`` computes it by default only when the strategy does anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from .errors import MetricError
from .models import MODEL_CACHE
from .numeric import gaussian_window, separable_conv2d
from .registry import Registry

__all__ = ["METRICS", "MetricOutput", "ssim_components"]

METRICS = Registry("metric")


@dataclass
class MetricOutput:
    """What a metric returns for a batch of N pairs."""

    score: torch.Tensor  # (N,) in the metric's own units (dB for PSNR ...)
    distance: torch.Tensor  # (N,) differentiable, higher = more different
    map: torch.Tensor | None = None  # (N, C, H, W) dissimilarity, or None


def _squared_error(x: torch.Tensor, y: torch.Tensor, want_map: bool) -> tuple[
    torch.Tensor, torch.Tensor | None
]:
    """Per-sample MSE (N,) and, if wanted, the squared-error map.

    Without a map, one fused ``mse_loss`` per sample: its backward is a single
    kernel, the gradient strategy's hot path (about 2x faster on CPU).
    """
    if want_map:
        err = (y - x).pow(2)
        return err.flatten(1).mean(1), err
    if x.shape[0] == 1:  # one pair: no per-sample split for the backward pass to undo
        return F.mse_loss(y, x).reshape(1), None
    return torch.stack([F.mse_loss(b, a) for a, b in zip(x, y, strict=True)]), None


@METRICS.register("mse", higher_is_better=False, has_map=True)
def mse(x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool) -> MetricOutput:
    """Mean squared error; its map is the per-pixel squared error."""
    score, err = _squared_error(x, y, want_map)
    return MetricOutput(score, score, err)


@METRICS.register("psnr", higher_is_better=True, has_map=True, unit="dB")
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool) -> MetricOutput:
    """Peak signal-to-noise ratio in dB (infinite for identical images).

    Its map is the per-pixel squared error, the quantity PSNR averages.
    """
    m, err = _squared_error(x, y, want_map)
    score = 10.0 * torch.log10(data_range**2 / m)  # inf where m == 0
    # The distance (-PSNR) uses a floored MSE so identical pairs get a zero,
    # not a NaN, gradient: d/dx of -10 log10(1/m) = 10/ln10 * dm/dx / m.
    distance = -10.0 * torch.log10(data_range**2 / m.clamp_min(1e-20))
    return MetricOutput(score, distance, err)


def _conv_layout(t: torch.Tensor) -> torch.Tensor:
    """Channels-last on the CPU, where the Gaussian (depthwise) convolutions run
    1.4-2.3x faster that way (speed benchmark); same values."""
    return t.contiguous(memory_format=torch.channels_last) if t.device.type == "cpu" else t


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad H and W by ``r`` with edge-repeating reflection (scipy's 'reflect')."""
    x = torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)


def _odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError("must be odd")
    return v


WinSize = Annotated[int, Field(ge=3, le=63), AfterValidator(_odd)]
Sigma = Annotated[float, Field(gt=0.0, le=20.0)]
K = Annotated[float, Field(gt=0.0, lt=1.0)]


def ssim_components(
    x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int, sigma: float,
    k1: float, k2: float, full: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and contrast-structure maps, (N, C, H', W').

    ``full=False``: valid convolution (H' = H - win + 1), as Wang et al. and
    pytorch_msssim. ``full=True``: symmetric padding, map at input size
    (scikit-image's ``full=True`` map).
    """
    _, c, h, w = x.shape
    if min(h, w) < win_size:
        raise MetricError(
            f"SSIM with win_size {win_size} needs images at least {win_size} pixels on each "
            f"side; got {w}x{h}. Use a smaller win_size."
        )
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one grouped conv for all five
    if full:
        stack = _symmetric_pad(stack, win_size // 2)
    stack = separable_conv2d(_conv_layout(stack), gaussian_window(win_size, sigma, x.device))
    mu_x, mu_y, xx, yy, xy = stack.split(c, dim=1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_xy = mu_x * mu_y
    mu_xx, mu_yy = mu_x * mu_x, mu_y * mu_y
    cs = (2 * (xy - mu_xy) + c2) / ((xx - mu_xx) + (yy - mu_yy) + c2)
    return (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs, cs


@METRICS.register("ssim", higher_is_better=True, has_map=True, costly=True)
def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool, *,
    win_size: WinSize = 11, sigma: Sigma = 1.5, k1: K = 0.01, k2: K = 0.03,
) -> MetricOutput:
    """Structural similarity (Gaussian window). Map: 1 - local SSIM.

    The score averages the valid (unpadded) area, matching pytorch_msssim and
    scikit-image (gaussian_weights=True, use_sample_covariance=False).
    """
    if want_map:
        smap, _ = ssim_components(x, y, data_range, win_size, sigma, k1, k2, full=True)
        r = win_size // 2
        score = smap[..., r : smap.shape[-2] - r, r : smap.shape[-1] - r].flatten(1).mean(1)
        return MetricOutput(score, 1 - score, 1 - smap)
    smap, _ = ssim_components(x, y, data_range, win_size, sigma, k1, k2, full=False)
    score = smap.flatten(1).mean(1)
    return MetricOutput(score, 1 - score)


_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@METRICS.register("ms-ssim", higher_is_better=True, has_map=False, costly=True)
def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool, *,
    win_size: WinSize = 11, sigma: Sigma = 1.5, k1: K = 0.01, k2: K = 0.03,
) -> MetricOutput:
    """Multi-scale SSIM over 5 scales (pytorch_msssim). No spatial map.

    Images too small for 4 halvings with this window raise a clear
    MetricError (we do not silently change the metric): the shorter side
    must exceed (win_size - 1) * 16.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    h, w = x.shape[-2:]
    need = (win_size - 1) * 16
    if min(h, w) <= need:
        largest = (min(h, w) - 1) // 16 + 1  # largest win with (win - 1) * 16 < side
        largest -= largest % 2 == 0  # window sizes are odd
        hint = (f"use win_size {largest} or less" if largest >= 3
                else "use larger images or the 'ssim' metric")
        raise MetricError(
            f"MS-SSIM with win_size {win_size} needs both sides larger than {need} pixels "
            f"(4 halvings); got {w}x{h}: {hint}"
        )
    x, y = _conv_layout(x), _conv_layout(y)
    score = _ms_ssim(x, y, data_range=data_range, size_average=False, win_size=win_size,
                     win_sigma=sigma, weights=list(_MS_WEIGHTS), K=(k1, k2))
    return MetricOutput(score, 1 - score)


def _lpips_input(t: torch.Tensor, data_range: float) -> torch.Tensor:
    """LPIPS expects 3 channels in [-1, 1]."""
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    elif t.shape[1] != 3:
        raise MetricError(f"LPIPS needs 1 or 3 channels, got {t.shape[1]}")
    return t * (2.0 / data_range) - 1.0


@METRICS.register("lpips", higher_is_better=False, has_map=True, needs_weights=True,
                  costly=True)
def lpips_metric(
    x: torch.Tensor, y: torch.Tensor, data_range: float, want_map: bool, *,
    net: Literal["alex", "vgg", "squeeze"] = "alex",
) -> MetricOutput:
    """Learned perceptual distance (Zhang et al. 2018, lpips v0.1).

    The network comes from the model cache (built once per net and device).
    Map: the per-layer distances upsampled to the input size and summed,
    as lpips's ``spatial=True``; the score is lpips's spatial average.
    """
    import lpips as _lpips

    model = MODEL_CACHE.lpips(net, x.device)
    h, w = x.shape[-2:]
    if min(h, w) < 16:
        raise MetricError(f"LPIPS needs images of at least 16x16 pixels; got {w}x{h}")
    feats_x = model.net(model.scaling_layer(_lpips_input(x, data_range)))
    feats_y = model.net(model.scaling_layer(_lpips_input(y, data_range)))
    score = x.new_zeros(x.shape[0])
    dmap = x.new_zeros(x.shape[0], 1, h, w) if want_map else None
    for k, (fx, fy) in enumerate(zip(feats_x, feats_y, strict=True)):
        d = model.lins[k]((_lpips.normalize_tensor(fx) - _lpips.normalize_tensor(fy)) ** 2)
        score = score + d.mean(dim=(1, 2, 3))
        if dmap is not None:
            dmap = dmap + F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)
    return MetricOutput(score, score, dmap)
