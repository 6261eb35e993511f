"""core.compare: one reference, several candidates, one scale, standard scores and
improvement maps, cross-checked against scikit-image, pytorch_msssim and lpips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from core import InputError, ShapeMismatchError
from core.compare import DEFAULT_TOLERANCE, compare, pair_scores

SQUARE = (slice(160, 192), slice(176, 208))  # rows, cols of the edit in "ours"
# The pipeline whose maps scikit-image can check: the raw SSIM map (1 - SSIM), no smoothing.
SSIM_MAP = {"strategy": "map", "metric": "ssim", "post_processor": "identity"}


def degraded(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, ours): the baseline is noisy everywhere; ours has the same noise on the
    left half only, a clean right half, and one brightened square there (worse)."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 12.0, ref.shape)
    base = ref + noise
    ours = ref.astype(np.float64).copy()
    ours[:, : ref.shape[1] // 2] += noise[:, : ref.shape[1] // 2]
    ours[SQUARE] += 50.0
    as8 = lambda a: np.clip(a, 0, 255).round().astype(np.uint8)  # noqa: E731
    return as8(base), as8(ours)


@pytest.fixture(scope="module")
def photos(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = np.ascontiguousarray(astronaut[::2, ::2])  # 256 x 256: big enough for MS-SSIM
    return (ref, *degraded(ref))


@pytest.fixture(scope="module")
def small(photos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """128 px versions, for tests that need no MS-SSIM (it needs more than 160 px)."""
    return tuple(np.ascontiguousarray(a[::2, ::2]) for a in photos)


@pytest.fixture(scope="module")
def result(photos):
    ref, base, ours = photos
    return compare(ref, [base, ours], labels=["baseline", "ours"], baseline="baseline",
                   config=SSIM_MAP, device="cpu")


def skimage_ssim_map(ref: np.ndarray, cand: np.ndarray) -> tuple[float, np.ndarray]:
    """scikit-image's SSIM (Wang et al.'s Gaussian window) and the map 1 - SSIM, channel mean."""
    mean, full = structural_similarity(
        ref / 255.0, cand / 255.0, data_range=1.0, channel_axis=-1, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, full=True)
    return mean, (1.0 - full).mean(axis=-1)


def test_candidates_in_request_order_with_standard_scores(photos, result) -> None:
    ref, base, ours = photos
    assert result.labels == ["baseline", "ours"]
    for cand, got in zip((base, ours), result.candidates, strict=True):
        assert got.map.shape == ref.shape[:2]
        assert got.metrics["psnr"] == pytest.approx(
            peak_signal_noise_ratio(ref, cand, data_range=255), abs=1e-3)
        mean, _ = skimage_ssim_map(ref, cand)
        assert got.metrics["ssim"] == pytest.approx(mean, abs=1e-4)
        assert 0 < got.metrics["ms-ssim"] <= 1
        np.testing.assert_array_equal(got.image, cand)  # the display copy is the input
    np.testing.assert_array_equal(result.reference, ref)
    assert result.metric_key == "ssim"  # the pipeline's metric is the standard SSIM
    # "ours" is measurably better by every score
    b, o = (c.metrics for c in result.candidates)
    assert o["psnr"] > b["psnr"] + 1 and o["ssim"] > b["ssim"] and o["ms-ssim"] > b["ms-ssim"]
    lpips = {"lpips": False} if "lpips" in b else {}  # present when a test set up weights
    assert result.higher_is_better == {"psnr": True, "ssim": True, "ms-ssim": True, **lpips}


def test_ms_ssim_matches_pytorch_msssim(photos, result) -> None:
    from pytorch_msssim import ms_ssim

    ref, _, ours = photos
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    expected = ms_ssim(t(ref), t(ours), data_range=1.0).item()
    assert result.candidate("ours").metrics["ms-ssim"] == pytest.approx(expected, abs=1e-5)


def test_maps_are_skimage_ssim_maps(photos, result) -> None:
    ref, base, ours = photos
    for cand, got in zip((base, ours), result.candidates, strict=True):
        _, expected = skimage_ssim_map(ref, cand)
        assert np.abs(got.map - expected).mean() < 5e-5
        np.testing.assert_allclose(got.map, expected, atol=5e-4)


def test_shared_scale_covers_every_map(result) -> None:
    vmin, vmax = result.scale
    everything = np.concatenate([c.map.ravel() for c in result.candidates])
    assert (vmin, vmax) == pytest.approx((everything.min(), everything.max()))
    # one map holds the maximum and the other stays below it: the scale is not per map
    peaks = sorted(float(c.map.max()) for c in result.candidates)
    assert peaks[-1] == pytest.approx(vmax) and peaks[0] < vmax - 0.02
    for c in result.candidates:
        assert vmin <= c.map.min() and c.map.max() <= vmax


def test_shared_scale_follows_render_options(small) -> None:
    ref, base, ours = small
    got = compare(ref, [base, ours], config={"render": {"percentile": 95}}, device="cpu")
    everything = np.concatenate([c.map.ravel() for c in got.candidates])
    assert got.scale == pytest.approx((everything.min(), np.percentile(everything, 95)))
    fixed = compare(ref, [base, ours], config={"render": {"vmin": 0, "vmax": 0.5}},
                    device="cpu")
    assert fixed.scale == (0.0, 0.5)


def test_improvement_sign_and_fractions(photos, result) -> None:
    ref, base, ours = photos
    (gain,) = result.improvement
    assert gain.label == "ours" and result.baseline == "baseline"
    # independent: scikit-image maps, the documented tolerance, the fractions
    _, base_map = skimage_ssim_map(ref, base)
    _, ours_map = skimage_ssim_map(ref, ours)
    expected = base_map - ours_map
    np.testing.assert_allclose(gain.map, expected, atol=1e-3)
    tol = DEFAULT_TOLERANCE * np.percentile(np.concatenate([base_map.ravel(),
                                                            ours_map.ravel()]), 99)
    assert result.tolerance == pytest.approx(tol, rel=1e-3)
    assert gain.improved_fraction == pytest.approx(np.mean(expected > tol), abs=2e-3)
    assert gain.worsened_fraction == pytest.approx(np.mean(expected < -tol), abs=2e-3)
    # where: equal on the left half (same noise), better on the clean right half, worse
    # at the brightened square; SSIM's 11-px window blurs 5 px around each edge
    left = gain.map[:, : 128 - 6]
    assert np.abs(left).max() < 1e-5
    right = (slice(None), slice(128 + 6, None))
    near_square = np.zeros(gain.map.shape, bool)
    near_square[SQUARE[0].start - 6 : SQUARE[0].stop + 6,
                SQUARE[1].start - 6 : SQUARE[1].stop + 6] = True
    # wherever the baseline leaves something to improve (its map above 2 x tolerance;
    # very dark flat areas are near-perfect for SSIM even with noise), ours is better
    room = (result.candidate("baseline").map > 2 * result.tolerance) & ~near_square
    assert room[right].mean() > 0.8
    assert (gain.map[right][room[right]] > result.tolerance).all()
    assert (gain.map[166:186, 182:202] < -result.tolerance).all()
    assert 0.40 < gain.improved_fraction < 0.50  # right half minus the square
    assert 0.01 < gain.worsened_fraction < 0.03  # about the square (32 x 32 + rim)
    lo, hi = result.improvement_scale
    assert lo == -hi and hi == pytest.approx(np.abs(gain.map).max())


def test_improvement_over_a_worse_baseline_is_mostly_positive_and_reverses(photos) -> None:
    ref, base, ours = photos
    # the improvement of raw difference maps (a calibrated map rescales each pair on its own)
    raw = {"strategy": "difference", "post_processor": [{"name": "smooth", "sigma": 2.0}]}
    got = compare(ref, [ours, base], labels=["ours", "noisy"], baseline="ours", device="cpu",
                  config=raw)
    (gain,) = got.improvement
    assert gain.label == "noisy"
    assert gain.worsened_fraction > 0.4 and gain.improved_fraction < 0.03


def test_scores_for_other_pipelines(small) -> None:
    ref, base, _ = small
    got = compare(ref, [base], config={"metric": {"name": "ssim", "win_size": 7, "sigma": 0.8},
                                       "strategy": "map"}, device="cpu")
    c = got.candidates[0]
    assert got.metric_key == "pipeline:ssim"
    # scikit-image's Gaussian window has radius int(3.5 * sigma + 0.5) = 3: 7 taps
    expected = structural_similarity(ref / 255.0, base / 255.0, data_range=1.0,
                                     channel_axis=-1, gaussian_weights=True, sigma=0.8,
                                     use_sample_covariance=False)
    assert c.metrics["pipeline:ssim"] == pytest.approx(expected, abs=1e-4)
    assert c.metrics["pipeline:ssim"] != c.metrics["ssim"]
    mse = compare(ref, [base], config={"metric": "mse", "strategy": "difference"},
                  device="cpu")
    assert mse.metric_key == "mse"
    assert mse.candidates[0].metrics["mse"] == pytest.approx(
        np.mean((ref / 255.0 - base / 255.0) ** 2), rel=1e-4)
    assert mse.higher_is_better["mse"] is False


def test_ms_ssim_is_omitted_with_a_reason_on_small_images(photos) -> None:
    ref, base, ours = (a[:96, :120] for a in photos)
    got = compare(ref, [base, ours], device="cpu")
    for c in got.candidates:
        assert "ms-ssim" not in c.metrics
        assert "MS-SSIM" in c.skipped["ms-ssim"] and "120x96" in c.skipped["ms-ssim"]
        assert {"psnr", "ssim"} <= c.metrics.keys()


def test_lpips_reported_when_weights_are_present(lpips_home, small) -> None:
    import lpips

    ref, base, _ = small
    got = compare(ref, [base], device="cpu").candidates[0]
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1  # noqa: E731
    model = lpips.LPIPS(net="alex", verbose=False).eval()
    with torch.no_grad():
        expected = model(t(ref), t(base)).item()
    assert got.metrics["lpips"] == pytest.approx(expected, rel=1e-4)
    assert "lpips" not in got.skipped


def test_lpips_omitted_with_the_missing_file_named(empty_torch_home, small) -> None:
    ref, base, _ = small
    scores, skipped = pair_scores(*(torch.from_numpy(a).permute(2, 0, 1)[None] / 255.0
                                    for a in (ref, base)))
    assert "lpips" not in scores
    assert "alexnet-owt-7be5be79.pth" in skipped["lpips"]
    assert "weights fetch" in skipped["lpips"]


def test_identical_candidate_has_infinite_psnr_and_a_zero_map(small) -> None:
    ref = small[0]
    got = compare(ref, [ref.copy()], device="cpu").candidates[0]
    assert got.metrics["psnr"] == float("inf")
    assert got.metrics["ssim"] == pytest.approx(1.0)
    assert np.abs(got.map).max() < 1e-5 and got.regions == []


def test_labels_default_to_file_names(tmp_path: Path, small) -> None:
    ref, base, ours = small
    paths = []
    for name, img in (("ref", ref), ("noisy", base), ("method", ours)):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    got = compare(paths[0], paths[1:], device="cpu")
    assert got.labels == ["noisy", "method"]
    arrays = compare(ref, [base, ours], device="cpu")
    assert arrays.labels == ["candidate 1", "candidate 2"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": ["a"]}, "1 label(s) given for 2 candidate(s)"),
    ({"labels": ["a", "a"]}, "repeated: a"),
    ({"labels": ["a", " "]}, "must not be empty"),
    ({"labels": ["a", "b"], "baseline": "c"}, "baseline 'c' is not one of the labels: a, b"),
    ({"tolerance": 1.5}, "tolerance"),
])
def test_bad_arguments_are_input_errors(small, kwargs, message) -> None:
    ref, base, ours = small
    with pytest.raises(InputError, match=re.escape(message)):
        compare(ref, [base, ours], device="cpu", **kwargs)


def test_no_candidates_and_lonely_baseline_are_errors(small) -> None:
    ref, base, _ = small
    with pytest.raises(InputError, match="at least one candidate"):
        compare(ref, [], device="cpu")
    with pytest.raises(InputError, match="at least one other candidate"):
        compare(ref, [base], labels=["b"], baseline="b", device="cpu")


def test_size_mismatch_is_named_unless_a_policy_is_set(small) -> None:
    ref, base, ours = small
    with pytest.raises(ShapeMismatchError, match=r"^candidate 2: image sizes differ: "
                       r"reference is 128x128, candidate is 100x128"):
        compare(ref, [base, ours[:, :100]], device="cpu")
    got = compare(ref, [base, ours[:, :100]], config={"size_policy": "resize"}, device="cpu")
    assert all(c.map.shape == (128, 128) for c in got.candidates)


def test_summary_is_json_without_infinities(small) -> None:
    ref, base, _ = small
    got = compare(ref, [base, ref.copy()], labels=["noisy", "same"], baseline="noisy",
                  device="cpu")
    text = json.dumps(got.summary(), allow_nan=False)
    data = json.loads(text)
    assert data["candidates"][1]["metrics"]["psnr"] is None
    assert data["improvement"][0]["label"] == "same"
    assert data["config"]["metric"]["name"] == "ssim"


def test_a_tiny_pair_skips_the_scores_it_is_too_small_for_and_still_draws() -> None:
    """8x8 images with the defaults: SSIM (the default pipeline's score beside its
    metric-free map) is skipped like MS-SSIM, not an error, and the figure draws."""
    from core.figure import figure_bytes

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[2:5, 2:5] = 255 - b[2:5, 2:5]
    got = compare(a, [b])
    cand = got.candidates[0]
    assert "psnr" in cand.metrics and "ssim" not in cand.metrics
    assert "win_size 11" in cand.skipped["ssim"] and "ms-ssim" in cand.skipped
    png = figure_bytes(got)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match="win_size 11"):  # a map made by SSIM cannot skip it
        compare(a, [b], config={"strategy": "map", "metric": "ssim"})
