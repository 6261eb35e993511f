"""Numerical helpers several pipeline steps share: Gaussian windows and blur (separable),
per-sample quantiles, Otsu's threshold, connected components and channel reduction.

Written once here so SSIM, the ``smooth``/``clip``/``threshold`` post-processors, regions,
rendering, comparisons and figures all compute these the same way.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Reduction",
    "channel_plane",
    "gaussian_blur",
    "gaussian_window",
    "label_components",
    "otsu_threshold",
    "quantile",
    "reduce_channels",
    "separable_conv2d",
    "stretch",
]

#: how colour channels are combined into one map; ``"none"`` keeps them
Reduction = Literal["mean", "max", "none"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def gaussian_window(size: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (same as pytorch_msssim)."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def separable_conv2d(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid 2-D convolution of every channel of (N, C, H, W) with ``taps`` along W then H
    (depthwise: one 1-D pass per axis instead of a k x k kernel)."""
    c, k = x.shape[1], taps.numel()
    taps = taps.to(x.dtype)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the last two axes of (..., H, W), reflect padding, same shape.

    The radius is 3 sigma, capped so reflection stays inside the image.
    """
    shape = m.shape
    r = max(1, int(3 * sigma + 0.5))
    r = min(r, shape[-2] - 1, shape[-1] - 1) if min(shape[-2:]) > 1 else 0
    if r == 0:
        return m
    x = F.pad(m.reshape(-1, 1, *shape[-2:]), (r, r, r, r), mode="reflect")
    return separable_conv2d(x, gaussian_window(2 * r + 1, sigma, m.device)).reshape(shape)


def _per_sample(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped to broadcast against the (N, ...) tensor ``m``."""
    return v.view(-1, *([1] * (m.ndim - 1)))


def stretch(x: torch.Tensor) -> torch.Tensor:
    """Min-max stretch each sample of (N, ...) to [0, 1]; a constant sample becomes zeros."""
    dims = tuple(range(1, x.ndim))
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)


def quantile(m: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample percentile ``q`` (0-100) of (N, ...), broadcastable against ``m``;
    linear interpolation, sorts, so any size works."""
    flat = m.reshape(m.shape[0], -1)
    k = q / 100.0 * (flat.shape[1] - 1)
    s = flat.sort(dim=1).values
    lo, hi = int(k), min(int(k) + 1, flat.shape[1] - 1)
    frac = k - int(k)
    return _per_sample(s[:, lo] * (1 - frac) + s[:, hi] * frac, m)


def otsu_threshold(m: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-sample Otsu threshold of (N, ...) (maximises between-class variance),
    broadcastable against ``m``."""
    out = []
    for sample in m.reshape(m.shape[0], -1).float():
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


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label connected components of a boolean (H, W) mask (scipy.ndimage.label);
    0 is background, labels 1..count in raster order of each component's first pixel."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels.astype(np.int32, copy=False), int(count)


def reduce_channels(x: ArrayT, reduction: Reduction = "max", axis: int = 0) -> ArrayT:
    """Collapse the channel ``axis`` of a numpy array or tensor by its mean or max;
    ``"none"`` returns ``x`` unchanged."""
    if reduction == "none":
        return x
    if isinstance(x, torch.Tensor):
        return x.mean(dim=axis) if reduction == "mean" else x.amax(dim=axis)
    return x.mean(axis=axis) if reduction == "mean" else x.max(axis=axis)


def channel_plane(m: np.ndarray) -> np.ndarray:
    """A map as one (H, W) plane: a per-channel (C, H, W) map gives its channel max."""
    m = np.asarray(m)
    return reduce_channels(m, "max", axis=0) if m.ndim == 3 else m
