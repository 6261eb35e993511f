"""core.numeric: the shared helpers against independent implementations (scipy.ndimage,
numpy, scikit-image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from core.numeric import (
    argsort_last,
    channel_plane,
    gaussian_blur,
    gaussian_window,
    label_components,
    quantile,
    radix_argsort,
    reduce_channels,
    stretch,
)

STRUCTURE = {4: None, 8: np.ones((3, 3), dtype=bool)}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images split the pixels into the same components."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.8])
def test_label_components_matches_scipy(connectivity: int, density: float) -> None:
    rng = np.random.default_rng(int(density * 100) + connectivity)
    for shape in [(1, 1), (1, 17), (23, 1), (31, 47), (64, 64)]:
        mask = rng.random(shape) < density
        labels, count = label_components(mask, connectivity)
        expected, n = ndimage.label(mask, structure=STRUCTURE[connectivity])
        assert count == n
        assert labels.shape == mask.shape and labels.max() == count
        assert same_partition(labels, expected)


def test_label_components_edge_cases() -> None:
    empty, n = label_components(np.zeros((5, 6), dtype=bool))
    assert n == 0 and not empty.any()
    full, n = label_components(np.ones((5, 6), dtype=bool))
    assert n == 1 and (full == 1).all()
    diagonal = np.eye(6, dtype=bool)
    assert label_components(diagonal, 8)[1] == 1
    assert label_components(diagonal, 4)[1] == 6
    # A U shape whose arms only join at the bottom is one component.
    u = np.zeros((6, 7), dtype=bool)
    u[:, 0] = u[:, 6] = u[5, :] = True
    assert label_components(u, 4)[1] == 1


def test_gaussian_window_is_normalised_and_symmetric() -> None:
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(g, g.flip(0))
    assert int(g.argmax()) == 5


def test_gaussian_blur_matches_scipy_reflect() -> None:
    """Reflect padding without repeating the edge is scipy's 'mirror' mode."""
    m = torch.rand(2, 40, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for sigma in (1.0, 2.5):
        got = gaussian_blur(m, sigma).numpy()
        radius = int(3 * sigma + 0.5)
        for i in range(2):
            expected = ndimage.gaussian_filter(m[i].numpy(), sigma, mode="mirror", radius=radius)
            np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-9)


def test_quantile_matches_numpy_per_sample() -> None:
    m = torch.rand(3, 2, 17, 19, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for q in (0.0, 12.5, 50.0, 99.0, 100.0):
        got = quantile(m, q)
        assert got.shape == (3, 1, 1, 1)
        expected = np.percentile(m.reshape(3, -1).numpy(), q, axis=1)
        np.testing.assert_allclose(got.flatten().numpy(), expected, rtol=1e-12)


def test_stretch_maps_each_sample_to_unit_range() -> None:
    m = torch.stack([torch.linspace(-3, 5, 20).reshape(4, 5), torch.full((4, 5), 2.0)])
    out = stretch(m)
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == 1.0
    assert torch.equal(out[1], torch.zeros(4, 5))


@pytest.mark.parametrize("reduction", ["mean", "max", "none"])
def test_reduce_channels_numpy_and_torch_agree(reduction: str) -> None:
    a = np.random.default_rng(5).random((2, 3, 6, 7)).astype(np.float32)
    got_np = reduce_channels(a, reduction, axis=1)
    got_t = reduce_channels(torch.from_numpy(a), reduction, axis=1)
    expected = {"mean": a.mean(axis=1), "max": a.max(axis=1), "none": a}[reduction]
    np.testing.assert_allclose(got_np, expected, rtol=1e-6)
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-6)


def test_channel_plane_takes_the_channel_max_of_3d_maps_only() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(channel_plane(a), a[1])
    np.testing.assert_array_equal(channel_plane(a[0]), a[0])


@pytest.mark.parametrize("sigma", [2.0, 4.0, 8.0, 20.0])
def test_banded_and_fft_blur_match_scipy_on_a_large_map(sigma: float, monkeypatch) -> None:
    """Small bands (many band seams) and the FFT path for big radii give scipy's values."""
    import core.numeric as numeric

    monkeypatch.setattr(numeric, "BAND_ELEMENTS", 4096)  # bands of a few rows
    m = torch.rand(1, 300, 257, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = gaussian_blur(m, sigma)[0].numpy()
    radius = int(3 * sigma + 0.5)
    expected = ndimage.gaussian_filter(m[0].numpy(), sigma, mode="mirror", radius=radius)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    whole = torch.from_numpy(np.ascontiguousarray(m.numpy()))
    monkeypatch.setattr(numeric, "BAND_ELEMENTS", 1 << 30)  # one band
    np.testing.assert_allclose(gaussian_blur(whole, sigma)[0].numpy(), got, rtol=1e-9,
                               atol=1e-12)


def test_squared_error_sum_in_bands_matches_numpy(monkeypatch) -> None:
    import core.numeric as numeric

    monkeypatch.setattr(numeric, "BAND_ELEMENTS", 64)
    g = torch.Generator().manual_seed(8)
    x, y = torch.rand(2, 3, 70, 33, generator=g), torch.rand(2, 3, 70, 33, generator=g)
    got = numeric.squared_error_sum(x, y).numpy()
    expected = ((y.double() - x.double()) ** 2).flatten(1).sum(1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_squared_error_sum_of_a_large_pair_keeps_float64_accuracy() -> None:
    """Float32 squares summed pairwise per band: ~1e-9 relative, well below the float32
    input's own rounding; a plain float32 running sum is ~1e-5 off here (PSNR by a hair)."""
    from core.numeric import squared_error_sum

    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(1, 3, 1024, 1024, generator=g), torch.rand(1, 3, 1024, 1024, generator=g)
    expected = float(((y.double() - x.double()) ** 2).sum())
    assert abs(float(squared_error_sum(x, y)[0]) / expected - 1) < 1e-7


def test_pyramid_helpers_keep_means_and_shapes() -> None:
    from core.numeric import downsample, upsample

    m = torch.rand(2, 64, 48, generator=torch.Generator().manual_seed(9))
    small = downsample(m, 4)
    assert small.shape == (2, 16, 12)
    torch.testing.assert_close(small.mean(dim=(1, 2)), m.mean(dim=(1, 2)))
    assert upsample(small, (64, 48)).shape == m.shape


def test_label_stats_match_scipy() -> None:
    """Area, sum and max per component equal scipy.ndimage's (independent implementation)."""
    from scipy import ndimage

    from core.numeric import label_stats

    rng = np.random.default_rng(5)
    values = rng.normal(size=(120, 90)).astype(np.float32)
    labels, count = label_components(values > 0.8)
    area, total, peak = label_stats(labels, values, count)
    index = np.arange(1, count + 1)
    np.testing.assert_array_equal(area, ndimage.sum_labels(np.ones_like(values), labels, index))
    np.testing.assert_allclose(total, ndimage.sum_labels(values, labels, index), rtol=1e-5)
    np.testing.assert_array_equal(peak, ndimage.maximum(values, labels, index))


@pytest.mark.parametrize("reach", [1, 2, 3, 9])
def test_max_filter_equals_scipy_maximum_filter(reach: int) -> None:
    from scipy import ndimage

    from core.numeric import max_filter

    g = torch.Generator().manual_seed(reach)
    x = torch.rand(2, 3, 37, 8, generator=g) ** 4  # narrower than the window along W at 9
    expected = ndimage.maximum_filter(x.numpy(), size=(1, 1, 2 * reach + 1, 2 * reach + 1),
                                      mode="nearest")
    assert torch.equal(max_filter(x, reach), torch.from_numpy(expected))


def test_radix_argsort_is_numpys_stable_argsort() -> None:
    """Ties (quantised keys), infinities and both signs: the order NumPy's stable sort gives;
    NaN after +inf; any shape, along the last axis."""
    rng = np.random.default_rng(3)
    for shape in [(5000,), (3, 4096), (2, 3, 257), (1, 1), (2, 0)]:
        a = (rng.normal(size=shape) * 8).round().astype(np.float32) / 8  # many ties
        a.reshape(-1)[:: 7] = np.inf
        a.reshape(-1)[3:: 11] = -np.inf
        np.testing.assert_array_equal(radix_argsort(a), np.argsort(a, axis=-1, kind="stable"))
    a = np.array([np.nan, 1.0, -np.nan, np.inf, -2.0, 0.5], dtype=np.float32)
    order = radix_argsort(a)
    assert order[:4].tolist() == [4, 5, 1, 3]
    assert set(order[4:].tolist()) == {0, 2}


def test_argsort_last_sorts_and_scrambles_ties_over_the_image() -> None:
    """Float32 on the CPU: the sorted order; a run of equal keys comes in a fixed order spread
    over its positions (the first half of a constant row holds indices from both halves)."""
    x = torch.rand(2, 3, 1000, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x.gather(-1, argsort_last(x)), x.sort(dim=-1).values)
    flat = torch.zeros(1, 4096)
    first = argsort_last(flat)[0, :2048]
    assert torch.equal(argsort_last(flat), argsort_last(flat))  # the same every time
    assert 0.4 < float((first < 2048).float().mean()) < 0.6
    d = x.double()
    assert torch.equal(d.gather(-1, argsort_last(d)), d.sort(dim=-1).values)
