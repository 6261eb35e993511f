"""What the library returns: regions, one pair's result, a comparison of candidates.

Each knows how to become a JSON-ready dict (``to_dict``), in this one place, with one
rule for floats: JSON has no NaN or infinity, so a non-finite score (the PSNR of
identical images) becomes ``None``. Regions stay in the order :func:`core.find_regions`
ranked them (strongest first); nothing re-sorts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the pipeline model imports regions, which imports this module
    from .config import PipelineConfig

__all__ = [
    "NOT_COMPUTED",
    "NO_DIFFERENCE",
    "CandidateResult",
    "Comparison",
    "Improvement",
    "PairResult",
    "Region",
    "finite_or_none",
    "finite_values",
    "regions_summary",
    "regions_to_dicts",
]


def finite_or_none(v: float) -> float | None:
    """``v`` as a float, or None when it is NaN or infinite (JSON has neither)."""
    v = float(v)
    return v if math.isfinite(v) else None


def finite_values(scores: Mapping[str, float]) -> dict[str, float | None]:
    """A ``{name: score}`` mapping with :func:`finite_or_none` applied to every score."""
    return {k: finite_or_none(v) for k, v in scores.items()}


def _scale(bounds: tuple[float, float] | None) -> dict[str, float] | None:
    return None if bounds is None else {"vmin": bounds[0], "vmax": bounds[1]}


@dataclass(frozen=True)
class Region:
    """One difference spot. Box in pixels, (x, y) its top-left corner.

    ``score`` is the region's share of the whole map's total difference
    (0-1), so regions of different maps compare; ``peak``/``mean`` are in
    the map's units. ``significance`` is the peak in calibrated units (robust sigmas) for
    hysteresis regions of a calibrated map, else None.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    score: float
    peak: float
    mean: float
    significance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; non-finite floats become None."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = finite_or_none(v) if isinstance(v, float) else v
        return out


def regions_to_dicts(regions: list[Region]) -> list[dict[str, Any]]:
    """Regions as dicts, in their ranked order."""
    return [r.to_dict() for r in regions]


#: what a result says when no region is reported
NO_DIFFERENCE = "no significant difference found"


#: what a result says when regions were not asked for (``max_regions=0``, ``regions=False``)
NOT_COMPUTED = "regions not computed"


#: below this PSNR (dB; an RMS difference over 10% of the range) a pair without regions is
#: said to differ image-wide: a map calibrated on the pair's own residual shows local spots
#: only, and "no significant difference" would mislead for a replaced or blanked image
IMAGE_WIDE_PSNR = 20.0


def _psnr(metrics: Mapping[str, float] | None) -> float | None:
    """The pair's PSNR (dB) from its scores: PSNR itself, else from MSE (data range 1)."""
    if not metrics:
        return None
    if "psnr" in metrics:
        return float(metrics["psnr"])
    if "mse" in metrics:
        mse = float(metrics["mse"])
        return math.inf if mse <= 0 else -10.0 * math.log10(mse)
    return None


def regions_summary(regions: list[Region], computed: bool = True,
                    metrics: Mapping[str, float] | None = None) -> str:
    """One plain sentence about the regions: :data:`NO_DIFFERENCE` when there are none,
    else their count ("2 significant regions"; "3 regions" when they carry no significance,
    as percentile, Otsu and top-k regions do); :data:`NOT_COMPUTED` when none were looked
    for (an absence of regions then says nothing about the pair). Without regions but with
    a PSNR (or MSE) under :data:`IMAGE_WIDE_PSNR`, that the images differ image-wide."""
    if not computed:
        return NOT_COMPUTED
    if not regions:
        psnr = _psnr(metrics)
        if psnr is not None and psnr < IMAGE_WIDE_PSNR:
            return (f"no local difference stands out, but the images differ image-wide "
                    f"(PSNR {psnr:.1f} dB)")
        return NO_DIFFERENCE
    n = len(regions)
    kind = "significant " if all(r.significance is not None for r in regions) else ""
    return f"{n} {kind}region{'s' if n != 1 else ''}"


@dataclass
class PairResult:
    """Everything computed for one image pair."""

    map: np.ndarray  # float32 (H, W), or (C, H, W) with reduction "none"
    metrics: dict[str, float] = field(default_factory=dict)  # {metric name: score}
    regions: list[Region] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    regions_computed: bool = True  # False: regions were not asked for

    @property
    def summary(self) -> str:
        """:func:`regions_summary` of the regions ("no significant difference found")."""
        return regions_summary(self.regions, self.regions_computed, self.metrics)

    def to_dict(self, *, timing_digits: int = 2) -> dict[str, Any]:
        """``shape``, ``metrics``, ``regions``, ``summary`` and ``timing_ms`` (rounded),
        without the map."""
        return {
            "shape": list(self.map.shape),
            "metrics": finite_values(self.metrics),
            "regions": regions_to_dicts(self.regions),
            "summary": self.summary,
            "timing_ms": {k: round(v, timing_digits) for k, v in self.timing_ms.items()},
        }


@dataclass
class CandidateResult:
    """One candidate against the reference."""

    label: str
    map: np.ndarray  # float32 (H, W), or (C, H, W) with reduction "none"
    metrics: dict[str, float]  # {metric key: score}; PSNR of identical images is inf
    skipped: dict[str, str]  # {metric name: why it is absent}
    regions: list[Region]
    image: np.ndarray  # uint8 (H, W, 3) display copy, aligned to the reference
    regions_computed: bool = True  # False: regions were not asked for (max_regions=0)

    @property
    def summary(self) -> str:
        """:func:`regions_summary` of the regions ("no significant difference found")."""
        return regions_summary(self.regions, self.regions_computed, self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """``label``, ``shape``, ``metrics``, ``skipped``, ``regions`` and ``summary``,
        without the maps."""
        return {
            "label": self.label,
            "shape": list(self.map.shape),
            "metrics": finite_values(self.metrics),
            "skipped": self.skipped,
            "regions": regions_to_dicts(self.regions),
            "summary": self.summary,
        }


@dataclass
class Improvement:
    """Where a candidate beats the baseline: ``|baseline map| - |candidate map|``.

    Positive where the candidate is closer to the reference than the baseline,
    negative where it is further; the fractions count pixels beyond ``tolerance``.
    """

    label: str
    map: np.ndarray  # float32 (H, W), signed
    improved_fraction: float
    worsened_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """``label`` and the two fractions, without the map."""
        return {"label": self.label, "improved_fraction": self.improved_fraction,
                "worsened_fraction": self.worsened_fraction}


@dataclass
class Comparison:
    """Everything :func:`core.compare` found; maps share ``scale`` so panels compare."""

    reference: np.ndarray  # uint8 (H, W, 3) display copy
    candidates: list[CandidateResult]
    scale: tuple[float, float]
    config: PipelineConfig
    metric_key: str  # which key of ``metrics`` is the pipeline's own metric
    higher_is_better: dict[str, bool]  # per metric key
    baseline: str | None = None
    improvement: list[Improvement] = field(default_factory=list)
    improvement_scale: tuple[float, float] | None = None  # symmetric, for a diverging map
    tolerance: float | None = None  # absolute, in map units

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.candidates]

    def candidate(self, label: str) -> CandidateResult:
        for c in self.candidates:
            if c.label == label:
                return c
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description without the maps (non-finite scores become null)."""
        return {
            "scale": _scale(self.scale),
            "metric": self.metric_key,
            "higher_is_better": self.higher_is_better,
            "candidates": [c.to_dict() for c in self.candidates],
            "baseline": self.baseline,
            "improvement": [i.to_dict() for i in self.improvement],
            "improvement_scale": _scale(self.improvement_scale),
            "tolerance": self.tolerance,
            "config": self.config.model_dump(),
        }

    def summary(self) -> dict[str, Any]:
        """The same as :meth:`to_dict` (the name ``difference-finder compare`` writes)."""
        return self.to_dict()
