"""The quality benchmark's dataset and scores: each edit's truth is exactly the pixels it changed,
edits do what their kind says, the tuning/held-out split is disjoint, nuisance-only pairs have
no truth, the dataset is deterministic, and AP / region matching follow their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.edits import (
    EDIT_KINDS,
    HELDOUT_PHOTOS,
    PHOTOS,
    SIZE_RANGE,
    TRUTH_EPS,
    TUNING_PHOTOS,
    apply_edits,
    load_photo,
    make_pairs,
    rng_for,
)
from benchmarks.nuisances import FAMILIES, HELDOUT_FAMILIES, NUISANCES, TUNING_FAMILIES
from benchmarks.quality import average_precision, iou, match, overlap, strongest_spots

IMAGES = ("astronaut", "camera")  # one colour, one grayscale photo
ALL = [fam[0] for fam in FAMILIES.values()]  # every family at its mildest strength


@pytest.fixture(scope="module")
def pairs():
    return list(make_pairs(IMAGES, ALL, size=512, seed=0))


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


def test_truth_is_exactly_the_pixels_the_edits_changed(pairs):
    for p in (q for q in pairs if q.edits):
        np.testing.assert_array_equal(p.truth, _diff(p.edited, p.reference) > TRUTH_EPS)
        union = np.zeros_like(p.truth)
        for e in p.edits:
            assert e.mask.sum() >= 8, e.kind
            assert not (union & e.mask).any(), "edits overlap"
            union |= e.mask
        np.testing.assert_array_equal(union, p.truth)


def test_edit_boxes_are_tight_small_and_inside_the_image(pairs):
    for p in (q for q in pairs if q.edits):
        h, w = p.truth.shape
        for e in p.edits:
            x, y, bw, bh = e.box
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            assert max(bw, bh) <= SIZE_RANGE[1]
            ys, xs = np.nonzero(e.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + bw, y + bh)
            assert 0.0 <= e.strength <= 1.0
        boxes = p.box_truth
        assert boxes[p.truth].all() and boxes.sum() >= p.truth.sum()


def test_edits_are_of_different_kinds_and_colour_kinds_only_on_colour(pairs):
    for p in (q for q in pairs if q.edits):
        kinds = [e.kind for e in p.edits]
        assert set(kinds) <= set(EDIT_KINDS)
        assert len(set(kinds)) >= 5
        assert kinds.count("swap") in (0, 2)
        assert p.truth.mean() < 0.1
        if p.reference.shape[-1] == 1:
            assert not {"hue", "tint"} & set(kinds)


def _edit_of(kind: str, name: str = "astronaut", tries: int = 40):
    """An edit of ``kind`` on a photo, with the reference and edited images."""
    ref = load_photo(name, 256)
    for i in range(tries):
        out, edits = apply_edits(ref, [kind], rng_for(i, name, kind))
        if edits:
            return ref, out, edits
    raise AssertionError(f"no {kind} edit placed")


def _box(img: np.ndarray, box) -> np.ndarray:
    x, y, w, h = box
    return img[y : y + h, x : x + w].astype(np.float64) / 255.0


def test_hue_edit_keeps_luma_and_changes_colour():
    ref, out, (e,) = _edit_of("hue")
    weights = np.array([0.299, 0.587, 0.114])
    a, b = _box(ref, e.box), _box(out, e.box)
    luma_change = np.abs((b - a) @ weights)
    assert np.median(luma_change) < 1.5 / 255  # rounding only, clipping aside
    assert np.abs(b - a).max(axis=-1).max() > 4 / 255


def test_brightness_edit_moves_luma_one_way():
    ref, out, (e,) = _edit_of("brightness")
    d = (_box(out, e.box) - _box(ref, e.box)).mean(axis=-1)[_box(e.mask[..., None] * 255,
                                                                  e.box)[..., 0] > 0]
    assert (d > 0).all() or (d < 0).all()


def _at(img: np.ndarray, box) -> np.ndarray:
    x, y, w, h = box
    return img[y : y + h, x : x + w]


def test_edits_change_nothing_outside_their_placement_box(pairs):
    for p in (q for q in pairs if q.edits):
        inside = np.zeros_like(p.truth)
        for e in p.edits:
            x, y, w, h = e.placed
            own = np.zeros_like(p.truth)
            own[y : y + h, x : x + w] = True
            assert own[e.mask].all(), e.kind  # its truth lies in its own box
            inside |= own
        assert not _diff(p.edited, p.reference)[~inside].any()


def test_swap_exchanges_two_patches():
    ref, out, edits = _edit_of("swap")
    assert len(edits) == 2 and edits[0].placed[2:] == edits[1].placed[2:]
    a, b = edits[0].placed, edits[1].placed
    np.testing.assert_array_equal(_at(out, a), _at(ref, b))
    np.testing.assert_array_equal(_at(out, b), _at(ref, a))


def test_mirror_flips_the_patch_in_place():
    ref, out, (e,) = _edit_of("mirror")
    a, b = _at(ref, e.placed), _at(out, e.placed)
    assert not np.array_equal(a, b)
    assert np.array_equal(b, a[:, ::-1]) or np.array_equal(b, a[::-1])


def test_blur_and_remove_take_detail_away():
    for kind in ("blur", "remove"):
        ref, out, (e,) = _edit_of(kind)
        a, b = _box(ref, e.box), _box(out, e.box)
        grad = lambda x: np.abs(np.diff(x.mean(axis=-1), axis=0)).mean()  # noqa: E731
        assert grad(b) < grad(a), kind


def test_split_is_disjoint_and_as_issue_11_fixes_it():
    assert not set(TUNING_PHOTOS) & set(HELDOUT_PHOTOS)
    assert set(TUNING_PHOTOS) | set(HELDOUT_PHOTOS) == set(PHOTOS)
    assert {"astronaut", "coffee", "camera", "immunohistochemistry"} <= set(TUNING_PHOTOS)
    assert {"chelsea", "rocket", "hubble_deep_field", "coins"} <= set(HELDOUT_PHOTOS)
    assert not set(TUNING_FAMILIES) & set(HELDOUT_FAMILIES)
    assert set(TUNING_FAMILIES) | set(HELDOUT_FAMILIES) == set(FAMILIES)
    assert set(TUNING_FAMILIES) == {"jpeg", "bicubic", "nearest", "bilateral", "tv", "blur"}
    assert {"webp", "lanczos", "wavelet", "nlmeans", "noise"} <= set(HELDOUT_FAMILIES)
    for fam in FAMILIES.values():
        assert len(fam) >= 2  # several strengths


def test_nuisance_only_pairs_have_empty_truth_and_every_nuisance_acts(pairs):
    seen = set()
    for p in pairs:
        assert p.candidate.shape == p.reference.shape and p.candidate.dtype == np.uint8
        if p.edits:
            continue
        seen.add((p.image, p.nuisance))
        assert not p.truth.any() and not p.box_truth.any()
        np.testing.assert_array_equal(p.edited, p.reference)
        moved = _diff(p.candidate, p.reference) > 0
        assert moved.mean() > 0.05, p.nuisance  # the nuisance touches much of the image
    assert seen == {(i, n.name) for i in IMAGES for n in ALL}


def test_edits_are_shared_across_nuisances(pairs):
    for image in IMAGES:
        edited = [p for p in pairs if p.image == image and p.edits]
        for q in edited[1:]:
            np.testing.assert_array_equal(q.edited, edited[0].edited)


def test_dataset_is_deterministic_and_independent_of_order():
    nz = [NUISANCES["noise 0.02"], NUISANCES["webp q50"]]
    a = list(make_pairs(("camera",), nz, size=256, seed=3))
    b = list(make_pairs(("astronaut", "camera"), nz[::-1], size=256, seed=3))
    c = list(make_pairs(("camera",), nz, size=256, seed=4))
    same = [q for q in b if q.image == "camera" and q.nuisance == "noise 0.02"]
    np.testing.assert_array_equal(a[0].candidate, same[0].candidate)
    np.testing.assert_array_equal(a[1].candidate, same[1].candidate)
    assert [e.box for e in a[0].edits] == [e.box for e in same[0].edits]
    assert [e.box for e in a[0].edits] != [e.box for e in c[0].edits]


def _ap_by_rank(scores: np.ndarray, labels: np.ndarray) -> float:
    """Textbook AP for distinct scores: mean over positives of precision at their rank."""
    order = np.argsort(-scores)
    hits = labels[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def test_average_precision_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.permutation(200).astype(float)  # distinct
        labels = rng.random(200) < 0.2
        assert average_precision(scores, labels) == pytest.approx(_ap_by_rank(scores, labels))


def test_average_precision_known_values():
    # scikit-learn's documented example: average_precision_score -> 0.8333...
    assert average_precision(np.array([0.1, 0.4, 0.35, 0.8]),
                             np.array([0, 0, 1, 1], bool)) == pytest.approx(5 / 6)
    labels = np.array([1, 0, 1, 0, 0], bool)
    assert average_precision(np.array([5.0, 4, 3, 2, 1]), labels) == pytest.approx((1 + 2 / 3) / 2)
    # ties enter together: a constant map scores the positive share, whatever the order
    assert average_precision(np.zeros(5), labels) == pytest.approx(2 / 5)
    assert average_precision(np.zeros(5), labels[::-1]) == pytest.approx(2 / 5)
    assert np.isnan(average_precision(np.ones(3), np.zeros(3, bool)))


def test_region_matching():
    edits = [(10, 10, 10, 10), (40, 10, 10, 10)]
    assert iou((10, 10, 10, 10), (15, 10, 10, 10)) == pytest.approx(50 / 150)
    assert overlap((0, 0, 5, 5), (5, 0, 5, 5)) == 0  # touching is not overlapping
    found, recall, false = match([(12, 12, 10, 10), (100, 100, 5, 5)], edits)
    assert found == [True, False] and recall == [True, False] and false == 1
    found, recall, false = match([(0, 0, 100, 100)], edits)  # one huge box overlaps both...
    assert found == [True, True] and recall == [False, False] and false == 0  # ...IoU 0.01
    assert match([], edits) == ([False, False], [False, False], 0)


def test_strongest_spots_rank_by_mass_and_handle_ties():
    m = np.zeros((128, 128), np.float32)  # both spots within the top 2%
    m[5:10, 5:10] = 1.0  # 25 px
    m[30:40, 30:40] = 0.5  # 100 px: more mass
    spots = strongest_spots(m, 2)
    assert spots[0] == (30, 30, 10, 10) and spots[1] == (5, 5, 5, 5)
    mask = np.zeros((64, 64), np.float32)
    mask[:20, :20] = 1.0  # a 0/1 map whose top 2% are all ties
    assert strongest_spots(mask, 3) == [(0, 0, 20, 20)]
    assert strongest_spots(np.zeros((8, 8)), 3) == []
