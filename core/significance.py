"""The ``significance`` strategy: a difference map in calibrated units (z, robust sigmas).

Per pixel it says how far the local change stands above what the pair's own image-wide
residual explains. First the pair's image-wide linear filter (blur, resampling, sharpening,
gain and offset: a small kernel per colour channel, fitted robustly on the pair) and tone curve
are explained; the rest (in an opponent colour space, so a hue change counts) is normalised by
a noise level fitted on the pair itself: medians of |residual| in bins of local texture (codec
and resampling residue is larger on edges than on flat areas), leaving out pixels where the
candidate is flat and the reference is not (a solid fill: its own pixels would be the
flattest bins' noise, and it would show as its outline).
The normalised residual is then integrated over neighbourhoods of an avg-pool pyramid (sigma
~2 to ~16 px; four levels by default, a fifth changed nothing on the tuning half): its mean
(zero-mean residue cancels, a real change does not) and its mean
absolute value (changes with no mean shift: mirrored patches, blurred or removed texture).
Each level's spread is measured robustly on the pair (the residue is spatially correlated),
and along the image's borders (where filters pad in ways no image-wide fit knows) on each
side's band itself, so every level's map is a z-score; coarse evidence is shown only where
finer evidence supports it (``gain`` per octave), which keeps spots from bleeding into their
surroundings.
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from .metrics import MetricOutput
from .numeric import ArrayT, argsort_last, band_rows, max_filter, pool2, sort_last
from .strategies import STRATEGIES, BoundMetric

__all__ = ["SAMPLES", "SIGNIFICANCE_UNIT", "BinnedCurves", "apply_linear_filter",
           "fit_linear_filter", "significance", "significance_map"]

#: the unit of the map, named on colorbars
SIGNIFICANCE_UNIT = "significance (robust sigmas)"

_MAD = 1.4826  # MAD -> standard deviation of a normal distribution
_BLUR_GAIN = 0.375  # sd gain of the 2-D [1, 2, 1] / 4 blur on white noise (6/16 per axis)
_ABS_MEAN, _ABS_SD = 0.7979, 0.6028  # mean and sd of |z| for z ~ N(0, 1)
_Q75_SD, _Q90_SD = 1.1503, 1.6449  # q75 and q90 of |z| for z ~ N(0, 1), in sigmas
#: pixels sampled (a regular grid) for the robust statistics of a level or a curve
SAMPLES = 4096
_FIT_SAMPLES = 2048  # pixels sampled to fit the image-wide linear filter (26 coefficients)
#: the tone curve's bins take the median over a grid of _TONE_BLOCKS^2 image blocks: a large
#: local edit (a quarter of the image) otherwise became its luminance bins' tone (4 chosen on
#: the tuning half over 2)
_TONE_BLOCKS = 4
_LUT = 4096  # cells of the uniform grid a fitted curve is looked up on (nearest point)


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB -> (luminance, red-green, yellow-blue); other channel counts pass through."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    out = torch.empty_like(x)
    lum, rg, yb = out[:, 0:1], out[:, 1:2], out[:, 2:3]
    torch.add(r, g, out=yb)
    torch.add(yb, b, out=lum).div_(3.0)  # (r + g + b) / 3
    torch.sub(r, g, out=rg).mul_(0.5)  # (r - g) / 2
    yb.sub_(b, alpha=2.0).mul_(0.25)  # (r + g - 2 b) / 4
    return out


def _is_gray(x: torch.Tensor) -> bool:
    """Whether the three channels of (N, 3, H, W) are equal everywhere."""
    return torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 3-tap binomial blur [1, 2, 1] / 4, replicate borders (shifted adds)."""
    for dim in (-1, -2):
        if x.shape[dim] < 2:
            continue
        r = x * 0.5
        n = x.shape[dim]
        r.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1), alpha=0.25)
        r.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1), alpha=0.25)
        r.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1), alpha=0.25)
        r.narrow(dim, n - 1, 1).add_(x.narrow(dim, n - 1, 1), alpha=0.25)
        x = r
    return x.clone() if x.shape[-1] < 2 and x.shape[-2] < 2 else x


def _texture(x: torch.Tensor, reach: int) -> torch.Tensor:
    """Local gradient energy of each channel of (N, C, H, W), spread over ``reach`` pixels
    (max filter, then blur): residue of blur and resampling reaches beyond the edge itself."""
    h, w = x.shape[-2:]
    g = torch.empty_like(x)  # squared forward differences, 0 past the last row/column
    gy = torch.empty_like(x)
    g[..., :, w - 1 :].zero_()
    gy[..., h - 1 :, :].zero_()
    torch.sub(x[..., :, 1:], x[..., :, : w - 1], out=g[..., :, : w - 1])
    torch.sub(x[..., 1:, :], x[..., : h - 1, :], out=gy[..., : h - 1, :])
    g.mul_(g).addcmul_(gy, gy)
    del gy
    return _blur(max_filter(g, reach) if reach else g)


def _pair_texture(a: torch.Tensor, b: torch.Tensor, reach: int, mode: str
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The texture key of a pair (``mode``: min, ref or geomean of the two), in bands of rows
    on the CPU (cache-sized temporaries, none full-size; the halo makes bands exact); with
    ``min``, also where the candidate is flat and the reference is not (N, 1, H, W): a solid
    fill, whose own pixels would otherwise make up the flattest bins' noise."""
    h = a.shape[-2]
    halo = reach + 2  # gradient (1 row) + max filter (reach) + blur (1)
    rows = 8 * band_rows(a, halo)
    out = torch.empty_like(a) if rows < h else None
    flat = torch.zeros_like(a[:, :1], dtype=torch.bool) if mode == "min" else None
    for i in range(0, h, rows):
        lo, hi = max(0, i - halo), min(h, i + rows + halo)
        tt = _texture(a[..., lo:hi, :], reach)
        if mode != "ref":
            tb = _texture(b[..., lo:hi, :], reach)
            zero = tb == 0 if flat is not None else None
            if zero is not None and bool(zero.any()):  # (a noisy candidate has none)
                band = (zero & (tt > 0)).any(dim=1, keepdim=True)
                flat[..., i : i + rows, :] = band[..., i - lo : i - lo + rows, :]
            tt = torch.minimum(tt, tb, out=tt) if mode == "min" else tt.mul_(tb).sqrt_()
        if out is None:
            return tt, flat
        out[..., i : i + rows, :] = tt[..., i - lo : i - lo + rows, :]
    assert out is not None
    return out, flat


def _base_grid(x: torch.Tensor) -> torch.Tensor:
    """2x2 means of (N, C, H, W), an odd last row or column completed by reflection (its
    neighbour: a full footprint, unlike ``pool2``'s), without a padded full-size copy."""
    h, w = x.shape[-2:]
    if not (h % 2 or w % 2):
        return pool2(x)
    he, we = h - h % 2, w - w % 2
    rows = [x[..., :he, :]] + ([x[..., h - 2 :, :]] if h % 2 else [])
    return torch.cat([torch.cat([pool2(r[..., :we])] + ([pool2(r[..., w - 2 :])] if w % 2
                                                         else []), dim=-1)
                      for r in rows], dim=-2)


def _sample_grid(h: int, w: int) -> tuple[int, int, int]:
    """The step of :func:`_sample`'s grid on an h x w image, and its rows and columns."""
    step = max(1, int((h * w / SAMPLES) ** 0.5))
    return step, len(range(0, h, step)), len(range(0, w, step))


def _sample(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, S): a regular subsample of about SAMPLES pixels."""
    step = _sample_grid(*x.shape[-2:])[0]
    return x[..., ::step, ::step].reshape(x.shape[0], x.shape[1], -1)


def _order_stat(v: ArrayT, q: float) -> ArrayT:
    """Quantile ``q`` of rows already sorted along the last dimension (linear interpolation,
    as ``torch.quantile``)."""
    pos = q * (v.shape[-1] - 1)
    lo = int(pos)
    hi = min(lo + 1, v.shape[-1] - 1)
    return v[..., lo] + (v[..., hi] - v[..., lo]) * (pos - lo)


def _bin_stat(v: ArrayT, spread: bool, tail: bool, xp: Any, cap: float = 0.0) -> ArrayT:
    """Per bin of ``v`` (sorted along its last axis; ``xp``: NumPy or torch): the median, or
    with ``spread`` the robust sigma of :meth:`BinnedCurves.curve` (``cap``: its floor)."""
    if not spread:
        return v[..., (v.shape[-1] - 1) // 2]  # the (lower) median, as torch.median
    stat = xp.maximum(_order_stat(v, 0.5) * _MAD, _order_stat(v, 0.75) / _Q75_SD)
    if tail:  # heavier-than-normal tails widen the sigma (q90 of |normal| = 1.645 sigma)
        q90 = _order_stat(v, 0.9) / _Q90_SD
        if cap:  # where the bulk is below the floor (an exact pair's untouched pixels), a tail
            # above 3x the floor is edits making up a tenth of the bin, not noise
            q90 = xp.where(stat < cap, q90.clip(max=3.0 * cap), q90)  # (torch: no float minimum)
        stat = xp.maximum(stat, q90)
    return stat


def _bin_stats(v: ArrayT, flags: tuple[bool, ...], tail: bool, xp: Any, cap: float = 0.0
               ) -> ArrayT:
    """:func:`_bin_stat` of each channel of ``v`` (N, K, B, per; unsorted) with its own
    ``spread`` flag; ``xp`` is ``numpy`` or ``torch``, whichever ``v`` belongs to."""
    sort = functools.partial(np.sort, axis=-1) if xp is np else sort_last
    if all(flags) or not any(flags):
        return _bin_stat(sort(xp.abs(v) if flags[0] else v), flags[0], tail, xp, cap)
    mask = [[[f]] for f in flags]  # (K, 1, 1): broadcasts over bins and their members
    mask = np.array(mask) if xp is np else torch.tensor(mask, device=v.device)
    v = sort(xp.where(mask, xp.abs(v), v))
    return xp.where(mask[..., 0], _bin_stat(v, True, tail, xp, cap),
                    _bin_stat(v, False, tail, xp, cap))


def _block_median(v: np.ndarray, block: np.ndarray, blocks: int) -> np.ndarray:
    """Per bin of ``v`` (N, K, B, per) whose members lie in spatial blocks ``block`` (N, 1, B,
    per; 0 .. blocks - 1): the (lower) median over the blocks holding at least 4 of its members
    of each block's own median, else the bin's median. A change confined to a few blocks (a
    local edit) does not move it, one in every block (an image-wide tone change) does."""
    lo = v.min(axis=-1, keepdims=True)
    span = np.maximum(v.max(axis=-1, keepdims=True) - lo, 1e-30)
    # grouped by block, then by value (the values themselves gathered: exact zeros stay zeros)
    grouped = np.take_along_axis(v, np.argsort((v - lo) / span * 0.5 + block, axis=-1), -1)
    rows = np.arange(block.shape[0] * block.shape[2]).reshape(block.shape[0], 1, -1, 1)
    counts = np.bincount((rows * blocks + block).ravel(), minlength=rows.size * blocks
                         ).reshape(*block.shape[:3], blocks)  # (N, 1, B, blocks)
    mid = np.maximum(np.cumsum(counts, axis=-1) - counts + (counts - 1) // 2, 0)
    med = np.take_along_axis(grouped, np.broadcast_to(mid, (*v.shape[:3], blocks)), axis=-1)
    med = np.where(counts >= 4, med, np.inf)
    valid = (counts >= 4).sum(axis=-1)  # (N, 1, B)
    pick = np.broadcast_to(np.maximum(valid - 1, 0) // 2, v.shape[:3])[..., None]
    out = np.take_along_axis(np.sort(med, axis=-1), pick, axis=-1)[..., 0]
    whole = np.sort(v, axis=-1)[..., (v.shape[-1] - 1) // 2]
    return np.where(valid > 0, out, whole).astype(v.dtype)


class BinnedCurves:
    """Equal-count bins of a key (N, Kk, H, W), cut on a subsample, and each pixel's nearest
    point on a uniform grid of _LUT cells over the bin centres: shared by every curve fitted
    against the same key, so a curve costs one small sort and one gather, not a full-size
    search."""

    def __init__(self, key: torch.Tensor, bins: int, exclude: torch.Tensor | None = None
                 ) -> None:
        n, kk = key.shape[:2]
        ks = _sample(key)
        valid = ks.shape[-1]
        if exclude is not None:  # pixels left out of the fit (still looked up): sorted last
            ex = _sample(exclude.expand_as(key))
            valid = max(1, int((~ex).sum(-1).min()))  # one sample's channels share the mask
            ks = ks.masked_fill(ex, float("inf"))
        self.b = b = max(1, min(bins, valid // 8))
        self.per = per = valid // b
        self.order = argsort_last(ks)[..., : per * b].to(key.device)
        ksort = ks.gather(2, self.order).view(n, kk, b, per)
        self.centres = ksort[..., (per - 1) // 2].contiguous()  # (N, Kk, B), the bin medians
        if b == 1:
            return
        c0, span = self.centres[..., :1], self.centres[..., -1:] - self.centres[..., :1]
        steps = torch.linspace(0.0, 1.0, _LUT + 1, device=key.device, dtype=key.dtype)
        self.grid = (c0 + span * steps).contiguous()  # (N, Kk, _LUT + 1)
        self.key, self.c0, self.scale = key, c0, _LUT / span.clamp_min(1e-12)
        self.cells: torch.Tensor | None = None  # the whole key's, once asked for
        # each grid point's bracketing bin centres and weight: shared by every curve
        hi = torch.searchsorted(self.centres, self.grid).clamp_(1, b - 1)  # exact
        lo = hi - 1
        c0g, c1g = self.centres.gather(2, lo), self.centres.gather(2, hi)
        self.lo, self.hi = lo, hi
        self.wgt = ((self.grid - c0g) / (c1g - c0g).clamp_min(1e-12)).clamp_(0.0, 1.0)

    def channel(self, i: int) -> BinnedCurves:
        """The bins of the key's channel ``i`` alone: the same as ``BinnedCurves`` of that
        channel (bins are cut per channel; excluded pixels are the same in every channel)."""
        one = copy.copy(self)
        pick = slice(i, i + 1)
        one.order, one.centres = self.order[:, pick], self.centres[:, pick]
        if self.b > 1:
            one.grid, one.key, one.c0 = self.grid[:, pick], self.key[:, pick], self.c0[:, pick]
            one.scale, one.lo, one.hi = self.scale[:, pick], self.lo[:, pick], self.hi[:, pick]
            one.wgt = self.wgt[:, pick]
            one.cells = self.cells[:, pick] if self.cells is not None else None
        return one

    def _cells(self, lo: int, hi: int) -> torch.Tensor:
        """The nearest grid point (N, Kk, P) of each pixel of the key's rows lo:hi (clamped
        to the grid: constant beyond the first and last centre)."""
        n, kk = self.key.shape[:2]
        x = (self.key[..., lo:hi, :].reshape(n, kk, -1) - self.c0).mul_(self.scale)
        return x.add_(0.5).clamp_(0.0, float(_LUT)).long()  # >= 0: truncation rounds

    def fit(self, val: torch.Tensor, spread: bool | tuple[bool, ...], tail: bool = False,
            cap: float = 0.0, blocks: int = 0) -> torch.Tensor:
        """One robust value per bin (N, K, B) of ``val`` (N, K, H, W); see ``curve``
        (``spread`` may also be one flag per channel: several curves in one pass). ``cap``:
        the floor the sigma will get (see ``curve``). ``blocks`` (medians only, with a
        one-channel key): each bin's median is the median over a blocks x blocks grid
        of the image of each block's own median, so a change confined to a few blocks does
        not move it."""
        n, k = val.shape[:2]
        order = self.order.expand(n, k, -1) if self.order.shape[1] != k else self.order
        v = _sample(val).gather(2, order).view(n, k, self.b, self.per)
        flags = (spread,) * k if isinstance(spread, bool) else spread
        if blocks and not any(flags):  # medians across a blocks x blocks grid of the image
            if self.order.shape[1] != 1:
                raise ValueError("blocks needs a one-channel key (its members' blocks)")
            _, ny, nx = _sample_grid(*val.shape[-2:])
            i = np.arange(ny * nx)  # the samples, row-major as _sample flattens them
            where = (i // nx * blocks // ny) * blocks + (i % nx) * blocks // nx
            block = where[self.order[:, :1].cpu().numpy()].reshape(n, 1, self.b, self.per)
            med = _block_median(v.cpu().numpy(), block, blocks * blocks)
            return torch.from_numpy(med).to(val.device)
        if v.device.type == "cpu":  # small arrays: NumPy's per-call cost is a fraction of torch's
            return torch.from_numpy(_bin_stats(v.numpy(), flags, tail, np, cap))
        return _bin_stats(v, flags, tail, torch, cap)

    def curve(self, val: torch.Tensor, spread: bool | tuple[bool, ...], tail: bool = False,
              cap: float = 0.0, blocks: int = 0) -> torch.Tensor:
        """A per-pixel statistic of ``val`` (N, K, H, W) as a function of the key, fitted
        robustly on the subsample, linear between bin centres (constant beyond them), looked
        up at the nearest of _LUT + 1 grid points.

        ``spread=False``: the bin's median (a tone curve). ``spread=True``: a sigma, the larger
        of 1.4826 * median|val| and q75|val| / 1.15 (both sigma for normal residue; the
        quantile keeps quantised, mostly-zero residue from reading as noiseless); with ``tail``
        also q90|val| / 1.645, so heavy-tailed residue widens it, except that in bins whose
        bulk is below ``cap`` (the sigma's floor: an exact pair) the tail adds at most 3x
        ``cap`` (a strong edit filling a tenth of a bin otherwise set its sigma and cut its
        own map 100-fold). One flag per channel: each channel's curve as if asked for alone.
        """
        n, k = val.shape[:2]
        stat = self.fit(val, spread, tail, cap, blocks)
        if self.b == 1:  # (a tiny image) a fresh tensor, as from the gather below
            return stat.view(n, k, 1, 1).expand_as(val).clone()
        kk = self.centres.shape[1]
        lo, hi = self.lo, self.hi
        if kk != k:
            lo, hi = lo.expand(n, k, -1), hi.expand(n, k, -1)
        s0 = stat.gather(2, lo)
        table = s0 + (stat.gather(2, hi) - s0) * self.wgt  # (N, K, _LUT + 1)
        table[..., -1] = stat[..., -1]  # at and above the last centre (also a single centre)
        table = table.view(n, kk, k // kk, _LUT + 1)  # a key's channels share its cells
        h, w = val.shape[-2:]
        rows = 8 * band_rows(val)  # in bands on the CPU: no full-size cell indices held
        if rows >= h:
            if self.cells is None:
                self.cells = self._cells(0, h)
            cells = self.cells[:, :, None].expand(n, kk, k // kk, -1)
            return table.gather(3, cells).view(val.shape)
        out = torch.empty_like(val)
        for i in range(0, h, rows):
            m = min(rows, h - i)
            cells = self._cells(i, i + m)[:, :, None].expand(n, kk, k // kk, -1)
            out[..., i : i + m, :] = table.gather(3, cells).view(n, k, m, w)
        return out


def _filter_design(a: torch.Tensor, b: torch.Tensor, r: int, step: int) -> torch.Tensor:
    """The linear model of ``b`` on ``a`` (N, C, H, W) at a regular subsample of pixels (r or
    more from the border), in float64 (neighbouring pixels correlate closely), one row per
    variable: the (2r+1)^2 neighbours in ``a``, a constant, then ``b`` itself (N * C, P + 1,
    S), so one batched product gives both the Gram matrix and the right-hand side."""
    n, c, h, w = a.shape
    ny, nx = len(range(r, h - r, step)), len(range(r, w - r, step))
    k = 2 * r + 1
    a = a.contiguous()
    sn, sc, sh, sw = a.stride()
    windows = a.as_strided((n, c, k, k, ny, nx), (sn, sc, sh, sw, step * sh, step * sw),
                           a.storage_offset())
    d = torch.empty(n, c, k * k + 2, ny, nx, dtype=torch.float64, device=a.device)
    d[:, :, : k * k].view(n, c, k, k, ny, nx).copy_(windows)  # one strided copy
    d[:, :, k * k] = 1.0
    d[:, :, k * k + 1] = b[..., r : h - r : step, r : w - r : step]
    return d.view(n * c, k * k + 2, ny * nx)


def fit_linear_filter(a: torch.Tensor, b: torch.Tensor, radius: int = 2, iters: int = 3
                      ) -> torch.Tensor:
    """The image-wide linear filter of a pair: per (sample, channel) of (N, C, H, W), the
    (2 radius + 1)^2 kernel and offset with ``b ~ kernel * a + offset`` (least squares on a
    subsample, reweighted ``iters`` times by Huber's weights, so local edits, a small share of
    the pixels, do not bend it); the identity where that fits no better or cannot be solved
    (a constant image). A tiny image gets a smaller kernel. Returns (N, C, P) coefficients,
    the offset last."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"fit_linear_filter takes two (N, C, H, W) tensors of one shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    n, c, h, w = a.shape
    r = max(0, min(radius, (min(h, w) - 1) // 2))
    while r and (h - 2 * r) * (w - 2 * r) < 8 * ((2 * r + 1) ** 2 + 1):
        r -= 1  # a tiny image: a smaller kernel, at least 8 samples per coefficient
    step = max(1, int(((h - 2 * r) * (w - 2 * r) / _FIT_SAMPLES) ** 0.5))
    d = _filter_design(a, b, r, step)  # (N * C, P + 1, S): the regressors, then b
    p = d.shape[1] - 1
    x, y = d[:, :p], d[:, p:]
    eye = torch.eye(p, dtype=torch.float64, device=d.device)
    failed = torch.zeros(n * c, 1, dtype=torch.bool, device=d.device)
    dw = d
    for i in range(max(1, iters)):
        g = torch.bmm(dw, d.transpose(1, 2))  # [[X'WX, X'Wy], [y'WX, y'Wy]]
        gram = g[:, :p, :p]
        ridge = 1e-9 * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)[:, None, None]
        beta, info = torch.linalg.solve_ex(gram + ridge * eye, g[:, :p, p:])
        failed |= (info != 0)[:, None] | ~beta.isfinite().all(dim=1)
        beta = beta.nan_to_num_(0.0, 0.0, 0.0)
        res = (y - torch.bmm(beta.transpose(1, 2), x)).abs_()  # (N * C, 1, S)
        if i + 1 < iters:
            scale = res.median(dim=-1, keepdim=True).values.mul_(_MAD * 1.345).clamp_min(1e-6)
            dw = d * (scale / res.clamp_min(1e-12)).clamp_(max=1.0)  # Huber: 1 in, c/|r| out
    # where the plain difference does at least as well (an identical pair, pure noise), keep
    # it: exact zeros stay zeros
    centre = (p - 1) // 2
    plain = (y - x[:, centre : centre + 1]).abs_().median(dim=-1).values
    identity = torch.zeros_like(beta)
    identity[:, centre] = 1.0
    keep = failed | (plain <= res.median(dim=-1).values)  # also where the solve failed
    beta = torch.where(keep[:, None], identity, beta)
    return beta.reshape(n, c, p).to(a.dtype)


def _is_identity(beta: torch.Tensor) -> bool:
    """Whether :func:`fit_linear_filter`'s coefficients are the identity everywhere."""
    centre = (beta.shape[-1] - 1) // 2
    ones = int((beta[..., centre] == 1).sum())
    return ones == beta[..., 0].numel() == int(beta.count_nonzero())


def apply_linear_filter(a: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``kernel * a + offset`` of (N, C, H, W) for :func:`fit_linear_filter`'s coefficients,
    replicate borders: shifted multiply-adds (faster than a depthwise conv2d on the CPU), in
    bands of rows on the CPU (no padded full-size copy)."""
    n, c, h, w = a.shape
    k = round((beta.shape[-1] - 1) ** 0.5)
    r = k // 2
    taps = beta[..., :-1].reshape(n, c, k * k, 1, 1)
    offset = beta[..., -1].reshape(n, c, 1, 1)
    out = torch.empty_like(a)
    rows = 8 * band_rows(a, r) if r else h
    for i in range(0, h, rows):
        lo, hi = max(0, i - r), min(h, i + rows + r)
        band = a[..., lo:hi, :]
        if r:
            band = F.pad(band, (r, r, r - (i - lo), r - (hi - min(h, i + rows))),
                         mode="replicate")
        m = band.shape[-2] - 2 * r
        acc = out[..., i : i + m, :]
        acc.copy_(offset.expand_as(acc))
        for t in range(k * k):
            dy, dx = divmod(t, k)
            acc.addcmul_(band[..., dy : dy + m, dx : dx + w], taps[:, :, t])
    return out


def _quantiles(v: ArrayT, count: ArrayT, qs: tuple[float, ...], xp: Any) -> ArrayT:
    """Quantiles ``qs`` (linear interpolation) of the first ``count`` values of each row of
    ``v`` (R, L), sorted ascending: (R, len(qs)). NumPy or torch, as ``v``."""
    last = (count - 1).clip(0)[:, None]
    pos = last * (xp.asarray(qs) if xp is np else torch.tensor(qs, device=v.device))
    lo = pos.astype(np.int64) if xp is np else pos.long()
    hi = xp.minimum(lo + 1, last)
    rows = (np.arange(v.shape[0]) if xp is np else torch.arange(v.shape[0], device=v.device))
    a, b = v[rows[:, None], lo], v[rows[:, None], hi]
    return a + (b - a) * (pos - lo)


def _border_sigma(pairs: list[tuple[torch.Tensor, torch.Tensor]], width: int,
                  tail: bool = True) -> None:
    """For each (residue, sigma) pair of (N, C, H, W): raise the sigma in each side's band of
    ``width`` pixels to at least the band's own robust sigma, per channel, in place: 1.4826 x
    its median |residue| (an edit along up to half a side leaves it), raised by its q75 and
    (with ``tail``) q90 over the values within 10x of that (a strong edit on the border, and
    its spill at coarse levels, are left out; a border residue is kept). How a filter pads (reflect,
    replicate, a lost odd row) is unknown, so a band's residue is measured on the band. All
    bands of all pairs in one padded array, one sort (NumPy on the CPU: small arrays)."""
    cpu = pairs[0][0].device.type == "cpu"
    xp: Any = np if cpu else torch
    n, _, h, w = pairs[0][0].shape
    c = sum(d.shape[1] for d, _ in pairs)
    lr, lc = width * w, width * h  # the lengths of a row band and of a column band
    every = slice(None)
    sides = ((..., slice(0, width), every), (..., slice(h - width, h), every),
             (..., every, slice(0, width)), (..., every, slice(w - width, w)))
    v = (np.full((n, c, 4, max(lr, lc)), np.inf, np.float32) if cpu else
         torch.full((n, c, 4, max(lr, lc)), float("inf"), device=pairs[0][0].device))
    c0 = 0
    for d, _ in pairs:
        x, ci = (d.numpy() if cpu else d), d.shape[1]
        for i, side in enumerate(sides):
            band = x[side]
            xp.abs(band, out=v[:, c0 : c0 + ci, i, : band.shape[-2] * band.shape[-1]].reshape(
                band.shape))
        c0 += ci
    v = (np.sort(v, axis=-1) if cpu else sort_last(v)).reshape(n * c * 4, -1)
    count = np.tile(np.array([lr, lr, lc, lc]), n * c)
    if not cpu:
        count = torch.from_numpy(count).to(v.device)
    stat = _quantiles(v, count, (0.5,), xp)[:, 0] * _MAD
    kept = (v <= 10.0 * stat[:, None]).sum(-1)
    qs, zs = ((0.75, 0.9), [_Q75_SD, _Q90_SD]) if tail else ((0.75,), [_Q75_SD])
    upper = _quantiles(v, kept, qs, xp) / (xp.asarray(zs) if cpu else
                                           torch.tensor(zs, device=v.device))
    stat = xp.maximum(stat, upper.max(-1) if cpu else upper.amax(-1)).reshape(n, c, 4)
    c0 = 0
    for d, sg in pairs:
        y, ci = (sg.numpy() if cpu else sg), d.shape[1]
        for i, side in enumerate(sides):
            xp.maximum(y[side], stat[:, c0 : c0 + ci, i, None, None], out=y[side])
        c0 += ci


def _robust_z(x: torch.Tensor, floor_sd: float, centre: bool = True) -> torch.Tensor:
    """Standardise each (sample, channel) of ``x`` by its median and MAD (sd at least
    ``floor_sd``, the value for white noise)."""
    s = _sample(x)
    med = s.median(dim=-1, keepdim=True).values if centre else torch.zeros_like(s[..., :1])
    mad = (s - med).abs().median(dim=-1, keepdim=True).values * _MAD
    sd = mad.clamp_min(floor_sd)
    return (x - med[..., None]) / sd[..., None]


def _chi_to_z(q: torch.Tensor, k: int) -> torch.Tensor:
    """A sum of ``k`` squared z-scores -> the equivalent one-sided z (Wilson-Hilferty)."""
    if k == 1:
        return q.sqrt()
    v = 2.0 / (9.0 * k)
    return ((q / k).clamp_min(0).pow(1.0 / 3.0) - (1.0 - v)) / v**0.5


def _level_z(pix: torch.Tensor, fit: BinnedCurves, k: int, level: int, tail: bool,
             border: int = 0) -> torch.Tensor:
    """One pyramid level's evidence (N, 1, h, w) in z: its mean change (``k`` channels of
    ``pix``) and its energy (the next), each against its own spread as a function of the
    level's texture key, both measured on the pair (its temporaries end with the call)."""
    s = _blur(pix[:, : k + 1])
    white = _BLUR_GAIN / 2.0**level  # sd of this level's map for white unit noise
    # the mean channels' sigmas and the energy's median, in one pass
    curves = fit.curve(s, spread=(True,) * k + (False,), tail=tail, cap=white)
    sig = curves[:, :k].clamp_min_(white)
    e = s[:, k:] - curves[:, k:]
    abs_sd = _ABS_SD / k**0.5
    esig = fit.curve(e, spread=True, tail=tail, cap=abs_sd * white).clamp_min_(abs_sd * white)
    if border and min(s.shape[-2:]) > 2 * border:  # the border bands: their own sigmas
        _border_sigma([(s[:, :k], sig), (e, esig)], border, tail)
    sm = s[:, :k].div_(sig)  # (s is this call's own)
    del curves, sig
    mean_z = _chi_to_z(sm.mul_(sm).sum(dim=1, keepdim=True), k).clamp_min(0)
    del sm, s
    energy_z = e.div_(esig)
    return torch.maximum(mean_z, energy_z.clamp_min_(0), out=mean_z)


def significance_map(
    ref: torch.Tensor, cand: torch.Tensor, *, levels: int = 4, bins: int = 16,
    floor: float = 0.002, gain: float = 1.5, tone: bool = True, reach: int = 2,
    tail: bool = True, border: int = 2, texture: str = "min", kernel: int = 2,
) -> torch.Tensor:
    """The calibrated map (N, 1, H, W) of an (N, C, H, W) pair; see the module docstring.
    Each sample on its own: its statistics (bins, pixels left out of the noise fit) are its
    own, so a batch gives exactly the maps of its pairs one by one."""
    if ref.shape[0] > 1:
        return torch.cat([significance_map(
            ref[i : i + 1], cand[i : i + 1], levels=levels, bins=bins, floor=floor, gain=gain,
            tone=tone, reach=reach, tail=tail, border=border, texture=texture, kernel=kernel)
            for i in range(ref.shape[0])])
    if ref.shape[1] == 3 and _is_gray(ref) and _is_gray(cand):
        # grey stored as RGB: one channel, as a grey file (3 equal channels would spread
        # one channel's evidence over three degrees of freedom, ~sqrt(3) lower)
        ref, cand = ref[:, :1], cand[:, :1]
    h, w = ref.shape[-2:]
    a, b = ref.float(), cand.float()
    he, we = (h + h % 2, w + w % 2) if min(h, w) >= 2 else (h, w)
    if min(h, w) >= 2:  # the base grid: 2x2 means (edits of interest are >= 8 px); an odd
        # last row or column is completed by reflection (its neighbour), so every base pixel
        # has a full footprint and none of the candidate's border rows loses its neighbour
        a, b = _base_grid(a), _base_grid(b)
    a, b = _opponent(a), _opponent(b)
    # the image-wide linear filter (blur, resampling, gain, offset) explains first
    # (where the plain difference fits as well, the filter is the identity: skipped, exactly)
    beta = fit_linear_filter(a, b, kernel) if kernel else None
    filtered = beta is not None and not _is_identity(beta)
    d = b - (apply_linear_filter(a, beta) if filtered else a)
    if tone:  # then an image-wide tone change (and clipping at black or white, where it
        # is most of the image's residue: see below)
        tone_fit = BinnedCurves(a[:, :1], max(1, bins // 2))
        curve = tone_fit.curve(d, spread=False, blocks=_TONE_BLOCKS)
        # kept per channel only where it fits better than none (an exact pair with an edit:
        # a curve bent by the edit would only move unchanged pixels)
        ds = _sample(d)
        both = torch.stack([ds, ds - _sample(curve)]).abs_().median(dim=-1).values
        keep = both[1] < both[0]  # (N, C)
        if not bool(keep.all()):
            curve = curve.mul_(keep.to(curve.dtype)[..., None, None])
        d = d.sub_(curve)
        del curve, ds
    k = a.shape[1]
    tt, flat = _pair_texture(a, b, reach, texture)
    flat = flat if flat is not None and bool(flat.any()) else None  # usually nothing
    if flat is not None and reach:  # with the ring inside it, where the candidate's texture
        # is the blurred trace of the fill's edge (the lowest keys, held by the fill's pixels)
        flat = max_filter(flat.to(torch.uint8), reach + 1) > 0  # (as bytes, not floats)
    banded = bool(border) and min(tt.shape[-2:]) > 2 * border
    if banded:  # filters pad differently at the borders
        top = tt.amax(dim=(-2, -1), keepdim=True)
        for dim in (-2, -1):
            for side in (tt.narrow(dim, 0, border), tt.narrow(dim, tt.shape[dim] - border, border)):
                side.copy_(top.expand_as(side))
    t = tt.add_(1e-10).log_()
    noise = BinnedCurves(t, bins, flat)
    sigma = noise.curve(d, spread=True).clamp_min_(floor)
    if banded:
        _border_sigma([(d, sigma)], border, tail)
    z0 = d.div_(sigma)
    del sigma
    pix = torch.cat([z0, z0.abs().mean(dim=1, keepdim=True), t[:, :1]], dim=1)
    del a, b, d, z0, tt, t  # the levels need only pix (and the noise fit, the first)
    flat_share = flat.float() if flat is not None else None  # pooled with the levels
    base = pix.shape[-2:]
    # the first level's key is the noise fit's first channel with the same pixels left out:
    # its bins are those (the noise fit, and the texture it holds, end with that level)
    fit = noise.channel(0)
    del noise
    out: torch.Tensor | None = None
    for level in range(levels):
        if level and min(pix.shape[-2:]) < 2:
            break
        if level:
            pix = pool2(pix)
            flat_share = pool2(flat_share) if flat_share is not None else None
            exclude = flat_share > 0.5 if flat_share is not None else None
            fit = BinnedCurves(pix[:, k + 1 :], bins, exclude)  # one key per level
        z = _level_z(pix, fit, k, level, tail, border if banded else 0)
        del fit
        if level:  # coarse evidence only where finer evidence supports it
            z = F.interpolate(z, size=base, mode="bilinear", align_corners=False)
            capped = torch.minimum(z, out * gain, out=z)
            out = torch.maximum(out, capped, out=out)
        else:
            out = z
    assert out is not None
    if out.shape[-2:] != (he, we):
        out = F.interpolate(out, size=(he, we), mode="bilinear", align_corners=False)
    if (he, we) != (h, w):  # less the reflected row or column
        out = out[..., :h, :w].contiguous()
    return out


# unit/vmin/vmax/scale: how PipelineConfig draws its heatmaps by default (fixed units, so maps
# of different pairs compare and a pair without a difference looks empty).
@STRATEGIES.register("significance", uses_metric=False, needs_grad=False,
                     unit=SIGNIFICANCE_UNIT, vmin=3.0, vmax=30.0, scale="sqrt")
def significance(
    ref: torch.Tensor, cand: torch.Tensor, metric: BoundMetric, *,
    levels: Annotated[int, Field(ge=1, le=8)] = 4,
    bins: Annotated[int, Field(ge=1, le=64)] = 16,
    floor: Annotated[float, Field(gt=0)] = 0.002,
    gain: Annotated[float, Field(ge=1.0)] = 1.5,
    tone: bool = True,
    reach: Annotated[int, Field(ge=0, le=8)] = 2,
    tail: bool = True,
    border: Annotated[int, Field(ge=0, le=16)] = 2,
    texture: Literal["min", "ref", "geomean"] = "min",
    kernel: Annotated[int, Field(ge=0, le=4)] = 2,
) -> tuple[torch.Tensor, MetricOutput | None]:
    """How far each spot's change stands above the pair's own residual, in robust sigmas.

    Calibrated on the pair itself (noise level per texture, spread per scale), integrated over
    ~2-16 px neighbourhoods; catches shifts in mean and in texture, hue at constant brightness.
    ``kernel``: the radius (base pixels) of the image-wide linear filter explained first
    (0: none, the raw difference); ``floor`` is the smallest residual sigma assumed (data
    units); ``gain``: how much a coarser scale may add per octave over the finer one;
    ``tone``: explain an image-wide tone curve (and clipping) after the filter; ``reach``: how
    far (base pixels) edge residue is expected beside an edge; ``tail``: heavy-tailed residue
    widens the sigmas (q90). The metric is not used.
    """
    return significance_map(ref, cand, levels=levels, bins=bins, floor=floor, gain=gain,
                            tone=tone, reach=reach, tail=tail,
                            border=border, texture=texture, kernel=kernel), None
