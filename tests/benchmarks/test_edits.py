"""The quality benchmark's dataset and scores: ground truth is exactly the edited pixels, the
dataset is deterministic, and average precision / hit counting follow their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.edits import EDIT_KINDS, NUISANCES, make_dataset
from benchmarks.quality import average_precision, count_hits, iou

IMAGES = ("astronaut", "camera")  # one colour, one grayscale photo


@pytest.fixture(scope="module")
def pairs():
    return list(make_dataset(IMAGES, NUISANCES, size=256, seed=0))


def test_mask_is_exactly_the_pixels_the_edits_changed(pairs):
    for p in pairs:
        changed = (p.edited != p.reference).any(axis=-1)
        np.testing.assert_array_equal(p.mask, changed)
        union = np.zeros_like(p.mask)
        for e in p.edits:
            assert e.mask.any(), e.kind
            assert not (union & e.mask).any(), "edits overlap"
            union |= e.mask
        np.testing.assert_array_equal(union, p.mask)


def test_edit_boxes_are_tight_and_inside_the_image(pairs):
    for p in pairs:
        h, w = p.mask.shape
        for e in p.edits:
            x, y, bw, bh = e.box
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            ys, xs = np.nonzero(e.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + bw, y + bh)


def test_edits_are_small_and_of_different_kinds(pairs):
    for p in pairs:
        kinds = [e.kind for e in p.edits]
        assert len(kinds) == len(set(kinds)) >= 5
        assert set(kinds) <= set(EDIT_KINDS)
        assert p.mask.mean() < 0.1
        if p.reference.shape[-1] == 1:
            assert "colour" not in kinds


def test_nuisance_is_global_and_edits_are_shared_across_nuisances(pairs):
    by_image: dict[str, list] = {}
    for p in pairs:
        by_image.setdefault(p.image, []).append(p)
        assert p.candidate.shape == p.reference.shape and p.candidate.dtype == np.uint8
        outside = ~p.mask
        moved = (p.candidate != p.edited).any(axis=-1)
        assert moved[outside].mean() > 0.2, p.nuisance  # the nuisance touches the whole image
    for group in by_image.values():
        assert [q.nuisance for q in group] == list(NUISANCES)
        for q in group[1:]:
            np.testing.assert_array_equal(q.edited, group[0].edited)


def test_dataset_is_deterministic():
    a = next(make_dataset(("camera",), ("noise",), size=256, seed=3))
    b = next(make_dataset(("camera",), ("noise",), size=256, seed=3))
    c = next(make_dataset(("camera",), ("noise",), size=256, seed=4))
    np.testing.assert_array_equal(a.candidate, b.candidate)
    assert [e.box for e in a.edits] == [e.box for e in b.edits]
    assert [e.box for e in a.edits] != [e.box for e in c.edits]
    # a photo's pair does not depend on which other photos are asked for
    d = list(make_dataset(("astronaut", "camera"), ("blur", "noise"), size=256, seed=3))[-1]
    np.testing.assert_array_equal(a.candidate, d.candidate)


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
    assert average_precision(-np.array([5.0, 4, 3, 2, 1]), labels) == pytest.approx(
        (1 / 3 + 2 / 5) / 2)
    # ties enter together: a constant map scores the positive share, whatever the order
    assert average_precision(np.zeros(5), labels) == pytest.approx(2 / 5)
    assert average_precision(np.zeros(5), labels[::-1]) == pytest.approx(2 / 5)
    assert np.isnan(average_precision(np.ones(3), np.zeros(3, bool)))


def test_hits_need_overlap_and_count_each_region_once():
    edits = [(10, 10, 10, 10), (40, 10, 10, 10)]
    assert iou((10, 10, 10, 10), (15, 10, 10, 10)) == pytest.approx(50 / 150)
    assert count_hits([(12, 12, 10, 10)], edits) == [True, False]
    assert count_hits([(100, 100, 5, 5)], edits) == [False, False]
    assert count_hits([(0, 0, 100, 100)], edits) == [False, False]  # IoU 0.01: too loose
    assert count_hits([(10, 10, 10, 10), (10, 10, 10, 10)], edits) == [True, False]
    assert count_hits([(10, 10, 10, 10), (41, 11, 9, 9)], edits) == [True, True]
