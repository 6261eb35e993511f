"""Difference regions: the ranked spots of a map, as boxes with scores.

A map is thresholded (by default by hysteresis in the map's units, which suits the
calibrated ``significance`` map: a spot needs a core above ``high`` and extends over
``low``; or at a percentile, Otsu or a value), split into connected components
(8-connectivity by default) and each component becomes a :class:`Region`. A percentile
threshold keeps that share of pixels, so an edit larger than 2% of the image is only partly
boxed: lower ``percentile`` for large or widespread differences.
Components, boxes and peaks come from scipy.ndimage (C loops, no per-pixel Python); hysteresis
spots are cut, merged and measured on the boxes of the components with a core only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    """Connected components of ``m > low`` (0 is background), labelled 1..count in raster
    order of each one's first pixel.

    With ``relative`` > 0 each component keeps only its pixels above ``relative`` times its
    own peak (and above ``low``), then is split again: a strong spot does not spread over its
    faint surroundings into its neighbours. Pieces of one component whose boxes, both grown
    by ``merge`` times the smaller piece's larger side, overlap are one spot again: an edit
    whose strength varies inside it is not reported as several; two spots further apart
    than the smaller one's size stay two, however large the other."""
    spots = _spots(np.asarray(m), low, connectivity, relative, merge)
    labels = np.zeros(np.shape(m), dtype=np.int32)
    for k, ((y0, x0, y1, x1), own) in enumerate(zip(spots.boxes, spots.masks, strict=True)):
        labels[y0:y1, x0:x1][own] = k + 1
    return labels, len(spots.boxes)


def _touching(pieces: np.ndarray, merge: float) -> np.ndarray:
    """Pairs (E, 2) of pieces (labels 1..n of one component, as 0-based indices) whose
    boxes, both grown by ``merge`` times the smaller piece's larger side, overlap."""
    boxes = ndimage.find_objects(pieces)
    start = np.array([[b[0].start, b[1].start] for b in boxes])
    stop = np.array([[b[0].stop, b[1].stop] for b in boxes])
    side = (stop - start).max(axis=1)
    gap = np.maximum(start[None] - stop[:, None], start[:, None] - stop[None]).max(-1)
    # < 0: overlap. Both boxes grown by the smaller piece's size: slivers of one spot rejoin
    # it, a large spot does not swallow a small one beside it
    reach = 2 * np.ceil(merge * np.minimum.outer(side, side))
    return np.argwhere(np.triu(gap < reach, 1))


def _groups(edges: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Labels 0..count with pieces joined along ``edges`` relabelled as one (0 stays 0),
    groups numbered in order of their first piece: the raster order labels had. Each piece
    takes the smallest index reachable from it (min over edges, then pointer jumping): a
    few vectorised passes over the edges, never over pixels (scipy.sparse's
    connected_components costs ~1.5 ms a call on these graphs of a handful of pieces)."""
    root = np.arange(count)
    while True:
        lo = np.minimum(root[edges[:, 0]], root[edges[:, 1]])
        new = root.copy()
        np.minimum.at(new, edges[:, 0], lo)
        np.minimum.at(new, edges[:, 1], lo)
        new = new[new]
        if np.array_equal(new, root):
            break
        root = new
    # a group's root is its smallest piece: sorted roots are the order of first pieces
    ids, groups = np.unique(root, return_inverse=True)
    return np.concatenate([[0], groups + 1]).astype(np.int32), len(ids)


@dataclass(frozen=True)
class _Spots:
    """Spots as crops: each spot's box (y0, x0, y1, x1), its pixels inside it, area, sum and
    peak of the map there; in raster order of each spot's first pixel."""

    boxes: list[tuple[int, int, int, int]]
    masks: list[np.ndarray]
    area: np.ndarray
    mass: np.ndarray
    peak: np.ndarray


_BLOCK = 8  # side of the blocks a map is first looked at in, for the components with a core


def _labelled(mask: np.ndarray, structure: np.ndarray, seeds: np.ndarray | None
              ) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Each component of ``mask`` (with ``seeds``: only those holding a seed pixel) as its
    box and its pixels in that box."""
    labels, count = ndimage.label(mask, structure=structure)
    if seeds is None:
        chosen = np.arange(1, count + 1)
    else:
        chosen = np.unique(labels[seeds])
        chosen = chosen[chosen > 0]
    objects = ndimage.find_objects(labels, max_label=int(chosen[-1])) if len(chosen) else []
    for c in chosen:
        ys, xs = objects[c - 1]
        yield ys, xs, labels[ys, xs] == c


def _components(m: np.ndarray, low: float, structure: np.ndarray, high: float | None
                ) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """The components of ``m > low`` (with ``high``: only those with a pixel above it) as
    boxes and their pixels in them. With ``high``, the map's _BLOCK-pixel blocks are
    labelled first (a block is on if its maximum is above ``low``, 8-connected: pixels that
    touch lie in the same or touching blocks, so each component lies in one group of
    blocks), and only groups holding a block above ``high`` are labelled pixel by pixel,
    each on its own box: no full-size labelling of a large map's many faint pixels."""
    if high is None:
        yield from _labelled(m > low, structure, None)
        return
    h, w = m.shape
    b = _BLOCK
    src = m if m.flags.c_contiguous and m.flags.writeable else m.copy()  # torch's terms
    peak = torch.nn.functional.max_pool2d(torch.from_numpy(src)[None], b, ceil_mode=True)
    peak = peak[0].numpy()
    unknown = np.isnan(peak)  # NaN wins a block's max: look inside it (its NaNs are never on)
    eight = ndimage.generate_binary_structure(2, 2)
    for bys, bxs, inside in _labelled((peak > low) | unknown, eight, (peak > high) | unknown):
        ys = slice(bys.start * b, min(bys.stop * b, h))
        xs = slice(bxs.start * b, min(bxs.stop * b, w))
        inside = inside.repeat(b, axis=0).repeat(b, axis=1)[: ys.stop - ys.start,
                                                            : xs.stop - xs.start]
        sub = m[ys, xs]
        for fys, fxs, own in _labelled((sub > low) & inside, structure, sub > high):
            yield (slice(ys.start + fys.start, ys.start + fys.stop),
                   slice(xs.start + fxs.start, xs.start + fxs.stop), own)


def _spots(m: np.ndarray, low: float, connectivity: int, relative: float, merge: float,
           high: float | None = None) -> _Spots:
    """The spots of :func:`hysteresis_components` (with ``high``: only those of components
    with a pixel above it), worked out on each component's own box: the cut and the merge
    only ever split or join pixels of one component, so full-size passes are only to label
    ``m > low`` once and to box its components; with ``high``, the components without a
    core (the many faint ones of a noisy map) are never cut, merged or measured."""
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    w = m.shape[1]
    found: list[tuple[int, tuple[int, int, int, int], np.ndarray, float, float, float]] = []
    for ys, xs, own in _components(m, low, structure, high):  # never per pixel
        sub = m[ys, xs]
        mask = own
        if relative > 0:
            cut = relative * float(np.float32(sub[own].max()))  # the peak in float32
            if cut > low:
                mask = own & (sub > np.float32(cut))
        pieces, n = ndimage.label(mask, structure=structure)
        if n > 1 and merge > 0:
            edges = _touching(pieces, merge)
            if len(edges):
                lut, n = _groups(edges, n)
                pieces = lut[pieces]
        # each piece's first pixel in raster order (the crop's order is the map's)
        ids, first = np.unique(pieces, return_index=True)
        first = first[ids > 0]
        area, mass, peak = label_stats(pieces, sub, n)
        for j, sl in enumerate(ndimage.find_objects(pieces)):
            fy, fx = divmod(int(first[j]), xs.stop - xs.start)
            box = (ys.start + sl[0].start, xs.start + sl[1].start,
                   ys.start + sl[0].stop, xs.start + sl[1].stop)
            found.append(((ys.start + fy) * w + xs.start + fx, box, pieces[sl] == j + 1,
                          float(area[j]), float(mass[j]), float(peak[j])))
    found.sort(key=lambda f: f[0])
    return _Spots(boxes=[f[1] for f in found], masks=[f[2] for f in found],
                  area=np.array([f[3] for f in found], dtype=np.int64),
                  mass=np.array([f[4] for f in found]),
                  peak=np.array([f[5] for f in found]))


def _threshold(m: np.ndarray, cfg: RegionsConfig) -> float:
    if cfg.threshold == "value":
        return cfg.value
    if cfg.threshold == "percentile":
        return float(np.percentile(m, cfg.percentile))
    return float(otsu_threshold(torch.from_numpy(m)[None]).item())


def _ranked(m: np.ndarray, cfg: RegionsConfig) -> tuple[_Spots, float] | None:
    """The reported spots, strongest first (at most ``max_regions``), and the map's total,
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
        spots = _spots(m, cfg.low, cfg.connectivity, cfg.relative, cfg.merge, cfg.high)
        # a core above high; the strongest core first
        keep = np.flatnonzero((spots.area >= cfg.min_area) & (spots.peak > cfg.high))
        keep = keep[np.argsort(-spots.peak[keep], kind="stable")][: cfg.max_regions]
        return _Spots(boxes=[spots.boxes[k] for k in keep], masks=[spots.masks[k] for k in keep],
                      area=spots.area[keep], mass=spots.mass[keep],
                      peak=spots.peak[keep]), total
    labels, count = label_components(m > _threshold(m, cfg), cfg.connectivity)
    if count == 0:
        return None
    area, mass, peak = label_stats(labels, m, count)
    keep = np.flatnonzero(area >= cfg.min_area)
    keep = keep[np.argsort(-mass[keep], kind="stable")][: cfg.max_regions]
    objects = ndimage.find_objects(labels)
    boxes = [(objects[k][0].start, objects[k][1].start, objects[k][0].stop, objects[k][1].stop)
             for k in keep]
    return _Spots(boxes=boxes, masks=[labels[objects[k]] == k + 1 for k in keep],
                  area=area[keep], mass=mass[keep], peak=peak[keep]), total


def find_regions(m: np.ndarray, cfg: RegionsConfig | None = None) -> list[Region]:
    """Ranked regions of one (H, W) map (a (C, H, W) map uses its channel max)."""
    cfg = cfg or RegionsConfig()
    ranked = _ranked(m, cfg)
    if ranked is None:
        return []
    spots, total = ranked
    hysteresis = cfg.threshold == "hysteresis"
    out = []
    for (y0, x0, y1, x1), area, mass, peak in zip(spots.boxes, spots.area, spots.mass,
                                                  spots.peak, strict=True):
        out.append(Region(  # one entry per reported region (at most max_regions)
            x=int(x0), y=int(y0), width=int(x1 - x0), height=int(y1 - y0), area=int(area),
            score=float(mass / total), peak=float(peak), mean=float(mass / area),
            significance=float(peak) if hysteresis else None,
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
    out = np.zeros(shape, dtype=bool)
    for (y0, x0, y1, x1), own in zip(ranked[0].boxes, ranked[0].masks, strict=True):
        out[y0:y1, x0:x1] |= own
    return out
