"""Quality benchmark (issue 11): does a system find the small local edits of a photo pair, and
only them, under image-wide nuisances it never saw?

Pairs come from benchmarks/edits.py (photos, about seven edits each, 8-100 px, faint to clear)
and benchmarks/nuisances.py (codecs, resampling round trips, denoisers, blur, noise; several
strengths), each also as a nuisance-only pair. Photos and nuisance families are split in two
fixed halves: every default and parameter is chosen on the tuning half; results are read on the
held-out half. Systems (this project's pipelines and its peers, benchmarks/peers.py) run on the
same pairs in one interleaved loop. Scores, per nuisance family and overall:

  AP pixel / AP box  average precision of the map ranking the edited pixels first, with the
                     changed pixels, or every pixel of the edits' boxes, as the positives;
  found              share of edits that a reported region overlaps (the system's default
                     regions; peers: this project's regions code on their map);
  recall@0.3         share of edits some reported region matches with box IoU >= 0.3;
  false/clean        regions per nuisance-only pair (all of them are false);
  false/edited       regions overlapping no edit, per edited pair;
  top-k found        share of edits among the k strongest spots (k = the pair's edits; spots
                     above the map's 98th percentile, ranked by mass): the issue's measure;
  ms/512²            median time per pair (map and regions, uint8 in), scaled to 512x512.

    .venv/bin/python -m benchmarks.quality --quick              # smoke run, < 2 min
    .venv/bin/python -m benchmarks.quality                      # held-out half, full
    .venv/bin/python -m benchmarks.quality --split tuning       # the half to tune on
    .venv/bin/python -m benchmarks.quality --pipeline 'mine={"strategy": "map"}'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.edits import (
    EDIT_KINDS,
    EDITS_PER_IMAGE,
    HELDOUT_PHOTOS,
    TUNING_PHOTOS,
    EditPair,
    make_pairs,
)
from benchmarks.nuisances import HELDOUT_FAMILIES, TUNING_FAMILIES, avif_available, nuisances_of
from benchmarks.peers import System, peer_systems, project_systems
from core import RegionsConfig, find_regions

SPLITS = {
    "tuning": (TUNING_PHOTOS, TUNING_FAMILIES),
    "heldout": (HELDOUT_PHOTOS, HELDOUT_FAMILIES),
}
QUICK_PHOTOS = 2  # --quick: the first photos of each half (one colour, one grayscale or two)
RECALL_IOU = 0.3
SPOT_PERCENTILE = 98.0
TARGETS = {"ap_ratio": 1.2, "found": 0.95, "false_clean": 0.2, "ms": 15.0}

# -- scores ---------------------------------------------------------------------------------


def average_precisions(scores: np.ndarray, positives: Sequence[np.ndarray]) -> list[float]:
    """Average precision of ``scores`` ranking each label set's positives first (one sort).

    AP = sum over distinct score thresholds (high to low) of (recall gain) x precision, tied
    scores entering together (scikit-learn's step-wise definition). NaN without positives.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]  # last index of each tie group
    out = []
    for pos in positives:
        y = np.asarray(pos, dtype=bool).ravel()
        if y.shape != s.shape:
            raise ValueError(f"scores {s.shape} and labels {y.shape} differ in size")
        n_pos = int(y.sum())
        if n_pos == 0:
            out.append(float("nan"))
            continue
        tp = np.cumsum(y[order])[last]
        precision = tp / (last + 1)
        recall_gain = np.diff(np.r_[0, tp]) / n_pos
        out.append(float(np.sum(recall_gain * precision)))
    return out


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ``scores`` ranking the ``positive`` pixels first."""
    return average_precisions(scores, [positive])[0]


Box = tuple[int, int, int, int]  # x, y, width, height


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    inter = overlap(a, b)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def overlap(a: Box, b: Box) -> int:
    """Pixels two (x, y, width, height) boxes share."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return iw * ih if iw > 0 and ih > 0 else 0


def match(regions: Sequence[Box], edits: Sequence[Box]) -> tuple[list[bool], list[bool], int]:
    """(per edit: a region overlaps it; per edit: a region has IoU >= RECALL_IOU with it;
    number of regions that overlap no edit)."""
    found = [any(overlap(r, e) for r in regions) for e in edits]
    recall = [any(iou(r, e) >= RECALL_IOU for r in regions) for e in edits]
    false = sum(1 for r in regions if not any(overlap(r, e) for e in edits))
    return found, recall, false


def strongest_spots(m: np.ndarray, k: int) -> list[Box]:
    """The ``k`` strongest spots of any map, the same way for every system: components above
    its 98th percentile (the next lower value where ties fill the top), ranked by mass."""
    thr = float(np.percentile(m, SPOT_PERCENTILE))
    if not (m > thr).any():
        below = m[m < m.max()]
        if below.size == 0:
            return []
        thr = float(below.max())
    cfg = RegionsConfig(threshold="value", value=thr, max_regions=k, min_area=1)
    return [(r.x, r.y, r.width, r.height) for r in find_regions(m, cfg)]


# -- the run --------------------------------------------------------------------------------


@dataclass
class PairScore:
    """One system on one pair."""

    family: str
    clean: bool
    ap_pixel: float = float("nan")
    ap_box: float = float("nan")
    found: list[bool] = field(default_factory=list)
    recall: list[bool] = field(default_factory=list)
    top: list[bool] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    strengths: list[float] = field(default_factory=list)
    regions: int = 0
    false: int = 0
    ms: float = 0.0  # scaled to 512x512


def score_pair(system: System, pair: EditPair) -> PairScore:
    """Run one system on one pair (timed) and score it."""
    t0 = time.perf_counter()
    m, regions = system.run(pair.reference, pair.candidate)
    ms = (time.perf_counter() - t0) * 1e3
    h, w = pair.reference.shape[:2]
    out = PairScore(pair.family, clean=not pair.edits, regions=len(regions),
                    ms=ms * 512 * 512 / (h * w))
    edit_boxes = [e.box for e in pair.edits]
    out.found, out.recall, out.false = match(regions, edit_boxes)
    if pair.edits:
        out.ap_pixel, out.ap_box = average_precisions(m, [pair.truth, pair.box_truth])
        top = strongest_spots(m, len(pair.edits))
        out.top = [any(overlap(r, e) for r in top) for e in edit_boxes]
        out.kinds = [e.kind for e in pair.edits]
        out.strengths = [e.strength for e in pair.edits]
    return out


def run_all(systems: list[System], pairs: Sequence[EditPair], log: bool = True
            ) -> dict[str, list[PairScore]]:
    """Every system on every pair; the order of systems rotates from pair to pair, so load from
    other processes hits all of them alike."""
    got: dict[str, list[PairScore]] = {s.label: [] for s in systems}
    for i, pair in enumerate(pairs):
        k = i % len(systems)
        for s in systems[k:] + systems[:k]:
            got[s.label].append(score_pair(s, pair))
        if log and (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(pairs)} pairs, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return got


# -- summaries ------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")


def _flat(rows: Sequence[PairScore], attr: str) -> list:
    return [v for r in rows for v in getattr(r, attr)]


def summary(rows: Sequence[PairScore]) -> dict[str, float]:
    """The scores of one system over ``rows`` (pairs of one family, or all)."""
    edited = [r for r in rows if not r.clean]
    clean = [r for r in rows if r.clean]
    return {
        "ap_pixel": _mean([r.ap_pixel for r in edited]),
        "ap_box": _mean([r.ap_box for r in edited]),
        "found": _mean(_flat(edited, "found")),
        "recall": _mean(_flat(edited, "recall")),
        "false_clean": _mean([r.false for r in clean]),
        "false_edited": _mean([r.false for r in edited]),
        "top": _mean(_flat(edited, "top")),
        "ms": float(np.median([r.ms for r in rows])) if rows else float("nan"),
    }


def overall(rows: Sequence[PairScore], families: Sequence[str]) -> dict[str, float]:
    """Each family's summary averaged with equal weight (ms: the median over all pairs)."""
    per = [summary([r for r in rows if r.family == f]) for f in families]
    out = {k: _mean([p[k] for p in per]) for k in per[0]}
    out["ms"] = summary(rows)["ms"]
    return out


COLUMNS = {
    "ap_pixel": ("AP pixel", "{:.3f}"), "ap_box": ("AP box", "{:.3f}"),
    "found": ("found", "{:.0%}"), "recall": ("recall@0.3", "{:.0%}"),
    "false_clean": ("false/clean pair", "{:.2f}"), "false_edited": ("false/edited pair", "{:.2f}"),
    "top": ("top-k found", "{:.0%}"), "ms": ("ms/512²", "{:.1f}"),
}


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    return "\n".join(["\n".join(lines), *["| " + " | ".join(r) + " |" for r in rows]])


def _fmt(key: str, v: float) -> str:
    return "n/a" if v != v else COLUMNS[key][1].format(v)


def overall_table(systems: list[System], got: dict[str, list[PairScore]],
                  families: Sequence[str]) -> str:
    rows = []
    for s in systems:
        o = overall(got[s.label], families)
        rows.append([s.label, *[_fmt(k, o[k]) for k in COLUMNS], s.regions_note])
    return _table(["system", *[c for c, _ in COLUMNS.values()], "regions"], rows)


def family_table(key: str, systems: list[System], got: dict[str, list[PairScore]],
                 families: Sequence[str]) -> str:
    rows = []
    for s in systems:
        o = overall(got[s.label], families)
        per = [summary([r for r in got[s.label] if r.family == f])[key] for f in families]
        rows.append([s.label, *[_fmt(key, v) for v in per], _fmt(key, o[key])])
    return _table(["system", *families, "overall"], rows)


def breakdown_table(systems: list[System], got: dict[str, list[PairScore]], attr: str,
                    by: str) -> str:
    """Share of edits ``attr`` ('found' or 'top') by edit kind, or by strength third."""
    if by == "kind":
        groups = [k for k in EDIT_KINDS if any(k in r.kinds for r in got[systems[0].label])]
        key = lambda kind, strength: kind  # noqa: E731
    else:
        groups = ["faint (s < 1/3)", "middle", "clear (s >= 2/3)"]
        key = lambda kind, strength: groups[min(2, int(strength * 3))]  # noqa: E731
    rows = []
    for s in systems:
        hits: dict[str, list[bool]] = {g: [] for g in groups}
        for r in got[s.label]:
            for kind, strength, h in zip(r.kinds, r.strengths, getattr(r, attr), strict=True):
                if kind != "swap" or by == "kind":  # swaps have no strength
                    hits[key(kind, strength)].append(h)
        rows.append([s.label, *[_fmt("found", _mean(hits[g])) for g in groups]])
    counts = [sum(1 for r in got[systems[0].label] for k, st in zip(r.kinds, r.strengths,
                                                                      strict=True)
                  if (k != "swap" or by == "kind") and key(k, st) == g) for g in groups]
    return _table(["system", *[f"{g} ({n})" for g, n in zip(groups, counts, strict=True)]], rows)


def targets_table(systems: list[System], got: dict[str, list[PairScore]],
                  families: Sequence[str]) -> str:
    """PASS/FAIL of each project pipeline against issue 11's targets."""
    peers = [overall(got[s.label], families) for s in systems if s.peer]
    best = {k: max((p[k] for p in peers), default=float("nan")) for k in ("ap_pixel", "ap_box")}
    t = TARGETS

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = []
    for s in systems:
        if s.peer:
            continue
        o = overall(got[s.label], families)
        cells = [s.label]
        for k in ("ap_pixel", "ap_box"):
            ratio = o[k] / best[k] if best[k] == best[k] else float("nan")
            cells.append(f"{o[k]:.3f} = {ratio:.2f}x best peer ({best[k]:.3f}): "
                         f"{verdict(ratio >= t['ap_ratio'])}")
        cells += [f"{o['found']:.0%}: {verdict(o['found'] >= t['found'])}",
                  f"{o['false_clean']:.2f}: {verdict(o['false_clean'] <= t['false_clean'])}",
                  f"{o['ms']:.1f}: {verdict(o['ms'] <= t['ms'])}"]
        rows.append(cells)
    head = ["system", f"AP pixel >= {t['ap_ratio']}x best peer",
            f"AP box >= {t['ap_ratio']}x best peer", f"found >= {t['found']:.0%}",
            f"false/clean pair <= {t['false_clean']}", f"ms/512² <= {t['ms']:g}"]
    return _table(head, rows)


def report(half: str, photos: Sequence[str], families: Sequence[str], systems: list[System],
           got: dict[str, list[PairScore]]) -> None:
    label = "HELD-OUT" if half == "heldout" else "TUNING (not a result: parameters chosen here)"
    print(f"\n## {label} half: {', '.join(photos)} | {', '.join(families)}\n")
    print("### Overall (families weighted equally; peers' regions: this project's regions code "
          "on their maps, column 'regions')\n")
    print(overall_table(systems, got, families))
    if half == "heldout":
        print("\n### Targets of issue 11 (held-out)\n")
        print(targets_table(systems, got, families))
    for key in ("ap_pixel", "ap_box", "found", "recall", "false_clean", "top", "ms"):
        print(f"\n### {COLUMNS[key][0]} by nuisance family\n")
        print(family_table(key, systems, got, families))
    print("\n### found (default regions) by edit kind\n")
    print(breakdown_table(systems, got, "found", "kind"))
    print("\n### found (default regions) by edit strength\n")
    print(breakdown_table(systems, got, "found", "strength"))
    print("\n### top-k found by edit strength\n")
    print(breakdown_table(systems, got, "top", "strength"))


def parse_pipeline(text: str) -> tuple[str, dict]:
    """'label={json}' or '{json}' -> (label, config dict)."""
    label, sep, body = text.partition("=")
    if not sep or label.strip().startswith("{"):
        label, body = text, text
    return label.strip(), json.loads(body)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("tuning", "heldout", "both"), default="heldout",
                    help="which half to run (default heldout, the half the README reports)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_PHOTOS} photos per half, the strongest nuisance of each family")
    ap.add_argument("--size", type=int, default=512, help="longer image side (default 512)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--edits", type=int, default=EDITS_PER_IMAGE,
                    help=f"edits per photo (default {EDITS_PER_IMAGE})")
    ap.add_argument("--pipeline", action="append", default=[], metavar="[LABEL=]JSON",
                    help="add a PipelineConfig (JSON) to score; repeatable")
    ap.add_argument("--no-peers", action="store_true", help="score this project's pipelines only")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    systems = project_systems([parse_pipeline(p) for p in args.pipeline])
    missing: dict[str, str] = {}
    if not args.no_peers:
        peers, missing = peer_systems()
        systems += peers
    halves = ["tuning", "heldout"] if args.split == "both" else [args.split]

    print("# Quality benchmark (issue 11)\n")
    print("Split, fixed in code: TUNING photos " + ", ".join(TUNING_PHOTOS) + "; families "
          + ", ".join(TUNING_FAMILIES) + ". HELD-OUT photos " + ", ".join(HELDOUT_PHOTOS)
          + "; families " + ", ".join(HELDOUT_FAMILIES) + "."
          + ("" if avif_available() else " (AVIF: not supported by this Pillow, left out.)"))
    print(f"Running: {', '.join(halves)}{' (--quick)' if args.quick else ''}; longer side "
          f"{args.size} px, seed {args.seed}, {args.edits} edits per photo; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
          + " ".join(f"{x:.1f}" for x in load0) + ".")
    print("Systems: " + "; ".join(s.label for s in systems) + ".")
    for label, why in missing.items():
        print(f"MISSING peer (not scored): {label}: {why}")

    for half in halves:
        photos, families = SPLITS[half]
        if args.quick:
            photos = photos[:QUICK_PHOTOS]
        nuisances = nuisances_of(families, quick=args.quick)
        t0 = time.perf_counter()
        pairs = list(make_pairs(photos, nuisances, args.size, args.seed, args.edits))
        n_edits = sum(len(p.edits) for p in pairs)
        print(f"\n{half}: {len(photos)} photos x {len(nuisances)} nuisances "
              f"({', '.join(n.name for n in nuisances)}) = {len(pairs) // 2} edited + "
              f"{len(pairs) // 2} nuisance-only pairs, {n_edits} edits in all "
              f"(made in {time.perf_counter() - t0:.0f} s)", flush=True)
        got = run_all(systems, pairs)
        report(half, photos, families, systems, got)

    print("\nAP pixel: positives are the pixels the edits changed (> 1 uint8 level); AP box: "
          "every pixel of the edits' tight boxes. found: a region of the system's default "
          "regions overlaps the edit's box. recall@0.3: a region's box has IoU >= 0.3 with it. "
          "false: regions overlapping no edit. top-k found: among the k strongest spots of the "
          "map (k = edits in the pair; components above the 98th percentile, by mass), the same "
          "for every system. Peers have no regions: theirs are this project's regions code on "
          "their map (column 'regions'). The seed's gradient maps are signed and scored as "
          "|map|. ms/512²: median per pair of map + regions from uint8 arrays, scaled to "
          "512x512, systems interleaved (rotating order) on a possibly shared CPU.")
    print(f"\nTotal time {time.perf_counter() - t_start:.0f} s; load average at the start "
          + " ".join(f"{x:.1f}" for x in load0) + ", at the end "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()) + ".")


if __name__ == "__main__":
    main()
