"""core.results: every result's JSON-ready dict, with the finite-float rule (NaN and
infinity become None) and regions kept in their ranked order."""

from __future__ import annotations

import json
import math

import numpy as np

from core import Finder, PairResult, Region, compare
from core.results import NO_DIFFERENCE, finite_or_none, finite_values, regions_summary


def test_finite_or_none() -> None:
    assert finite_or_none(1) == 1.0 and isinstance(finite_or_none(1), float)
    assert finite_or_none(np.float32(0.5)) == 0.5
    assert finite_or_none(math.inf) is None
    assert finite_or_none(-math.inf) is None
    assert finite_or_none(math.nan) is None
    assert finite_values({"psnr": math.inf, "ssim": 0.9}) == {"psnr": None, "ssim": 0.9}


def test_region_to_dict_keeps_fields_and_drops_non_finite_floats() -> None:
    r = Region(x=1, y=2, width=3, height=4, area=12, score=0.5, peak=math.inf, mean=math.nan)
    assert r.to_dict() == {"x": 1, "y": 2, "width": 3, "height": 4, "area": 12, "score": 0.5,
                           "peak": None, "mean": None, "significance": None}
    sig = Region(x=1, y=2, width=3, height=4, area=12, score=0.5, peak=20.0, mean=9.0,
                 significance=20.0)
    assert sig.to_dict()["significance"] == 20.0


def test_pair_result_to_dict_is_json_and_keeps_region_order() -> None:
    weak = Region(0, 0, 1, 1, 1, 0.1, 1.0, 1.0)
    strong = Region(5, 5, 2, 2, 4, 0.7, 3.0, 2.0)
    res = PairResult(map=np.zeros((4, 6), np.float32), metrics={"psnr": math.inf},
                     regions=[weak, strong], timing_ms={"load": 1.23456})
    d = res.to_dict()
    assert d == {"shape": [4, 6], "metrics": {"psnr": None},
                 "regions": [weak.to_dict(), strong.to_dict()], "summary": "2 regions",
                 "timing_ms": {"load": 1.23}}
    assert res.to_dict(timing_digits=3)["timing_ms"] == {"load": 1.235}
    json.dumps(d, allow_nan=False)


def test_identical_pair_from_the_finder_serialises(astronaut: np.ndarray) -> None:
    img = np.ascontiguousarray(astronaut[:64, :64])
    res = Finder(metric="psnr", device="cpu").analyze(img, img)[0]
    d = res.to_dict()
    assert d["metrics"] == {"psnr": None}  # infinite PSNR of identical images
    assert d["regions"] == [] and d["summary"] == "no significant difference found"
    json.dumps(d, allow_nan=False)


def test_comparison_to_dict_is_summary_and_json(astronaut: np.ndarray) -> None:
    ref = np.ascontiguousarray(astronaut[:64, :64])
    cand = ref.copy()
    cand[10:20, 10:20] = 255
    got = compare(ref, [ref.copy(), cand], labels=["same", "edited"], baseline="same",
                  device="cpu")
    d = got.to_dict()
    assert d == got.summary()
    assert d["candidates"][0]["summary"] == "no significant difference found"
    assert d["candidates"][1]["summary"].endswith(("significant region",
                                                   "significant regions"))
    assert [c["label"] for c in d["candidates"]] == ["same", "edited"]
    assert d["candidates"][0]["metrics"]["psnr"] is None
    edited = got.candidate("edited")
    assert d["candidates"][1] == edited.to_dict()
    assert d["candidates"][1]["regions"] == [r.to_dict() for r in edited.regions]
    assert d["improvement"] == [got.improvement[0].to_dict()]
    assert d["scale"] == {"vmin": got.scale[0], "vmax": got.scale[1]}
    json.dumps(d, allow_nan=False)


def test_regions_summary_says_plainly_what_was_found() -> None:
    sig = Region(1, 2, 3, 4, 12, 0.5, 20.0, 9.0, significance=20.0)
    plain = Region(1, 2, 3, 4, 12, 0.5, 20.0, 9.0)
    assert regions_summary([]) == NO_DIFFERENCE == "no significant difference found"
    assert regions_summary([sig]) == "1 significant region"
    assert regions_summary([sig, sig]) == "2 significant regions"
    assert regions_summary([plain, plain, plain]) == "3 regions"  # percentile / Otsu / top-k
    # no region, yet everything differs (a replaced or blanked image): said, not hidden
    wide = "no local difference stands out, but the images differ image-wide (PSNR 8.5 dB)"
    assert regions_summary([], metrics={"psnr": 8.53, "mse": 0.14}) == wide
    assert regions_summary([], metrics={"mse": 0.1}).endswith("(PSNR 10.0 dB)")
    assert regions_summary([], metrics={"psnr": 35.0}) == NO_DIFFERENCE
    assert regions_summary([], metrics={"mse": 0.0}) == NO_DIFFERENCE
    assert regions_summary([sig], metrics={"psnr": 8.0}) == "1 significant region"


def test_an_unrelated_photo_is_not_called_no_difference() -> None:
    from skimage import data

    from core import Finder

    ref, other = data.astronaut()[:256, :256], data.coffee()[:256, :256]
    got = Finder().analyze(ref, other)[0]
    assert got.summary != NO_DIFFERENCE and "image-wide" in got.summary
    same = Finder().analyze(ref, ref.copy())[0]
    assert same.summary == NO_DIFFERENCE
