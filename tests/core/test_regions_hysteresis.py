"""Hysteresis regions: a spot needs a core above ``high`` and extends over ``low``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from core.regions import RegionsConfig, find_regions, hysteresis_components, region_mask


def _bump(shape: tuple[int, int], cy: float, cx: float, sigma: float, peak: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _cfg(**kw) -> RegionsConfig:
    return RegionsConfig(threshold="hysteresis", **{"high": 6.0, "low": 3.0, **kw})


def test_only_spots_with_a_core_above_high_are_reported() -> None:
    m = _bump((80, 120), 20, 30, 5, 9.0) + _bump((80, 120), 55, 90, 6, 4.5)  # strong, weak
    regions = find_regions(m, _cfg())
    assert len(regions) == 1
    r = regions[0]
    assert r.x <= 30 < r.x + r.width and r.y <= 20 < r.y + r.height
    assert r.significance == pytest.approx(m.max(), rel=1e-6)
    assert r.peak == pytest.approx(r.significance)
    # the weak spot is found once high is below its peak
    assert len(find_regions(m, _cfg(high=4.0))) == 2


def test_region_extends_over_low_exactly_like_scipy_labels() -> None:
    m = _bump((64, 64), 30, 30, 6, 8.0)
    mask = region_mask(m, _cfg())
    labels, n = ndimage.label(m > 3.0, structure=np.ones((3, 3), bool))
    assert n == 1
    np.testing.assert_array_equal(mask, labels == 1)
    (r,) = find_regions(m, _cfg())
    assert r.area == int((m > 3.0).sum())


def test_strongest_core_first_and_max_regions() -> None:
    m = sum(_bump((60, 200), 30, 25 + 50 * i, 4, p) for i, p in enumerate((7.0, 12.0, 9.0, 8.0)))
    regions = find_regions(m, _cfg())
    sig = [r.significance for r in regions]
    assert sig == sorted(sig, reverse=True) and len(regions) == 4
    assert regions[0].x <= 75 < regions[0].x + regions[0].width
    assert len(find_regions(m, _cfg(max_regions=2))) == 2


def test_nothing_significant_gives_no_regions() -> None:
    rng = np.random.default_rng(0)
    assert find_regions(np.zeros((40, 50), np.float32), _cfg()) == []
    assert find_regions(np.abs(rng.normal(0, 1, (64, 64))).astype(np.float32) * 0.5, _cfg()) == []
    assert not region_mask(np.zeros((10, 10)), _cfg()).any()


def test_min_area_drops_tiny_cores() -> None:
    m = np.zeros((30, 30), np.float32)
    m[10:12, 10:12] = 10.0  # 4 pixels
    assert find_regions(m, _cfg(min_area=16)) == []
    assert len(find_regions(m, _cfg(min_area=1))) == 1


def test_relative_cut_splits_a_strong_spot_from_a_faint_bridge() -> None:
    m = _bump((60, 120), 30, 30, 4, 20.0) + _bump((60, 120), 30, 80, 4, 20.0)
    m[28:33, 30:80] = np.maximum(m[28:33, 30:80], 4.0)  # a faint bridge above low
    assert len(find_regions(m, _cfg(relative=0.0))) == 1
    assert len(find_regions(m, _cfg(relative=0.4))) == 2
    labels, n = hysteresis_components(m, 3.0, 8, 0.4)
    assert n == 2 and labels.max() == 2


def test_a_spot_whose_strength_varies_inside_it_stays_one_region() -> None:
    """A 40x40 edit, strong in its upper half and ten times weaker in a band across it: the
    relative cut leaves pieces, which are one spot again (their boxes are close); without
    the merge they would be reported as three."""
    m = np.zeros((100, 100), np.float32)
    m[30:70, 30:70] = 200.0
    m[45:52, 30:70] = 30.0  # below 0.2 x 200 = 40: cut, splitting the edit in two
    m[60:64, 30:70] = 20.0  # and again
    regions = find_regions(m, _cfg())
    assert len(regions) == 1
    r = regions[0]
    assert (r.x, r.y, r.width, r.height) == (30, 30, 40, 40)
    assert len(find_regions(m, _cfg(merge=0.0))) == 3
    labels, n = hysteresis_components(m, 3.0, 8, 0.2, merge=1.0)
    assert n == 1 and set(np.unique(labels)) == {0, 1}


def test_a_large_spot_does_not_swallow_a_small_one_beside_it() -> None:
    """A 100x100 edit and a 20x20 one 60 px away, joined by a faint halo above ``low``: the
    relative cut parts them and the merge keeps them two (it grows both boxes by the smaller
    piece's size; grown by its own, the large box reached the small one)."""
    m = np.full((200, 260), 5.0, np.float32)  # the halo: above low (4), under 0.2 x peak
    m[50:150, 20:120] = 200.0
    m[90:110, 180:200] = 100.0
    regions = find_regions(m, RegionsConfig())
    assert sorted((r.x, r.y, r.width, r.height) for r in regions) == [
        (20, 50, 100, 100), (180, 90, 20, 20)]


def test_other_thresholds_keep_working_without_significance() -> None:
    m = _bump((64, 64), 30, 30, 6, 8.0)
    for cfg in (RegionsConfig(threshold="percentile"), RegionsConfig(threshold="otsu"),
                RegionsConfig(threshold="value", value=1.0)):
        regions = find_regions(m, cfg)
        assert regions and all(r.significance is None for r in regions)
        assert "significance" in regions[0].to_dict()


def test_confidence_follows_significance_and_falls_back_to_score() -> None:
    from core.regions import Region, RegionsConfig, confidence

    cfg = RegionsConfig()
    at_core = Region(0, 0, 4, 4, 16, 0.01, cfg.high, 6.0, significance=cfg.high)
    strong = Region(0, 0, 4, 4, 16, 0.01, 3 * cfg.high, 6.0, significance=3 * cfg.high)
    assert confidence(at_core, cfg) == 0.5 and confidence(strong, cfg) == 0.75
    plain = Region(0, 0, 4, 4, 16, 0.3, 2.0, 1.0)  # a percentile region: its share
    assert confidence(plain, cfg) == 0.3


def _reference_regions(m: np.ndarray, cfg: RegionsConfig) -> tuple[list[tuple], np.ndarray]:
    """The hysteresis rule written plainly on the whole map (scipy.ndimage for components
    and statistics, scipy.sparse for the merge graph): the oracle for find_regions' crops."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    st = ndimage.generate_binary_structure(2, 2 if cfg.connectivity == 8 else 1)
    parents, n = ndimage.label(m > cfg.low, structure=st)
    idx = np.arange(1, n + 1)
    if n and cfg.relative > 0:
        peak = np.asarray(ndimage.maximum(m, parents, idx), dtype=np.float64)
        if (cfg.relative * peak > cfg.low).any():
            cut = np.concatenate([[np.inf], np.maximum(cfg.low, cfg.relative * peak)])
            labels, n = ndimage.label(m > cut.astype(np.float32)[parents], structure=st)
            if cfg.merge > 0 and n > 1:
                boxes = ndimage.find_objects(labels)
                owner = [int(parents[b][labels[b] == i + 1][0]) for i, b in enumerate(boxes)]
                side = [max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes]
                rows, cols = [], []
                for i in range(n):
                    for j in range(i + 1, n):
                        if owner[i] != owner[j]:
                            continue
                        bi, bj = boxes[i], boxes[j]
                        gap = max(bj[0].start - bi[0].stop, bi[0].start - bj[0].stop,
                                  bj[1].start - bi[1].stop, bi[1].start - bj[1].stop)
                        if gap < 2 * np.ceil(cfg.merge * min(side[i], side[j])):
                            rows.append(i)
                            cols.append(j)
                graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
                n, groups = connected_components(graph, directed=False)
                labels = np.concatenate([[0], groups + 1])[labels]
            parents = labels
    labels, idx = parents, np.arange(1, n + 1)
    if not n:
        return [], np.zeros(m.shape, bool)
    area = np.asarray(ndimage.sum(np.ones_like(m), labels, idx))
    mass = np.asarray(ndimage.sum(m.astype(np.float64), labels, idx))
    peak = np.asarray(ndimage.maximum(m, labels, idx), dtype=np.float64)
    keep = np.flatnonzero((area >= cfg.min_area) & (peak > cfg.high))
    keep = keep[np.argsort(-peak[keep], kind="stable")][: cfg.max_regions]
    boxes = ndimage.find_objects(labels)
    out = [(boxes[k][1].start, boxes[k][0].start, boxes[k][1].stop - boxes[k][1].start,
            boxes[k][0].stop - boxes[k][0].start, int(area[k]), float(peak[k]),
            float(mass[k] / m.sum(dtype=np.float64))) for k in keep]
    return out, np.isin(labels, keep + 1)


@pytest.mark.parametrize("shape", [(96, 128), (101, 133)])  # whole blocks, and cut ones
@pytest.mark.parametrize("seed", range(6))
def test_regions_worked_out_per_component_equal_the_whole_map_rule(
        seed: int, shape: tuple[int, int]) -> None:
    """Components found through blocks and cut per component: exactly the rule applied to
    the whole map at once with scipy alone."""
    rng = np.random.default_rng(seed)
    h, w = shape
    m = np.abs(ndimage.gaussian_filter(rng.normal(0, 6, shape), 1.5))  # faint blobs everywhere
    for _ in range(8):  # spots of every strength, some touching, some with holes or plateaus
        m += _bump(shape, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 10),
                   rng.uniform(2, 40))
    m[rng.integers(0, h), :] += rng.uniform(0, 10)  # a line across: long thin components
    m[rng.integers(0, h), rng.integers(0, w)] = 25.0  # a lone core pixel: its own block group
    m[h - 1, w - 1] = 20.0  # a core in the last, cut block
    m = np.minimum(m, 30.0).astype(np.float32)  # saturated plateaus: ties of peaks
    configs = [_cfg(), _cfg(relative=0.2, merge=1.0), _cfg(relative=0.5, merge=0.0),
               _cfg(relative=0.3, merge=2.0, connectivity=4), _cfg(high=2.0, low=4.0),
               _cfg(relative=0.2, merge=1.0, min_area=1, max_regions=1000)]
    for cfg in configs:
        expected, mask = _reference_regions(m, cfg)
        got = [(r.x, r.y, r.width, r.height, r.area, r.peak, r.score)
               for r in find_regions(m, cfg)]
        assert [g[:5] for g in got] == [e[:5] for e in expected], cfg
        np.testing.assert_allclose([g[5:] for g in got], [e[5:] for e in expected], rtol=1e-5)
        np.testing.assert_array_equal(region_mask(m, cfg), mask)


def test_a_diagonal_chain_across_block_corners_is_one_region() -> None:
    """Pixels touching only at corners, where blocks meet only at corners: one component
    with 8-connectivity, two with 4, as on the whole map."""
    m = np.zeros((32, 32), np.float32)
    for i in range(4, 13):  # crosses the corner of the 8x8 blocks at (8, 8)
        m[i, i] = 20.0
    assert len(find_regions(m, _cfg(min_area=1))) == 1
    assert len(find_regions(m, _cfg(min_area=1, connectivity=4))) == 9


def test_a_nan_beside_a_spot_does_not_hide_it() -> None:
    """A NaN wins its block's maximum: the block is still looked into, and the spot found."""
    m = np.zeros((64, 64), np.float32)
    m[20:30, 20:30] = 20.0
    m[21, 21] = np.nan
    regions = find_regions(m, _cfg(relative=0.0, merge=0.0))
    assert [(r.x, r.y, r.width, r.height) for r in regions] == [(20, 20, 10, 10)]


def test_a_read_only_map_gives_the_same_regions() -> None:
    m = np.zeros((40, 48), np.float32)
    m[5:15, 30:40] = 20.0
    frozen = m.copy()
    frozen.flags.writeable = False
    assert find_regions(frozen, _cfg()) == find_regions(m, _cfg())
