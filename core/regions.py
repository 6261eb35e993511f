"""Difference regions: the ranked spots of a map, as boxes with scores.

A map is thresholded (by default by hysteresis in the map's units, which suits the
calibrated ``significance`` map: a spot needs a core above ``high`` and extends over
``low``; or at a percentile, Otsu or a value), split into connected components
(8-connectivity by default) and each component becomes a :class:`Region`. A percentile
threshold keeps that share of pixels, so an edit larger than 2% of the image is only partly
boxed: lower ``percentile`` for large or widespread differences.
Components, boxes and peaks come from scipy.ndimage (C loops, no per-pixel Python).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from .numeric import channel_plane, label_components, label_stats, otsu_threshold
from .results import Region

__all__ = ["Region", "RegionsConfig", "confidence", "find_regions", "hysteresis_components",
           "region_mask"]


class RegionsConfig(BaseModel):
    """How regions are extracted from a map."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_regions: Annotated[int, Field(ge=0, le=1000)] = 10
    min_area: Annotated[int, Field(ge=1)] = 16
    # Hysteresis in robust sigmas suits the default (significance) map; PipelineConfig uses the
    # 98th percentile instead for a strategy whose map has no calibrated unit, unless told
    # otherwise (a high percentile beats Otsu there, which splits strong edits from weak ones).
    threshold: Literal["otsu", "percentile", "value", "hysteresis"] = "hysteresis"
    percentile: Annotated[float, Field(ge=0.0, lt=100.0)] = 98.0
    value: float = 0.0
    # hysteresis, in the map's units: a spot needs a core above ``high`` and extends over
    # ``low``; ``relative`` > 0 also cuts each spot below that share of its own peak, and the
    # pieces a cut leaves are one spot again where their boxes, both grown by ``merge`` times
    # the smaller piece's larger side, overlap. For the significance map (robust sigmas)
    # chosen on the tuning half by benchmarks/tune_significance.py: high 13 -> 0.18 false
    # regions per nuisance-only pair there (12: 0.29, 14: 0.14); low 4 boxes edits best
    # (recall at IoU 0.3); relative 0.2 with merge 1 boxes edits best there (found 76.8%,
    # recall 0.709; merge 0.5: 0.699, 2: 0.710; relative 0.1 without merge, the previous
    # default: 75.8%, 0.677; no cut: 76.9%, 0.663).
    high: float = 13.0
    low: float = 4.0
    relative: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    merge: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    connectivity: Literal[4, 8] = 8

    @property
    def enabled(self) -> bool:
        """Whether regions are looked for at all (``max_regions`` > 0)."""
        return self.max_regions > 0


def hysteresis_components(m: np.ndarray, low: float, connectivity: int = 8,
                          relative: float = 0.0, merge: float = 0.0) -> tuple[np.ndarray, int]:
    """Connected components of ``m > low`` (0 is background).

    With ``relative`` > 0 each component keeps only its pixels above ``relative`` times its
    own peak (and above ``low``), then is split again: a strong spot does not spread over its
    faint surroundings into its neighbours. Pieces of one component whose boxes, both grown
    by ``merge`` times the smaller piece's larger side, overlap are one spot again: an edit
    whose strength varies inside it is not reported as several; two spots further apart
    than the smaller one's size stay two, however large the other."""
    labels, count = label_components(m > low, connectivity)
    if relative > 0 and count:
        peak = label_stats(labels, m, count)[2]
        if (relative * peak > low).any():  # else every cut is ``low``: the same components
            cut = np.concatenate([[np.inf], np.maximum(low, relative * peak)])
            parents = labels
            labels, count = label_components(m > cut.astype(np.float32)[labels], connectivity)
            if merge > 0 and count > 1:
                labels, count = _merge_pieces(labels, count, parents, merge)
    return labels, count


def _merge_pieces(labels: np.ndarray, count: int, parents: np.ndarray, merge: float
                  ) -> tuple[np.ndarray, int]:
    """Relabel ``labels`` so that pieces of one parent component whose grown boxes overlap
    share a label (connected components of the graph of touching pieces, never of pixels)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    boxes = ndimage.find_objects(labels)
    start = np.array([[b[0].start, b[1].start] for b in boxes])
    stop = np.array([[b[0].stop, b[1].stop] for b in boxes])
    side = (stop - start).max(axis=1)
    # a piece lies inside one parent: every pixel of it names that parent (one linear pass;
    # ndimage.maximum sorts the labels, ~0.3 s at 4 MP)
    flat = labels.ravel()
    nz = np.flatnonzero(flat)
    parent = np.zeros(count + 1, dtype=np.int64)
    parent[flat[nz]] = parents.ravel()[nz]
    parent = parent[1:]
    pairs = []
    for p in np.unique(parent):  # pieces of one parent only (few; never all pairs at once)
        members = np.flatnonzero(parent == p)
        if len(members) > 1:
            a, b = start[members], stop[members]
            gap = np.maximum(a[None] - b[:, None], a[:, None] - b[None]).max(-1)  # < 0: overlap
            # both boxes grown by the smaller piece's size: slivers of one spot rejoin it, a
            # large spot does not swallow a small one beside it
            reach = 2 * np.ceil(merge * np.minimum.outer(side[members], side[members]))
            pairs.append(members[np.argwhere(np.triu(gap < reach, 1))])
    if not pairs:
        return labels, count
    edges = np.concatenate(pairs)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    merged, groups = connected_components(graph, directed=False)
    # groups are numbered in order of their first piece: the raster order labels had
    lut = np.concatenate([[0], groups + 1]).astype(np.int32)
    return lut[labels], int(merged)


def _threshold(m: np.ndarray, cfg: RegionsConfig) -> float:
    if cfg.threshold == "value":
        return cfg.value
    if cfg.threshold == "percentile":
        return float(np.percentile(m, cfg.percentile))
    return float(otsu_threshold(torch.from_numpy(m)[None]).item())


Ranked = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def _ranked(m: np.ndarray, cfg: RegionsConfig) -> Ranked | None:
    """(map, component labels, kept components strongest first, areas, masses, peaks, total),
    or None when there is nothing to report."""
    if not cfg.enabled:
        return None
    m = channel_plane(np.asarray(m, dtype=np.float32))
    m = np.abs(m) if (m < 0).any() else m
    total = float(m.sum())
    if total <= 0:
        return None
    if cfg.threshold == "hysteresis":
        if float(m.max()) <= cfg.high:  # no core anywhere: nothing to label (the usual
            return None                 # answer for an identical or nuisance-only pair)
        labels, count = hysteresis_components(m, cfg.low, cfg.connectivity, cfg.relative,
                                              cfg.merge)
    else:
        labels, count = label_components(m > _threshold(m, cfg), cfg.connectivity)
    if count == 0:
        return None
    area, mass, peak = label_stats(labels, m, count)
    keep = area >= cfg.min_area
    if cfg.threshold == "hysteresis":  # a core above high; the strongest core first
        keep = np.flatnonzero(keep & (peak > cfg.high))
        keep = keep[np.argsort(-peak[keep], kind="stable")][: cfg.max_regions]
    else:
        keep = np.flatnonzero(keep)
        keep = keep[np.argsort(-mass[keep], kind="stable")][: cfg.max_regions]
    return m, labels, keep, area, mass, peak, total


def find_regions(m: np.ndarray, cfg: RegionsConfig | None = None) -> list[Region]:
    """Ranked regions of one (H, W) map (a (C, H, W) map uses its channel max)."""
    cfg = cfg or RegionsConfig()
    ranked = _ranked(m, cfg)
    if ranked is None:
        return []
    _, labels, keep, area, mass, peak, total = ranked
    boxes = ndimage.find_objects(labels)
    hysteresis = cfg.threshold == "hysteresis"
    out = []
    for k in keep:  # one entry per reported region (at most max_regions), not per pixel
        ys, xs = boxes[k]
        out.append(Region(
            x=int(xs.start), y=int(ys.start), width=int(xs.stop - xs.start),
            height=int(ys.stop - ys.start), area=int(area[k]), score=float(mass[k] / total),
            peak=float(peak[k]), mean=float(mass[k] / area[k]),
            significance=float(peak[k]) if hysteresis else None,
        ))
    return out


def confidence(region: Region, cfg: RegionsConfig | None = None) -> float:
    """A region's 0-1 confidence for annotation tools (CVAT, Label Studio).

    A hysteresis region: ``significance / (significance + high)``, monotone in how far it
    stands out: 0.5 at the core threshold ``high``, 0.75 at three times it, so the ranking
    (by significance) and a confidence cut agree. Other regions: their ``score`` (share of
    the map's total difference)."""
    if region.significance is None:
        return region.score
    high = (cfg or RegionsConfig()).high
    return region.significance / (region.significance + high) if high > 0 else 1.0


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
