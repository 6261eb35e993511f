"""Quality benchmark: which pipeline makes small local edits stand out over image-wide nuisances.

For every candidate pipeline and every (photo, nuisance) pair of benchmarks/edits.py it scores:
  AP    - average precision of the map ranking the edited pixels above all others;
  hits  - of the map's top-k regions (k = number of edits, core.find_regions), the share of edits
          they land on (region box and edit box overlap with IoU >= 0.1, one region per edit);
  ms    - median milliseconds for one pair's map (CPU), all candidates timed interleaved.
The seed package (PyPI difference-finder 0.0.4, see benchmarks/seed.py) is scored on the same pairs.

    .venv/bin/python -m benchmarks.quality            # full run, a few minutes on 2 cores
    .venv/bin/python -m benchmarks.quality --quick    # 3 photos, a few pipelines: a smoke run
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.edits import EDITS_PER_IMAGE, NUISANCES, PHOTOS, EditPair, make_dataset
from core import Finder, RegionsConfig, find_regions

HIT_IOU = 0.1
# Regions settings the main table scores hits with: an Otsu threshold (core's first default), and
# the 95th percentile, the best setting of the regions table below over edit densities 3-9 per
# photo (see benchmarks/README.md).
HIT_REGIONS = {
    "otsu": RegionsConfig(threshold="otsu", min_area=16),
    "p95": RegionsConfig(threshold="percentile", percentile=95.0, min_area=16),
}

# -- scores ---------------------------------------------------------------------------------


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ``scores`` ranking the ``positive`` pixels first.

    AP = sum over distinct score thresholds (high to low) of (recall gain) x precision, with
    tied scores entering together (the step-wise definition scikit-learn uses). NaN when there is
    no positive.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in size")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def count_hits(regions: Sequence[tuple[int, int, int, int]],
               edits: Sequence[tuple[int, int, int, int]], min_iou: float = HIT_IOU) -> list[bool]:
    """Which edits the regions (in rank order) land on; each region counts for one edit at most."""
    hit = [False] * len(edits)
    for r in regions:
        best, best_iou = -1, min_iou
        for i, e in enumerate(edits):
            v = iou(r, e)
            if not hit[i] and v >= best_iou:
                best, best_iou = i, v
        if best >= 0:
            hit[best] = True
    return hit


def edit_hits(m: np.ndarray, pair: EditPair, regions: RegionsConfig) -> list[bool]:
    """Per edit: does one of the map's top-k regions (k = number of edits) land on it?"""
    cfg = regions.model_copy(update={"max_regions": len(pair.edits)})
    boxes = [(r.x, r.y, r.width, r.height) for r in find_regions(m, cfg)]
    return count_hits(boxes, [e.box for e in pair.edits])


# -- candidates -----------------------------------------------------------------------------

MapFn = Callable[[torch.Tensor, torch.Tensor], np.ndarray]


@dataclass
class Candidate:
    """A pipeline to score: a core config, or a seed call."""

    label: str
    config: dict | None = None  # PipelineConfig fields
    seed: tuple[str, str, str, str] | None = None  # (pre, post, strategy, metric)
    absolute: bool = False  # score |map| (the seed's gradient maps are signed)


def _smooth(sigma: float) -> dict:
    return {"name": "smooth", "sigma": sigma}


def core_candidates(quick: bool = False) -> list[Candidate]:
    """The seed's combinations in core, the map strategy, and post-processing variants."""
    out: list[Candidate] = []
    pres = {"identity": "identity", "highpass": "highpass_filter", "lowpass": "lowpass_filter"}
    combos = [("difference", "mse"), ("gradient", "mse"), ("gradient", "psnr"),
              ("gradient", "ssim"), ("gradient", "ms-ssim"), ("map", "mse"), ("map", "ssim")]
    for pre_label, pre in pres.items():
        for strategy, metric in combos:
            name = strategy if strategy == "difference" else f"{strategy} {metric}"
            label = name if pre == "identity" else f"{pre_label} > {name}"
            out.append(Candidate(label, {"pre_processor": pre, "strategy": strategy,
                                         "metric": metric}))
    if quick:
        out = [c for c in out if ">" not in c.label]
    smooths = {"difference": [1, 2, 3, 4, 6], "map ssim": [1, 2, 3, 4, 6],
               "map mse": [1, 2, 4], "gradient ssim": [2, 4]}
    for base, sigmas in smooths.items():
        strategy, _, metric = base.partition(" ")
        for s in sigmas[::2] if quick else sigmas:
            out.append(Candidate(f"{base} > smooth {s:g}", {
                "strategy": strategy, "metric": metric or "mse",
                "post_processor": _smooth(float(s))}))
    if quick:
        return out
    for label, metric in {"ssim win 7": {"name": "ssim", "win_size": 7, "sigma": 1.0},
                          "ssim win 15": {"name": "ssim", "win_size": 15, "sigma": 2.5}}.items():
        out.append(Candidate(f"map {label}", {"strategy": "map", "metric": metric}))
        for s in (2.0, 4.0):
            out.append(Candidate(f"map {label} > smooth {s:g}", {
                "strategy": "map", "metric": metric, "post_processor": _smooth(s)}))
    out += [
        Candidate("difference (max over channels) > smooth 2", {
            "strategy": "difference", "reduction": "max", "post_processor": _smooth(2.0)}),
        Candidate("lowpass > difference > smooth 2", {
            "pre_processor": "lowpass_filter", "strategy": "difference",
            "post_processor": _smooth(2.0)}),
        Candidate("difference > clip 99%", {"strategy": "difference", "post_processor": "clip"}),
        Candidate("difference > smooth 2 > clip 99%", {
            "strategy": "difference", "post_processor": [_smooth(2.0), "clip"]}),
        Candidate("map ssim (max over channels)", {
            "strategy": "map", "metric": "ssim", "reduction": "max"}),
        Candidate("map ssim (max over channels) > smooth 4", {
            "strategy": "map", "metric": "ssim", "reduction": "max",
            "post_processor": _smooth(4.0)}),
        Candidate("map ssim > clip 99%", {"strategy": "map", "metric": "ssim",
                                          "post_processor": "clip"}),
        Candidate("bandpass > map ssim", {"pre_processor": "bandpass_filter",
                                          "strategy": "map", "metric": "ssim"}),
    ]
    return out


def seed_candidates() -> list[Candidate]:
    """The seed's default (gradient + mse) and its README example (gradient + psnr)."""
    out = []
    for metric, what in (("mse", "default"), ("psnr", "README example")):
        combo = ("identity", "identity", "gradient", metric)
        out.append(Candidate(f"SEED {what}: gradient {metric}", seed=combo))
        out.append(Candidate(f"SEED {what}: gradient {metric}, scored as |map|", seed=combo,
                             absolute=True))
    return out


def map_function(c: Candidate) -> MapFn:
    """A callable (reference, candidate) float tensors (1, C, H, W) -> (H, W) numpy map."""
    if c.seed is not None:
        from benchmarks.seed import seed_finder

        run = seed_finder(*c.seed, device="cpu")
        return (lambda a, b: np.abs(run(a, b))) if c.absolute else run
    finder = Finder(device="cpu", **c.config)
    return lambda a, b: finder.compute(a, b)[0][0].numpy()


# -- running --------------------------------------------------------------------------------


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) -> float (1, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div_(255.0)


@dataclass
class Scores:
    """One candidate's results over all pairs."""

    label: str
    ap: dict[tuple[str, str], float] = field(default_factory=dict)  # (image, nuisance) -> AP
    hits: dict[str, dict[tuple[str, str], list[bool]]] = field(default_factory=dict)
    ms: list[float] = field(default_factory=list)
    candidate: Candidate | None = None

    def mean_ap(self, nuisance: str | None = None) -> float:
        return float(np.mean([v for (_, n), v in self.ap.items() if nuisance in (None, n)]))

    def hit_rate(self, regions: str = "otsu", nuisance: str | None = None) -> float:
        got = [h for (_, n), hs in self.hits[regions].items() if nuisance in (None, n)
               for h in hs]
        return float(np.mean(got))

    def rank_key(self) -> tuple[float, float]:
        return (-self.mean_ap(), -self.hit_rate("p95"))


Pairs = list[tuple[EditPair, torch.Tensor, torch.Tensor]]


def score(c: Candidate, pairs: Pairs) -> Scores:
    """AP and hits (under each of HIT_REGIONS) of one candidate over all pairs."""
    fn = map_function(c)
    out = Scores(c.label, candidate=c, hits={name: {} for name in HIT_REGIONS})
    for pair, ref, cand in pairs:
        m = fn(ref, cand)
        key = (pair.image, pair.nuisance)
        out.ap[key] = average_precision(m, pair.mask)
        for name, regions in HIT_REGIONS.items():
            out.hits[name][key] = edit_hits(m, pair, regions)
    return out


def time_candidates(results: list[Scores], ref: torch.Tensor, cand: torch.Tensor,
                    rounds: int = 7) -> None:
    """Fill each result's ``ms``: one pair, candidates interleaved round by round, so load from
    other processes on a shared CPU hits all of them alike; the table shows the median."""
    fns = [map_function(r.candidate) for r in results]
    for fn in fns:
        fn(ref, cand)  # warm-up: lazy imports, allocator
    for _ in range(rounds):
        for r, fn in zip(results, fns, strict=True):
            t0 = time.perf_counter()
            fn(ref, cand)
            r.ms.append((time.perf_counter() - t0) * 1e3)


def markdown_table(results: list[Scores], nuisances: Sequence[str]) -> str:
    """The main table: candidates sorted by mean AP, then by hits (p95)."""
    head = ["#", "pipeline", "AP mean", *[f"AP {n}" for n in nuisances],
            *[f"hits {name}" for name in HIT_REGIONS], "ms/pair"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, r in enumerate(sorted(results, key=Scores.rank_key), 1):
        cells = [str(i), r.label, f"{r.mean_ap():.3f}",
                 *[f"{r.mean_ap(n):.3f}" for n in nuisances],
                 *[f"{r.hit_rate(name):.0%}" for name in HIT_REGIONS],
                 f"{np.median(r.ms):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REGION_VARIANTS: dict[str, dict] = {
    "otsu, min_area 16": {"threshold": "otsu"},
    "otsu, min_area 4": {"min_area": 4},
    "otsu, min_area 64": {"min_area": 64},
    "percentile 99, min_area 16": {"threshold": "percentile", "percentile": 99.0},
    "percentile 98, min_area 16": {"threshold": "percentile", "percentile": 98.0},
    "percentile 97, min_area 16": {"threshold": "percentile", "percentile": 97.0},
    "percentile 95, min_area 16": {"threshold": "percentile", "percentile": 95.0},
    "percentile 90, min_area 16": {"threshold": "percentile", "percentile": 90.0},
    "percentile 98, min_area 64": {"threshold": "percentile", "percentile": 98.0,
                                   "min_area": 64},
    "percentile 95, min_area 64": {"threshold": "percentile", "percentile": 95.0,
                                   "min_area": 64},
}


def regions_table(top: list[Scores], pairs: Pairs) -> str:
    """Hit rate of each top pipeline's maps under several regions settings."""
    maps = []
    for r in top:
        fn = map_function(r.candidate)
        maps.append([fn(ref, cand) for _, ref, cand in pairs])
    head = ["regions config", *[r.label for r in top]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for label, update in REGION_VARIANTS.items():
        cfg = RegionsConfig(**update)
        cells = [label]
        for ms in maps:
            got = [h for (p, _, _), m in zip(pairs, ms, strict=True)
                   for h in edit_hits(m, p, cfg)]
            cells.append(f"{np.mean(got):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kinds_table(top: list[Scores], pairs: Pairs, regions: str) -> str:
    """Hit rate per edit kind under the ``regions`` settings of HIT_REGIONS."""
    kinds = sorted({e.kind for p, _, _ in pairs for e in p.edits})
    head = ["pipeline", *kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in top:
        cells = [r.label]
        for k in kinds:
            got = [h for p, _, _ in pairs
                   for e, h in zip(p.edits, r.hits[regions][(p.image, p.nuisance)],
                                   strict=True)
                   if e.kind == k]
            cells.append(f"{np.mean(got):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 photos and fewer pipelines")
    ap.add_argument("--size", type=int, default=384, help="longer image side (default 384)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--edits", type=int, default=EDITS_PER_IMAGE,
                    help=f"local edits per photo (default {EDITS_PER_IMAGE})")
    ap.add_argument("--only", metavar="REGEX",
                    help="score only pipelines whose label matches (re.search), e.g. 'smooth 2$'")
    ap.add_argument("--no-seed-package", action="store_true", help="skip the seed package")
    args = ap.parse_args(argv)

    from benchmarks.seed import seed_available

    t_start = time.perf_counter()
    images = ("astronaut", "camera", "coffee") if args.quick else tuple(PHOTOS)
    pairs = [(p, to_tensor(p.reference), to_tensor(p.candidate))
             for p in make_dataset(images, NUISANCES, args.size, args.seed, args.edits)]
    n_edits = sum(len(p.edits) for p, _, _ in pairs) // len(NUISANCES)
    print(f"# Quality benchmark: {len(images)} photos x {len(NUISANCES)} nuisances "
          f"({', '.join(NUISANCES)}) = {len(pairs)} pairs, {n_edits} edits per nuisance, "
          f"longer side {args.size}px, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.1f}\n")

    candidates = core_candidates(args.quick)
    if args.no_seed_package:
        print("(seed package skipped: --no-seed-package)\n")
    elif seed_available():
        candidates += seed_candidates()
    else:
        print("(seed package not installed, see benchmarks/README.md; its rows are missing)\n")
    if args.only:
        candidates = [c for c in candidates if re.search(args.only, c.label)]
        if not candidates:
            ap.error(f"--only {args.only!r} matches no pipeline")

    results = []
    for c in candidates:
        results.append(score(c, pairs))
        print(f"  scored {c.label:45s} AP {results[-1].mean_ap():.3f}", file=sys.stderr)

    tp, tp_ref, tp_cand = next(p for p in pairs if p[0].reference.shape[-1] == 3)
    time_candidates(results, tp_ref, tp_cand)
    print(markdown_table(results, NUISANCES))
    print("\nAP: average precision of the map ranking the edited pixels (chance = the edited "
          f"share, {np.mean([p.mask.mean() for p, _, _ in pairs]):.3f}). hits: share of edits "
          f"that one of the map's top-k regions lands on (box IoU >= {HIT_IOU}), k = edits in "
          "the image; regions by core.find_regions with min_area 16 and an Otsu threshold (otsu) "
          "or the 95th percentile (p95). ms/pair: median time of the "
          f"map for one {tp.image} pair ({tp.reference.shape[1]}x{tp.reference.shape[0]} RGB), "
          "all candidates timed interleaved on a possibly shared CPU. "
          "LPIPS is not scored: its backbone weights (ImageNet AlexNet/VGG/SqueezeNet) are not "
          "on this machine and stand-in random weights would say nothing about its quality.\n")

    ranked = sorted((r for r in results if r.candidate.seed is None), key=Scores.rank_key)
    current = [r for r in results if r.label == "map ssim" and r not in ranked[:3]]
    top = ranked[:3] + current
    print("## Regions settings: hit rate of the top pipelines' maps\n")
    print(regions_table(top, pairs))
    seeds = [r for r in results if r.label.startswith("SEED default") and "|map|" not in r.label]
    for name in HIT_REGIONS:
        print(f"\n## Hit rate by edit kind, regions {name}\n")
        print(kinds_table(top + seeds, pairs, name))
    print(f"\nTotal time {time.perf_counter() - t_start:.0f} s "
          f"(load average at the end {os.getloadavg()[0]:.1f}).")


if __name__ == "__main__":
    main()
