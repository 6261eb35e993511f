"""Numerical helpers several pipeline steps share: Gaussian windows and blur (separable),
per-sample quantiles, sorts (a radix argsort), Otsu's threshold, connected components and
channel reduction.

Written once here so SSIM, the ``smooth``/``clip``/``threshold`` post-processors, regions,
rendering, comparisons and figures all compute these the same way.
"""

from __future__ import annotations

import functools
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BAND_ELEMENTS",
    "SHIFT_ADD_MAX_RADIUS",
    "Reduction",
    "argsort_last",
    "band_rows",
    "channel_plane",
    "downsample",
    "fft_size",
    "gaussian_blur",
    "gaussian_window",
    "label_components",
    "label_stats",
    "max_filter",
    "otsu_threshold",
    "pool2",
    "quantile",
    "radix_argsort",
    "reduce_channels",
    "reflect_index",
    "separable_conv2d",
    "sort_last",
    "squared_error_sum",
    "stretch",
    "upsample",
]

#: how colour channels are combined into one map; ``"none"`` keeps them
Reduction = Literal["mean", "max", "none"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def gaussian_window(size: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (same as pytorch_msssim)."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


#: shift-and-add is used up to this kernel radius; larger kernels go through the FFT
SHIFT_ADD_MAX_RADIUS = 12
#: elements of one band on the CPU (about 1 MiB of float32): a band's temporaries stay in cache
BAND_ELEMENTS = 1 << 18


def band_rows(x: torch.Tensor, halo: int = 0) -> int:
    """Rows per band for a (B, H, W) tensor: small bands on the CPU (cache-sized,
    so no step holds full-size temporaries), the whole image on an accelerator."""
    h = x.shape[-2]
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return h
    per_row = max(1, x.numel() // max(1, h))
    return max(8, 2 * halo, BAND_ELEMENTS // per_row)


def _taps(taps: torch.Tensor) -> list[float]:
    return [float(t) for t in taps.detach().cpu().double()]


def _shift_add(x: torch.Tensor, taps: list[float], dim: int, size: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """Valid 1-D convolution along ``dim`` by adding shifted slices (``size`` outputs):
    k multiply-adds per element, no im2col, no full-size copies."""
    acc = torch.mul(x.narrow(dim, 0, size), taps[0], out=out) if out is not None else (
        x.narrow(dim, 0, size) * taps[0])
    for i in range(1, len(taps)):
        acc.add_(x.narrow(dim, i, size), alpha=taps[i])
    return acc


def separable_conv2d(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid 2-D convolution of every channel of (N, C, H, W) with ``taps`` along W then H
    (depthwise: one 1-D pass per axis instead of a k x k kernel). Grouped ``conv2d``:
    on many channels in channels-last layout (SSIM's stack) it beats shift-and-add."""
    c, k = x.shape[1], taps.numel()
    taps = taps.to(x.dtype)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def reflect_index(n: int, r: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices ``-r .. n+r-1`` reflected into ``0 .. n-1`` without repeating the edge
    (torch's 'reflect', scipy's 'mirror'); needs ``r < n``."""
    i = torch.arange(-r, n + r, device=device).abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def gaussian_blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the last two axes of (..., H, W), reflect padding, same shape.

    The radius is 3 sigma, capped so reflection stays inside the image. Radii up to
    :data:`SHIFT_ADD_MAX_RADIUS` are shift-and-add in bands of rows (each band padded on
    its own: no padded full-size copy); larger ones are FFT convolutions per axis, whose
    cost does not grow with sigma. Values match ``scipy.ndimage.gaussian_filter`` with
    ``mode="mirror"`` and the same radius.
    """
    shape = m.shape
    h, w = shape[-2:]
    r = max(1, int(3 * sigma + 0.5))
    r = min(r, h - 1, w - 1) if min(h, w) > 1 else 0
    if r == 0:
        return m
    x = m.reshape(-1, h, w)
    if r > SHIFT_ADD_MAX_RADIUS:
        return _fft_blur(x, gaussian_window(2 * r + 1, sigma, m.device), r).reshape(shape)
    t = _taps(gaussian_window(2 * r + 1, sigma, "cpu"))
    rows = reflect_index(h, r, m.device)
    step = band_rows(x, halo=2 * r)
    if step >= h:
        xp = F.pad(x.index_select(1, rows), (r, r), mode="reflect")
        return _shift_add(_shift_add(xp, t, 2, w), t, 1, h).reshape(shape)
    out = torch.empty_like(x)
    for y0 in range(0, h, step):
        b = min(step, h - y0)
        band = F.pad(x.index_select(1, rows[y0 : y0 + b + 2 * r]), (r, r), mode="reflect")
        _shift_add(_shift_add(band, t, 2, w), t, 1, b, out=out[:, y0 : y0 + b])
    return out.reshape(shape)


def _fft_axis(x: torch.Tensor, taps: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Reflect-padded ``x`` (padded by ``r`` along ``dim``) convolved along ``dim``:
    circular convolution of the padded length, whose last ``n`` outputs are the valid ones."""
    length = x.shape[dim]
    n = fft_size(length)  # zero-padding past the padded length keeps the valid part exact
    kernel = torch.fft.rfft(taps.to(x.dtype), n=n)
    kernel = kernel.view(*([1] * (x.ndim - 1)), -1).movedim(-1, dim)
    spectrum = torch.fft.rfft(x, n=n, dim=dim)
    spectrum.mul_(kernel.to(spectrum.dtype))
    full = torch.fft.irfft(spectrum, n=n, dim=dim)
    return full.narrow(dim, 2 * r, length - 2 * r).to(x.dtype)


def fft_size(n: int) -> int:
    """The smallest 2-3-5-smooth length >= ``n`` (FFTs of such lengths are fastest)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _fft_blur(x: torch.Tensor, taps: torch.Tensor, r: int) -> torch.Tensor:
    """Separable FFT blur of (B, H, W): rows in bands along W, then columns in bands
    along H; one full-size intermediate besides the output."""
    _, h, w = x.shape
    rows, cols = reflect_index(h, r, x.device), reflect_index(w, r, x.device)
    step = x.shape[1] if x.device.type != "cpu" else max(1, 4 * BAND_ELEMENTS // (w + 2 * r))
    mid = torch.empty_like(x)
    for y0 in range(0, h, step):
        band = x[:, y0 : y0 + step].index_select(2, cols)
        mid[:, y0 : y0 + step] = _fft_axis(band, taps, r, 2)
    out = torch.empty_like(x)
    step = x.shape[2] if x.device.type != "cpu" else max(1, 4 * BAND_ELEMENTS // (h + 2 * r))
    for x0 in range(0, w, step):
        band = mid[:, :, x0 : x0 + step].index_select(1, rows)
        out[:, :, x0 : x0 + step] = _fft_axis(band, taps, r, 1)
    return out


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Area-average (..., H, W) by ``factor`` per side (edges averaged over what exists):
    one level of an image pyramid, e.g. to blur with a large sigma at a coarse scale."""
    if factor <= 1:
        return x
    shape = x.shape
    y = F.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), factor, ceil_mode=True,
                     count_include_pad=False)
    return y.reshape(*shape[:-2], *y.shape[-2:])


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (..., h, w) to ``size`` = (H, W) (pixel centres aligned):
    back from a pyramid level to the full map."""
    shape = x.shape
    y = F.interpolate(x.reshape(-1, 1, *shape[-2:]), size=size, mode="bilinear",
                      align_corners=False)
    return y.reshape(*shape[:-2], *size)


def pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 means of (N, C, H, W), an odd last row/column averaged over what exists (the same
    as ``avg_pool2d(x, 2, ceil_mode=True)``, ~3x faster on the CPU): one pyramid octave."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    n, c, h, w = x.shape
    r = x.reshape(n, c, h, w // 2, 2)
    r = (r[..., 0] + r[..., 1]).view(n, c, h // 2, 2, w // 2)
    return (r[:, :, :, 0] + r[:, :, :, 1]).mul_(0.25)


def max_filter(x: torch.Tensor, reach: int) -> torch.Tensor:
    """The maximum over the (2 reach + 1)^2 window of each pixel of (..., H, W), over what
    exists at the borders (``scipy.ndimage.maximum_filter``, mode ``nearest``): separable,
    each side's neighbours maxed in place into one copy per axis."""
    for dim in (-1, -2):
        n = x.shape[dim]
        m = x.clone()
        for s in range(1, min(reach, n - 1) + 1):  # the neighbours s away, both sides
            torch.maximum(m.narrow(dim, s, n - s), x.narrow(dim, 0, n - s),
                          out=m.narrow(dim, s, n - s))
            torch.maximum(m.narrow(dim, 0, n - s), x.narrow(dim, s, n - s),
                          out=m.narrow(dim, 0, n - s))
        x = m
    return x


def sort_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` sorted along its last dimension (NumPy's SIMD sort on the CPU, ~20x torch's)."""
    if x.device.type != "cpu":
        return x.sort(dim=-1).values
    return torch.from_numpy(np.sort(x.detach().numpy(), axis=-1))


def argsort_last(x: torch.Tensor) -> torch.Tensor:
    """Argsort of ``x`` along its last dimension; on the CPU float32 by :func:`radix_argsort`,
    other types by NumPy's sort (~6x torch's). Ties come in a fixed scrambled order, not
    index order: a run of equal keys (a flat area) split between bins is split evenly over
    the image, not top rows against bottom ones."""
    if x.device.type != "cpu":
        return x.argsort(dim=-1)
    a = x.detach().numpy()
    if a.dtype != np.float32:
        return torch.from_numpy(np.argsort(a, axis=-1))
    scramble = _scramble(a.shape[-1])
    return torch.from_numpy(np.take(scramble, radix_argsort(np.take(a, scramble, axis=-1))))


@functools.lru_cache(maxsize=16)
def _scramble(n: int) -> np.ndarray:
    """A fixed scrambled permutation of ``n``, read-only and cached: the order of Knuth's
    multiplicative hash of the indices (distinct for n < 2**32), so the same in every run and
    NumPy version (a Generator's stream is not promised across versions)."""
    hashed = (np.arange(n, dtype=np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    perm = np.argsort(hashed)
    perm.flags.writeable = False
    return perm


def radix_argsort(a: np.ndarray) -> np.ndarray:
    """NumPy's stable argsort of float32 ``a`` along its last axis (NaN last), in O(n): the
    bits mapped to unsigned integers in the same order, then two stable passes over their
    16-bit halves (NumPy's radix sort). Comparison sorts of a few thousand floats are 2-5x
    slower, more on CPUs where AVX-512 compress-stores are slow (AMD Zen 4)."""
    if a.size == 0:
        return np.zeros(a.shape, np.intp)
    with np.errstate(invalid="ignore"):  # a signalling NaN is just a NaN here
        a = a + np.float32(0.0)  # a copy in which -0.0 is 0.0 (they are equal keys)
    nan = np.isnan(a)
    if nan.any():
        a[nan] = np.nan  # one NaN, sorted after +inf
    shape, n = a.shape, a.shape[-1]
    u = a.view(np.uint32).reshape(-1, n)  # rows; flat indices below (np.take is the fast path)
    key = u ^ ((np.uint32(0) - (u >> np.uint32(31))) | np.uint32(0x80000000))
    first = np.argsort((key & np.uint32(0xFFFF)).astype(np.uint16), axis=-1, kind="stable")
    rows = np.arange(0, first.size, n)[:, None]
    first += rows
    high = np.take((key >> np.uint32(16)).astype(np.uint16), first)
    second = np.argsort(high, axis=-1, kind="stable")
    second += rows
    order = np.take(first, second)
    order -= rows
    return order.reshape(shape)


def squared_error_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of ``(y - x)**2`` over (N, ..., H, W), float64 across bands of rows on
    the CPU so that no full-size difference (nor a contiguous copy) is held: cheap MSE/PSNR
    next to any map."""
    dims = tuple(range(1, x.ndim))
    h = x.shape[-2]
    step = h if x.device.type != "cpu" else max(1, 4 * BAND_ELEMENTS * h // max(1, x.numel()))
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for i in range(0, h, step):  # a band's float32 sum is pairwise (relative error ~1e-9 here;
        # converting the band to float64 first costs ~3x)
        d = y[..., i : i + step, :] - x[..., i : i + step, :]
        total += d.mul_(d).sum(dim=dims).double()
    return total


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
    linear interpolation between the two order statistics around it (``kthvalue``:
    linear time, no full sort)."""
    flat = m.reshape(m.shape[0], -1)
    count = flat.shape[1]
    k = q / 100.0 * (count - 1)
    lo, hi = int(k), min(int(k) + 1, count - 1)
    frac = k - int(k)
    low = _kth(flat, lo)
    if frac == 0 or hi == lo:
        return _per_sample(low, m)
    return _per_sample(low * (1 - frac) + _kth(flat, hi) * frac, m)


def _kth(flat: torch.Tensor, i: int) -> torch.Tensor:
    """The ``i``-th smallest value (0-based) of each row."""
    if flat.device.type in ("cpu", "cuda"):
        return flat.kthvalue(i + 1, dim=1).values
    return flat.sort(dim=1).values[:, i]


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


def label_stats(labels: np.ndarray, values: np.ndarray, count: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(area, sum, max) of ``values`` per component 1..count of ``labels``: one pass over the
    labelled pixels only (bincount and torch's scatter-max: no sort, no Python loop)."""
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    lab = flat[nz].astype(np.int64)
    val = np.asarray(values, dtype=np.float32).ravel()[nz]
    area = np.bincount(lab, minlength=count + 1)[1:]
    total = np.bincount(lab, weights=val, minlength=count + 1)[1:]
    peak = torch.full((count + 1,), -torch.inf).scatter_reduce_(
        0, torch.from_numpy(lab), torch.from_numpy(val), reduce="amax")[1:]
    return area, total, peak.double().numpy()


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
