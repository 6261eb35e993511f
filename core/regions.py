"""Difference regions: the ranked spots of a map, as boxes with scores.

A map is thresholded (by default at its 98th percentile; Otsu or a value on
request), split into connected components (8-connectivity by default) and each
component becomes a :class:`Region`. A percentile threshold keeps that share of
pixels, so an edit larger than 2% of the image is only partly boxed at the
default: lower ``percentile`` for large or widespread differences.
Components are labelled by :func:`core.numeric.label_components` (scipy.ndimage).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .numeric import channel_plane, label_components, otsu_threshold
from .results import Region

__all__ = ["Region", "RegionsConfig", "find_regions", "region_mask"]


class RegionsConfig(BaseModel):
    """How regions are extracted from a map."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_regions: Annotated[int, Field(ge=0, le=1000)] = 10
    min_area: Annotated[int, Field(ge=1)] = 16
    # A high percentile beats Otsu, which splits strong edits from weak ones (benchmarks/README).
    threshold: Literal["otsu", "percentile", "value"] = "percentile"
    percentile: Annotated[float, Field(ge=0.0, lt=100.0)] = 98.0
    value: float = 0.0
    connectivity: Literal[4, 8] = 8


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
    m = channel_plane(np.asarray(m, dtype=np.float32))
    m = np.abs(m) if (m < 0).any() else m
    total = float(m.sum())
    if total <= 0:
        return None
    mask = m > _threshold(m, cfg)
    labels, count = label_components(mask, cfg.connectivity)
    if count == 0:
        return None
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx] - 1
    area = np.bincount(lab, minlength=count)
    mass = np.bincount(lab, weights=m.ravel()[idx], minlength=count)
    keep = np.flatnonzero(area >= cfg.min_area)
    keep = keep[np.argsort(-mass[keep], kind="stable")][: cfg.max_regions]
    return m, labels, keep, area, mass, total


def find_regions(m: np.ndarray, cfg: RegionsConfig | None = None) -> list[Region]:
    """Ranked regions of one (H, W) map (a (C, H, W) map uses its channel max)."""
    ranked = _ranked(m, cfg or RegionsConfig())
    if ranked is None:
        return []
    m, labels, keep, area, mass, total = ranked
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
