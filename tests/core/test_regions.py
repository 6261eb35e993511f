"""core.regions: the ranked list of spots of a map."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from core import Finder, Region, RegionsConfig, find_regions
from tests.conftest import distort


def spots_map() -> np.ndarray:
    """A 100x120 map with four blobs of known box, area and mass."""
    m = np.zeros((100, 120), dtype=np.float32)
    m[10:20, 5:25] = 0.5   # A: 10x20 = 200 px, mass 100
    m[60:90, 70:80] = 1.0  # B: 30x10 = 300 px, mass 300
    m[40:44, 40:43] = 3.0  # C: 4x3 = 12 px, mass 36 (small)
    m[5:15, 100:110] = 0.8  # D: 10x10 = 100 px, mass 80
    m[12, 8] = 2.0  # A's peak (mass 101.5)
    return m


def test_regions_boxes_areas_scores_and_order() -> None:
    m = spots_map()
    regions = find_regions(m, RegionsConfig(threshold="value", value=0.1, min_area=1))
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [
        (70, 60, 10, 30, 300), (5, 10, 20, 10, 200), (100, 5, 10, 10, 100), (40, 40, 3, 4, 12)]
    total = float(m.sum())
    assert [r.score for r in regions] == pytest.approx([300 / total, 101.5 / total,
                                                        80 / total, 36 / total])
    assert [r.peak for r in regions] == pytest.approx([1.0, 2.0, 0.8, 3.0])
    assert [r.mean for r in regions] == pytest.approx([1.0, 101.5 / 200, 0.8, 3.0])
    assert all(isinstance(r, Region) for r in regions)
    assert regions[0].to_dict() == {"x": 70, "y": 60, "width": 10, "height": 30, "area": 300,
                                    "score": pytest.approx(300 / total), "peak": 1.0,
                                    "mean": 1.0, "significance": None}


def test_regions_min_area_and_max_regions() -> None:
    m = spots_map()
    big = find_regions(m, RegionsConfig(threshold="value", value=0.1, min_area=150))
    assert [r.area for r in big] == [300, 200]
    top = find_regions(m, RegionsConfig(threshold="value", value=0.1, min_area=1, max_regions=3))
    assert [r.area for r in top] == [300, 200, 100]
    assert find_regions(m, RegionsConfig(max_regions=0)) == []


def test_regions_thresholds_and_connectivity() -> None:
    m = spots_map()
    high = find_regions(m, RegionsConfig(threshold="value", value=0.9, min_area=1))
    assert sorted(r.area for r in high) == [1, 12, 300]  # only B, C and A's peak
    pct = find_regions(m, RegionsConfig(threshold="percentile", percentile=95.0, min_area=1))
    # 95th percentile of this map is 0.5 (A's value): A drops out, B, C, D and A's peak stay.
    assert float(np.percentile(m, 95.0)) == pytest.approx(0.5)
    assert sorted(r.area for r in pct) == [1, 12, 100, 300]
    otsu = find_regions(m, RegionsConfig(threshold="otsu", min_area=1))
    assert {r.area for r in otsu} >= {300, 12}
    touching = np.zeros((20, 20), dtype=np.float32)
    touching[2:6, 2:6] = touching[6:10, 6:10] = 1.0  # two squares meeting at a corner
    cfg = {"threshold": "value", "value": 0.5, "min_area": 1}
    assert len(find_regions(touching, RegionsConfig(**cfg, connectivity=8))) == 1
    assert len(find_regions(touching, RegionsConfig(**cfg, connectivity=4))) == 2


def test_regions_of_channel_signed_and_empty_maps() -> None:
    m = spots_map()
    stacked = np.stack([m * 0.5, m, np.zeros_like(m)])  # (C, H, W) uses the channel max
    cfg = RegionsConfig(threshold="value", value=0.1, min_area=1)
    assert find_regions(stacked, cfg) == find_regions(m, cfg)
    assert find_regions(-m, cfg) == find_regions(m, cfg)  # signed maps: by magnitude
    assert find_regions(np.zeros((30, 30)), cfg) == []
    flat = np.full((30, 30), 0.5)  # nothing stands out, whatever the threshold
    assert find_regions(flat, RegionsConfig()) == []
    assert find_regions(flat, RegionsConfig(threshold="otsu")) == []


def test_regions_config_validation() -> None:
    for bad in ({"max_regions": -1}, {"min_area": 0}, {"connectivity": 6},
                {"threshold": "mean"}, {"percentile": 100.0}, {"value": float("inf")},
                {"extra": 1}):
        with pytest.raises(ValidationError):
            RegionsConfig(**bad)


def test_regions_land_on_the_edits(astronaut) -> None:
    """On a real photo with faint noise, the strongest spots are the two edits."""
    cand = distort(astronaut, seed=8, noise=6.0)
    finder = Finder(strategy="difference", post_processor={"name": "smooth", "sigma": 2.0})
    result = finder.analyze(astronaut, cand)[0]
    assert 1 <= len(result.regions) <= 10
    edits = [(128, 128, 24), (256, 256, 32)]  # (x, y, side) of the two edits

    def hits(r: Region, edit: tuple[int, int, int]) -> bool:
        x, y, s = edit
        return r.x < x + s and x < r.x + r.width and r.y < y + s and y < r.y + r.height

    top_two = result.regions[:2]
    assert all(any(hits(r, e) for e in edits) for r in top_two)
    assert all(any(hits(r, e) for r in top_two) for e in edits)
    scores = [r.score for r in result.regions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
