"""Difference regions: the ranked spots of a map, as boxes with scores.

A map is thresholded (by default by hysteresis in the map's units, which suits the
calibrated ``significance`` map: a spot needs a core above ``high`` and extends over
``low``; or at a percentile, Otsu or a value), split into connected components
(8-connectivity by default) and each component becomes a :class:`Region`. A percentile
threshold keeps that share of pixels, so an edit larger than 2% of the image is only partly
boxed: lower ``percentile`` for large or widespread differences.
Threshold components are labelled with a run-length union-find in numpy; hysteresis uses
scipy.ndimage.label (scipy comes with lpips)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .postprocess import otsu_threshold

__all__ = ["Region", "RegionsConfig", "find_regions", "hysteresis_components",
           "label_components", "region_mask"]


class RegionsConfig(BaseModel):
    """How regions are extracted from a map."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_regions: Annotated[int, Field(ge=0, le=1000)] = 10
    min_area: Annotated[int, Field(ge=1)] = 16
    # A high percentile beats Otsu, which splits strong edits from weak ones (benchmarks/README).
    # Hysteresis in robust sigmas suits the default (significance) map; PipelineConfig uses the
    # percentile instead for a strategy whose map has no calibrated unit, unless told otherwise.
    threshold: Literal["otsu", "percentile", "value", "hysteresis"] = "hysteresis"
    percentile: Annotated[float, Field(ge=0.0, lt=100.0)] = 98.0
    value: float = 0.0
    # hysteresis, in the map's units: a spot needs a core above ``high`` and extends over
    # ``low``; ``relative`` > 0 also cuts each spot below that share of its own peak. For the
    # significance map (robust sigmas) chosen on the tuning half by
    # benchmarks/tune_significance.py: high 12 -> about 0.2 false regions per nuisance-only
    # pair at the strongest tuning nuisances; low 4 boxes edits best (recall at IoU 0.3);
    # relative 0.1 keeps a very strong edit's box tight at no cost there (found -0.3 pt).
    high: float = 12.0
    low: float = 4.0
    relative: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    connectivity: Literal[4, 8] = 8


@dataclass(frozen=True)
class Region:
    """One difference spot. Box in pixels, (x, y) its top-left corner.

    ``score`` is the region's share of the whole map's total difference
    (0-1), so regions of different maps compare; ``peak``/``mean`` are in
    the map's units.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    score: float
    peak: float
    mean: float
    significance: float | None = None  # hysteresis: the peak, in the map's (calibrated) units

    def to_dict(self) -> dict:
        return asdict(self)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) of every horizontal run of True; end exclusive."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rs, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rs, starts, ends  # row-major order keeps starts and ends aligned


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label connected components of a boolean (H, W) mask; 0 is background."""
    rows, starts, ends = _runs(mask)
    n = len(rows)
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    slack = 1 if connectivity == 8 else 0
    row_first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for r in range(1, mask.shape[0]):
        a0, a1 = row_first[r - 1], row_first[r]  # runs of the row above
        b0, b1 = row_first[r], row_first[r + 1]
        i, j = a0, b0
        while i < a1 and j < b1:
            if starts[i] < ends[j] + slack and starts[j] < ends[i] + slack:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    uniq, run_label = np.unique(roots, return_inverse=True)
    labels = np.zeros(mask.shape, dtype=np.int32)
    for k in range(n):
        labels[rows[k], starts[k] : ends[k]] = run_label[k] + 1
    return labels, len(uniq)


def hysteresis_components(m: np.ndarray, low: float, connectivity: int = 8,
                          relative: float = 0.0) -> tuple[np.ndarray, int]:
    """Connected components of ``m > low`` (scipy.ndimage.label; 0 is background).

    With ``relative`` > 0 each component keeps only its pixels above ``relative`` times its
    own peak (and above ``low``), then is split again: a strong spot does not spread over its
    faint surroundings into its neighbours."""
    from scipy import ndimage

    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, count = ndimage.label(m > low, structure=structure)
    if relative > 0 and count:
        peak = ndimage.maximum(m, labels, np.arange(1, count + 1))
        cut = np.concatenate([[np.inf], np.maximum(low, relative * np.asarray(peak))])
        labels, count = ndimage.label(m > cut[labels], structure=structure)
    return labels.astype(np.int32, copy=False), int(count)


def _threshold(m: np.ndarray, cfg: RegionsConfig) -> float:
    if cfg.threshold == "value":
        return cfg.value
    if cfg.threshold == "percentile":
        return float(np.percentile(m, cfg.percentile))
    return float(otsu_threshold(torch.from_numpy(m)[None]).item())


def _ranked(m: np.ndarray, cfg: RegionsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray, float] | None:
    """(map, component labels, kept components strongest first, areas, masses, total),
    or None when there is nothing to report."""
    if cfg.max_regions == 0:
        return None
    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 3:
        m = m.max(axis=0)
    m = np.abs(m) if (m < 0).any() else m
    total = float(m.sum())
    if total <= 0:
        return None
    if cfg.threshold == "hysteresis":
        labels, count = hysteresis_components(m, cfg.low, cfg.connectivity, cfg.relative)
    else:
        labels, count = label_components(m > _threshold(m, cfg), cfg.connectivity)
    if count == 0:
        return None
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx] - 1
    area = np.bincount(lab, minlength=count)
    mass = np.bincount(lab, weights=m.ravel()[idx], minlength=count)
    keep = area >= cfg.min_area
    if cfg.threshold == "hysteresis":  # a core above high; the strongest core first
        peak = np.full(count, -np.inf)
        np.maximum.at(peak, lab, m.ravel()[idx])
        keep = np.flatnonzero(keep & (peak > cfg.high))
        keep = keep[np.argsort(-peak[keep], kind="stable")][: cfg.max_regions]
    else:
        keep = np.flatnonzero(keep)
        keep = keep[np.argsort(-mass[keep], kind="stable")][: cfg.max_regions]
    return m, labels, keep, area, mass, total


def find_regions(m: np.ndarray, cfg: RegionsConfig | None = None) -> list[Region]:
    """Ranked regions of one (H, W) map (a (C, H, W) map uses its channel max)."""
    ranked = _ranked(m, cfg or RegionsConfig())
    if ranked is None:
        return []
    m, labels, keep, area, mass, total = ranked
    hysteresis = (cfg or RegionsConfig()).threshold == "hysteresis"
    count = len(area)
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx] - 1
    values = m.ravel()
    peak = np.full(count, -np.inf)
    np.maximum.at(peak, lab, values[idx])
    ys, xs = np.divmod(idx, m.shape[1])
    x0 = np.full(count, m.shape[1]); x1 = np.zeros(count, dtype=np.int64)  # noqa: E702
    y0 = np.full(count, m.shape[0]); y1 = np.zeros(count, dtype=np.int64)  # noqa: E702
    np.minimum.at(x0, lab, xs); np.maximum.at(x1, lab, xs)  # noqa: E702
    np.minimum.at(y0, lab, ys); np.maximum.at(y1, lab, ys)  # noqa: E702
    return [
        Region(
            x=int(x0[k]), y=int(y0[k]), width=int(x1[k] - x0[k] + 1),
            height=int(y1[k] - y0[k] + 1), area=int(area[k]), score=float(mass[k] / total),
            peak=float(peak[k]), mean=float(mass[k] / area[k]),
            significance=float(peak[k]) if hysteresis else None,
        )
        for k in keep
    ]


def region_mask(m: np.ndarray, cfg: RegionsConfig | None = None) -> np.ndarray:
    """Boolean (H, W) mask of the pixels of the regions :func:`find_regions` reports
    (same threshold, components and ranking): their shapes, where a region is a box."""
    arr = np.asarray(m)
    shape = arr.shape[-2:]
    ranked = _ranked(arr, cfg or RegionsConfig())
    if ranked is None:
        return np.zeros(shape, dtype=bool)
    _, labels, keep, *_ = ranked
    return np.isin(labels, keep + 1)
