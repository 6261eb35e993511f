"""One reference, several candidates: maps on one shared scale, standard scores
for every candidate and, given a baseline, signed improvement maps.

``compare(ref, [a, b], labels=["ours", "theirs"], baseline="theirs")`` is the
Python face of ``difference-finder compare`` and ``POST /v1/compare``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import PipelineConfig
from .errors import InputError, MetricError, ShapeMismatchError
from .finder import CancelCheck, Finder, check_cancel
from .images import ImageLike, Limits, align_pair, to_tensor
from .metrics import METRICS
from .numeric import channel_plane
from .regions import find_regions
from .render import value_range
from .results import CandidateResult, Comparison, Improvement
from .weights import BACKBONES, weights_status

__all__ = [
    "DEFAULT_TOLERANCE",
    "STANDARD_METRICS",
    "CandidateResult",
    "Comparison",
    "Improvement",
    "compare",
    "pair_scores",
]

#: the scores reported for every candidate, besides the pipeline's own metric
STANDARD_METRICS: tuple[dict[str, Any], ...] = (
    {"name": "psnr"}, {"name": "ssim"}, {"name": "ms-ssim"}, {"name": "lpips", "net": "alex"},
)

#: a pixel counts as improved/worsened only when the two maps differ there by more than
#: this fraction of the 99th percentile of all candidate maps' magnitudes
DEFAULT_TOLERANCE = 0.01


def pair_scores(
    reference: torch.Tensor, candidate: torch.Tensor, data_range: float = 1.0,
    metrics: Sequence[dict[str, Any]] = STANDARD_METRICS,
) -> tuple[dict[str, float], dict[str, str]]:
    """All standard scores of one aligned (1, C, H, W) pair: ``(scores, skipped)``.

    A metric that cannot apply (MS-SSIM on a small image, LPIPS without its
    weight file) is left out of ``scores`` and its reason put in ``skipped``.
    """
    scores: dict[str, float] = {}
    skipped: dict[str, str] = {}
    present = weights_status()
    with torch.inference_mode():
        for spec in metrics:
            resolved = METRICS.resolve(spec)
            name = resolved.pop("name")
            entry = METRICS.get(name)
            net = resolved.get("net")
            if entry.meta.get("needs_weights") and not present.get(net, False):
                skipped[name] = (
                    f"LPIPS {net} weights are not present ({BACKBONES[net].path}); run "
                    f"`difference-finder weights fetch --nets {net}`")
                continue
            try:
                out = entry.func(reference, candidate, data_range, False, **resolved)
            except MetricError as exc:
                skipped[name] = exc.message
                continue
            scores[name] = float(out.score[0])
    return scores, skipped


def _pipeline_key(cfg: PipelineConfig) -> str:
    """The pipeline metric's key: its name, unless a standard score of that name differs."""
    name = cfg.metric["name"]
    standard = {s["name"]: METRICS.resolve(s) for s in STANDARD_METRICS}
    if name not in standard:
        return name
    same = standard[name] == cfg.metric and cfg.pre_processor["name"] == "identity"
    return name if same else f"pipeline:{name}"


def _labels(candidates: list[Any], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        labels = [Path(c).stem if isinstance(c, (str, Path)) else f"candidate {i + 1}"
                  for i, c in enumerate(candidates)]
        if len(set(labels)) != len(labels):  # e.g. a/x.png and b/x.png
            labels = [f"{lab} ({i + 1})" for i, lab in enumerate(labels)]
        return labels
    labels = [str(lab) for lab in labels]
    if len(labels) != len(candidates):
        raise InputError(f"{len(labels)} label(s) given for {len(candidates)} candidate(s)",
                         labels=labels)
    if any(not lab.strip() for lab in labels):
        raise InputError("labels must not be empty", labels=labels)
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise InputError(f"labels must be unique; repeated: {', '.join(dupes)}", labels=labels)
    return labels


def _single(obj: ImageLike, what: str, limits: Limits | None) -> torch.Tensor:
    t, _ = to_tensor(obj, what=what, limits=limits)
    if t.shape[0] != 1:
        raise InputError(f"{what}: expected one image, got a batch of {t.shape[0]}")
    return t


def _display(t: torch.Tensor, data_range: float) -> np.ndarray:
    """(1, C, H, W) float -> uint8 (H, W, 3) for figures."""
    a = (t[0].float() / data_range).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    a = np.moveaxis(a, 0, -1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def _checked_labels(cands: list[Any], labels: Sequence[str] | None, baseline: str | None,
                    tolerance: float) -> list[str]:
    """The candidates' labels, once the arguments of :func:`compare` are known to fit."""
    if not cands:
        raise InputError("compare needs at least one candidate")
    names = _labels(cands, labels)
    if baseline is not None:
        if baseline not in names:
            raise InputError(f"baseline {baseline!r} is not one of the labels: "
                             f"{', '.join(names)}", labels=names)
        if len(names) < 2:
            raise InputError("a baseline needs at least one other candidate to compare with it")
    if not 0.0 <= tolerance < 1.0:
        raise InputError(f"tolerance must lie in [0, 1), got {tolerance}")
    return names


def _candidate(finder: Finder, key: str, ref_t: torch.Tensor, cand_t: torch.Tensor, label: str,
               what: str, cancel: CancelCheck | None = None
               ) -> tuple[CandidateResult, torch.Tensor]:
    """One candidate's map, scores and regions, and the reference as aligned to it."""
    cfg = finder.config
    try:
        ref_a, cand_a = align_pair(ref_t, cand_t, cfg.size_policy)
    except ShapeMismatchError as exc:
        raise ShapeMismatchError(f"{what}: {exc.message}", label=label, **exc.extra) from None
    try:
        maps, score = finder.compute(ref_a, cand_a, with_score=True, cancel=cancel)
        unscored = None
    except MetricError as exc:  # e.g. SSIM's window on a tiny image
        if cfg.uses_metric:  # the map itself needs the metric: nothing to show
            raise
        maps, score = finder.compute(ref_a, cand_a, with_score=False, cancel=cancel)
        unscored = exc.message  # a score beside the map: skipped, as standard scores are
    check_cancel(cancel, "scores")
    m = np.ascontiguousarray(maps[0].float().cpu().numpy(), dtype=np.float32)
    scores, skipped = pair_scores(ref_a.to(finder.device), cand_a.to(finder.device),
                                  cfg.data_range)
    if unscored is not None:
        scores.pop(key, None)
        skipped[key] = unscored
    else:
        scores[key] = float(score[0]) if score is not None else math.nan
    return CandidateResult(label=label, map=m, metrics=scores, skipped=skipped,
                           regions=find_regions(m, cfg.regions),
                           image=_display(cand_a, cfg.data_range),
                           regions_computed=cfg.regions.enabled), ref_a


def compare(
    reference: ImageLike,
    candidates: Sequence[ImageLike] | ImageLike,
    labels: Sequence[str] | None = None,
    baseline: str | None = None,
    config: PipelineConfig | dict[str, Any] | None = None,
    device: str | torch.device | None = "auto",
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    limits: Limits | None = None,
    finder: Finder | None = None,
    cancel: CancelCheck | None = None,
) -> Comparison:
    """Compare every candidate with ``reference`` under one pipeline.

    Labels default to file stems (paths) or ``candidate 1..n``. With
    ``baseline`` (a label), every other candidate gets an :class:`Improvement`.
    Pass a ready ``finder`` to reuse one (its config and device are used).
    ``cancel`` is checked between steps, as in :meth:`Finder.compute`.
    """
    if isinstance(candidates, (str, Path, np.ndarray, torch.Tensor, Image.Image)):
        candidates = [candidates]
    cands = list(candidates)
    names = _checked_labels(cands, labels, baseline, tolerance)
    if finder is None:
        cfg = config if isinstance(config, PipelineConfig) else PipelineConfig.model_validate(
            config or {})
        finder = Finder.from_config(cfg, device=device)
    cfg = finder.config
    key = _pipeline_key(cfg)
    ref_t = _single(reference, "reference", limits)
    results: list[CandidateResult] = []
    for i, (cand, label) in enumerate(zip(cands, names, strict=True)):
        what = label if label == f"candidate {i + 1}" else f"candidate {label!r}"
        result, ref_a = _candidate(finder, key, ref_t, _single(cand, what, limits), label, what,
                                   cancel)
        if results and result.map.shape != results[0].map.shape:
            raise ShapeMismatchError(
                f"candidate {label!r} gives a {result.map.shape} map but {results[0].label!r} "
                f"gave {results[0].map.shape}; use size_policy 'resize' to put every candidate "
                "on the reference's grid")
        if not results:
            ref_display = _display(ref_a, cfg.data_range)
        results.append(result)
    r = cfg.render
    scale = value_range([c.map for c in results], r.vmin, r.vmax, r.percentile, r.symmetric)
    keys = dict.fromkeys(k for c in results for k in c.metrics)
    direction = {k: bool(METRICS.get(k.removeprefix("pipeline:")).meta.get("higher_is_better"))
                 for k in keys}
    out = Comparison(reference=ref_display, candidates=results, scale=scale, config=cfg,
                     metric_key=key, higher_is_better=direction, baseline=baseline)
    if baseline is not None:
        _improvements(out, tolerance)
    return out


def _improvements(out: Comparison, tolerance: float) -> None:
    """Fill ``out.improvement`` (maps, fractions, tolerance, a symmetric shared scale)."""
    planes = {c.label: channel_plane(np.abs(np.asarray(c.map, dtype=np.float32)))
              for c in out.candidates}
    magnitudes = np.concatenate([p.ravel() for p in planes.values()])
    ref_level = float(np.percentile(magnitudes, 99)) if magnitudes.size else 0.0
    tol = tolerance * ref_level
    base = planes[out.baseline]
    for c in out.candidates:
        if c.label == out.baseline:
            continue
        gain = (base - planes[c.label]).astype(np.float32)
        out.improvement.append(Improvement(
            label=c.label, map=gain,
            improved_fraction=float(np.mean(gain > tol)),
            worsened_fraction=float(np.mean(gain < -tol)),
        ))
    out.tolerance = tol
    out.improvement_scale = value_range([i.map for i in out.improvement],
                                        percentile=out.config.render.percentile, symmetric=True)
