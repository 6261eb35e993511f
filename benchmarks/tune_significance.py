"""Tune the significance strategy and its hysteresis regions on the TUNING half only.

Pairs are benchmarks/quality.py's tuning half (TUNING_PHOTOS x TUNING_FAMILIES, edited and
nuisance-only); the held-out half is never evaluated here. Maps are computed once per map
setting, then region thresholds are swept on them. Prints, per setting: pixel AP, share of edits
found by the regions, recall at IoU >= 0.3, false regions per nuisance-only and per edited pair,
and the median map time per pair.

    python -m benchmarks.tune_significance [--quick] [--photos N]
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import numpy as np

from benchmarks.edits import TUNING_PHOTOS, EditPair, make_pairs
from benchmarks.nuisances import TUNING_FAMILIES, nuisances_of
from benchmarks.quality import average_precision, match
from core import Finder
from core.regions import RegionsConfig, find_regions

OLD_DEFAULT: dict[str, Any] = {"strategy": "difference",
                               "post_processor": [{"name": "smooth", "sigma": 2.0}]}


def maps_for(config: dict[str, Any], pairs: list[EditPair]) -> tuple[list[np.ndarray], float]:
    finder = Finder(device="cpu", config=config)
    maps, ms = [], []
    for p in pairs:
        t0 = time.perf_counter()
        maps.append(finder.analyze(p.reference, p.candidate, metrics=False, regions=False)[0].map)
        ms.append((time.perf_counter() - t0) * 1e3 * 512 * 512 / p.truth.size)
    return maps, float(np.median(ms))


def evaluate(maps: list[np.ndarray], pairs: list[EditPair], cfg: RegionsConfig
             ) -> dict[str, float]:
    ap, found, recall, false_edit, false_clean = [], [], [], [], []
    for m, p in zip(maps, pairs, strict=True):
        boxes = [(r.x, r.y, r.width, r.height) for r in find_regions(m, cfg)]
        f, rc, n_false = match(boxes, [e.box for e in p.edits])
        if p.edits:
            ap.append(average_precision(m, p.truth))
            found += f
            recall += rc
            false_edit.append(n_false)
        else:
            false_clean.append(n_false)
    return {"AP": float(np.mean(ap)), "found": float(np.mean(found)),
            "recall": float(np.mean(recall)), "false/clean": float(np.mean(false_clean)),
            "false/edited": float(np.mean(false_edit))}


def line(res: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in res.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="strongest nuisance of each family")
    ap.add_argument("--photos", type=int, default=len(TUNING_PHOTOS))
    ap.add_argument("--variants", default="{}", help="';'-separated JSON strategy params")
    ap.add_argument("--per-family", action="store_true")
    ap.add_argument("--high", default="8,10,12,14", help="comma-separated values to sweep")
    ap.add_argument("--low", default="3,4")
    ap.add_argument("--relative", default="0,0.25")
    ap.add_argument("--merge", default="0")
    args = ap.parse_args()
    import json

    pairs = list(make_pairs(TUNING_PHOTOS[: args.photos],
                            nuisances_of(TUNING_FAMILIES, quick=args.quick)))
    print(f"tuning half: {args.photos} photos, {len(pairs)} pairs "
          f"({sum(len(p.edits) for p in pairs)} edits)")
    maps, ms = maps_for(OLD_DEFAULT, pairs)
    res = evaluate(maps, pairs, RegionsConfig(threshold="percentile", percentile=98.0))
    print(f"old default (difference > smooth 2, p98): {line(res)} ms {ms:.1f}")
    for text in args.variants.split(";"):
        params = json.loads(text)
        maps, ms = maps_for({"strategy": {"name": "significance", **params},
                             "post_processor": []}, pairs)
        print(f"significance {params} ms/pair {ms:.1f}")
        for high in map(float, args.high.split(",")):
            for low in map(float, args.low.split(",")):
                for rel, merge in itertools.product(map(float, args.relative.split(",")),
                                                    map(float, args.merge.split(","))):
                    cfg = RegionsConfig(threshold="hysteresis", high=high, low=low, relative=rel,
                                        merge=merge)
                    print(f"  high {high:4.1f} low {low} rel {rel} merge {merge}: "
                          f"{line(evaluate(maps, pairs, cfg))}")
        if args.per_family:
            cfg = RegionsConfig(threshold="hysteresis")  # the defaults
            for fam in TUNING_FAMILIES:
                idx = [i for i, p in enumerate(pairs) if p.family == fam]
                res = evaluate([maps[i] for i in idx], [pairs[i] for i in idx], cfg)
                print(f"    {fam:10s} {line(res)}")


if __name__ == "__main__":
    main()
