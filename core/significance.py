"""The ``significance`` strategy: a difference map in calibrated units (z, robust sigmas).

Per pixel it says how far the local change stands above what the pair's own image-wide
residual explains. The residual (candidate - reference, in an opponent colour space so a hue
change counts) is normalised by a noise level fitted on the pair itself: medians of |residual|
in bins of local texture (codec and resampling residue is larger on edges than on flat areas).
The normalised residual is then integrated over neighbourhoods of an avg-pool pyramid (sigma
~2 to ~32 px): its mean (zero-mean residue cancels, a real change does not) and its mean
absolute value (changes with no mean shift: mirrored patches, blurred or removed texture).
Each level's spread is measured robustly on the pair (the residue is spatially correlated),
so every level's map is a z-score; coarse evidence is shown only where finer evidence
supports it (``gain`` per octave), which keeps spots from bleeding into their surroundings.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from .metrics import MetricOutput
from .strategies import STRATEGIES, BoundMetric

__all__ = ["SIGNIFICANCE_UNIT", "significance", "significance_map"]

#: the unit of the map, named on colorbars
SIGNIFICANCE_UNIT = "significance (robust sigmas)"

_MAD = 1.4826  # MAD -> standard deviation of a normal distribution
_BLUR_GAIN = 0.375  # sd gain of the 2-D [1, 2, 1] / 4 blur on white noise (6/16 per axis)
_ABS_MEAN, _ABS_SD = 0.7979, 0.6028  # mean and sd of |z| for z ~ N(0, 1)
_SAMPLES = 16384  # pixels sampled for the robust statistics


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB -> (luminance, red-green, yellow-blue); other channel counts pass through."""
    if x.shape[1] != 3:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([(r + g + b) / 3.0, (r - g) / 2.0, (r + g - 2.0 * b) / 4.0], dim=1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 3-tap binomial blur [1, 2, 1] / 4, replicate borders (shifted adds)."""
    h, w = x.shape[-2:]
    y = F.pad(x, (1, 1, 1, 1), mode="replicate")
    r = (y[..., 0:w] + y[..., 2 : w + 2]) * 0.25 + y[..., 1 : w + 1] * 0.5
    return (r[..., 0:h, :] + r[..., 2 : h + 2, :]) * 0.25 + r[..., 1 : h + 1, :] * 0.5


def _texture(x: torch.Tensor, reach: int) -> torch.Tensor:
    """Local gradient energy of each channel of (N, C, H, W), spread over ``reach`` pixels
    (max filter, then blur): residue of blur and resampling reaches beyond the edge itself."""
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    g = gx * gx + gy * gy
    for _ in range(reach):  # a separable (2 reach + 1)^2 max filter, one pixel at a time
        p = F.pad(g, (1, 1, 1, 1), mode="replicate")
        g = torch.maximum(torch.maximum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]), g)
        p = F.pad(g, (0, 0, 1, 1), mode="replicate")
        g = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 2:, :]), g)
    return _blur(g)


def _sample(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, S): a regular subsample of about _SAMPLES pixels."""
    h, w = x.shape[-2:]
    step = max(1, int((h * w / _SAMPLES) ** 0.5))
    return x[..., ::step, ::step].reshape(x.shape[0], x.shape[1], -1)


def _curve(key: torch.Tensor, val: torch.Tensor, bins: int, spread: bool,
           tail: bool = False) -> torch.Tensor:
    """A per-pixel statistic of ``val`` (N, K, H, W) as a function of ``key`` (N, 1 or K, H, W),
    fitted robustly on a subsample: sorted by key, cut into equal-count bins, one value per bin,
    interpolated linearly between bin centres.

    ``spread=False``: the bin's median (a tone curve). ``spread=True``: a sigma, the larger of
    1.4826 * median|val| and q75|val| / 1.15 (both sigma for normal residue; the quantile keeps
    quantised, mostly-zero residue from reading as noiseless); with ``tail`` also q90|val| /
    1.645, so heavy-tailed residue widens it.
    """
    n, k = val.shape[:2]
    kk = key.shape[1]
    ks, vs = _sample(key), _sample(val)  # (N, Kk, S), (N, K, S)
    b = max(1, min(bins, ks.shape[-1] // 8))
    per = ks.shape[-1] // b
    order = ks.argsort(dim=-1)[..., : per * b].expand(n, k, -1)
    ksort = ks.expand(n, k, -1).gather(2, order).view(n, k, b, per)
    vsort = vs.gather(2, order).view(n, k, b, per)
    if spread:
        vsort = vsort.abs()
        q = torch.quantile(vsort, torch.tensor([0.5, 0.75, 0.9], dtype=val.dtype), dim=-1)
        stat = torch.maximum(q[0] * _MAD, q[1] / 1.1503)
        if tail:  # heavier-than-normal tails widen the sigma (q90 of |normal| = 1.645 sigma)
            stat = torch.maximum(stat, q[2] / 1.6449)
    else:
        stat = vsort.median(dim=-1).values  # (N, K, B)
    if b == 1:
        return stat.view(n, k, 1, 1).expand_as(val)
    centres = ksort.median(dim=-1).values.contiguous()  # (N, K, B), non-decreasing
    flat = key.reshape(n, kk, -1).expand(n, k, -1).contiguous()
    hi = torch.searchsorted(centres, flat).clamp(1, b - 1)
    lo = hi - 1
    c0, c1 = centres.gather(2, lo), centres.gather(2, hi)
    wgt = ((flat - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    s0, s1 = stat.gather(2, lo), stat.gather(2, hi)
    return (s0 + (s1 - s0) * wgt).view(val.shape)


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


def significance_map(
    ref: torch.Tensor, cand: torch.Tensor, *, levels: int = 5, bins: int = 16,
    floor: float = 0.002, gain: float = 1.5, tone: bool = True, reach: int = 2,
    tail: bool = True, border: int = 2, texture: str = "min",
) -> torch.Tensor:
    """The calibrated map (N, 1, H, W) of an (N, C, H, W) pair; see the module docstring."""
    h, w = ref.shape[-2:]
    a, b = ref.float(), cand.float()
    if min(h, w) >= 2:  # the base grid: 2x2 means (edits of interest are >= 8 px)
        a, b = F.avg_pool2d(a, 2, ceil_mode=True), F.avg_pool2d(b, 2, ceil_mode=True)
    d = b - a
    if tone:  # an image-wide tone change (and clipping at black or white) explains
        d = d - _curve(a, d, max(1, bins // 2), spread=False)
    a, b, d = _opponent(a), _opponent(b), _opponent(d)
    k = a.shape[1]
    ta, tb = _texture(a, reach), _texture(b, reach)
    tt = torch.minimum(ta, tb) if texture == "min" else ta if texture == "ref" else (ta * tb).sqrt()
    if border and min(tt.shape[-2:]) > 2 * border:  # filters pad differently at the borders
        top = tt.amax(dim=(-2, -1), keepdim=True).expand_as(tt)
        edge = torch.ones_like(tt[:1, :1], dtype=torch.bool)
        edge[..., border:-border, border:-border] = False
        tt = torch.where(edge, top, tt)
    t = torch.log(tt + 1e-10)
    z0 = d / _curve(t, d, bins, spread=True).clamp_min(floor)
    pix = torch.cat([z0, z0.abs().mean(dim=1, keepdim=True), t[:, :1]], dim=1)
    abs_sd = _ABS_SD / k**0.5
    base = pix.shape[-2:]
    out: torch.Tensor | None = None
    for level in range(levels):
        if level and min(pix.shape[-2:]) < 2:
            break
        if level:
            pix = F.avg_pool2d(pix, 2, ceil_mode=True)
        s = _blur(pix[:, : k + 1])
        tl = pix[:, k + 1 :]
        white = _BLUR_GAIN / 2.0**level  # sd of this level's map for white unit noise
        # each level's spread, as a function of texture, measured on the pair
        sm = s[:, :k] / _curve(tl, s[:, :k], bins, spread=True, tail=tail).clamp_min(white)
        mean_z = _chi_to_z((sm * sm).sum(dim=1, keepdim=True), k).clamp_min(0)
        e = s[:, k:] - _curve(tl, s[:, k:], bins, spread=False)
        energy_z = (e / _curve(tl, e, bins, spread=True, tail=tail).clamp_min(abs_sd * white))
        z = torch.maximum(mean_z, energy_z.clamp_min(0))
        if level:  # coarse evidence only where finer evidence supports it
            z = F.interpolate(z, size=base, mode="bilinear", align_corners=False)
            out = torch.maximum(out, torch.minimum(z, gain * out))
        else:
            out = z
    assert out is not None
    if out.shape[-2:] != (h, w):
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return out


# unit/vmin/vmax/scale: how PipelineConfig draws its heatmaps by default (fixed units, so maps
# of different pairs compare and a pair without a difference looks empty).
@STRATEGIES.register("significance", uses_metric=False, needs_grad=False,
                     unit=SIGNIFICANCE_UNIT, vmin=3.0, vmax=30.0, scale="sqrt")
def significance(
    ref: torch.Tensor, cand: torch.Tensor, metric: BoundMetric, *,
    levels: Annotated[int, Field(ge=1, le=8)] = 5,
    bins: Annotated[int, Field(ge=1, le=64)] = 16,
    floor: Annotated[float, Field(gt=0)] = 0.002,
    gain: Annotated[float, Field(ge=1.0)] = 1.5,
    tone: bool = True,
    reach: Annotated[int, Field(ge=0, le=8)] = 2,
    tail: bool = True,
    border: Annotated[int, Field(ge=0, le=16)] = 2,
    texture: Literal["min", "ref", "geomean"] = "min",
) -> tuple[torch.Tensor, MetricOutput | None]:
    """How far each spot's change stands above the pair's own residual, in robust sigmas.

    Calibrated on the pair itself (noise level per texture, spread per scale), integrated over
    ~2-32 px neighbourhoods; catches shifts in mean and in texture, hue at constant brightness.
    ``floor`` is the smallest residual sigma assumed (data units); ``gain``: how much a coarser
    scale may add per octave over the finer one; ``tone``: explain an image-wide tone curve
    (and clipping) first; ``reach``: how far (base pixels) edge residue is expected beside an
    edge; ``tail``: heavy-tailed residue widens the sigmas (q90). The metric is not used.
    """
    return significance_map(ref, cand, levels=levels, bins=bins, floor=floor, gain=gain,
                            tone=tone, reach=reach, tail=tail,
                            border=border, texture=texture), None
