"""core.postprocess: clip, smooth, threshold and chains, cross-checked with numpy/scipy/skimage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import ndimage
from skimage.filters import threshold_otsu

from core import POST_PROCESSORS, PipelineConfig
from core.numeric import otsu_threshold
from tests.conftest import distort, raw_finder


def post(name: str, m: torch.Tensor, **params) -> torch.Tensor:
    return POST_PROCESSORS.get(name).func(m, **params)


@pytest.fixture(scope="module")
def ssim_maps(astronaut_pair, chelsea_pair) -> torch.Tensor:
    """Two real (1 - SSIM) maps of 256x300, as a batch (2, H, W)."""
    finder = raw_finder(strategy="map", metric="ssim")
    a = finder.run(*(x[:256, :300] for x in astronaut_pair))
    b = finder.run(*(x[:256, :300] for x in chelsea_pair))
    return torch.from_numpy(np.stack([a, b]))


def test_identity_abs_normalize(ssim_maps) -> None:
    m = ssim_maps - 0.1
    assert torch.equal(post("identity", m), m)
    assert torch.equal(post("abs", m), m.abs())
    out = post("normalize", m)
    for i in range(2):
        lo, hi = m[i].min(), m[i].max()
        torch.testing.assert_close(out[i], (m[i] - lo) / (hi - lo))
    assert torch.equal(post("normalize", torch.full((1, 4, 4), 3.0)), torch.zeros(1, 4, 4))


@pytest.mark.parametrize(("low", "high"), [(None, 99.0), (5.0, 95.0), (1.0, None), (0.0, 100.0)])
def test_clip_percentile_matches_numpy_per_sample(ssim_maps, low, high) -> None:
    out = post("clip", ssim_maps, low=low, high=high, mode="percentile")
    for i in range(2):
        m = ssim_maps[i].numpy()
        lo = None if low is None else np.percentile(m, low)
        hi = None if high is None else np.percentile(m, high)
        np.testing.assert_allclose(out[i].numpy(), np.clip(m, lo, hi), atol=1e-6)


def test_clip_value(ssim_maps) -> None:
    out = post("clip", ssim_maps, low=0.05, high=0.2, mode="value")
    np.testing.assert_array_equal(out.numpy(), np.clip(ssim_maps.numpy(), 0.05, 0.2))


@pytest.mark.parametrize(
    "spec",
    [{"name": "clip", "low": 0.5, "high": 0.2, "mode": "value"},
     {"name": "clip", "high": 120.0}, {"name": "clip", "low": -1.0},
     {"name": "smooth", "sigma": 0.0}, {"name": "smooth", "sigma": float("nan")},
     {"name": "threshold", "method": "median"}, {"name": "threshold", "percentile": 101},
     {"name": "abs", "how": "yes"}],
)
def test_bad_post_processor_parameters_are_refused(spec) -> None:
    with pytest.raises(ValidationError):
        PipelineConfig(post_processor=spec)


@pytest.mark.parametrize("sigma", [0.8, 2.0, 4.5])
def test_smooth_matches_scipy_gaussian(ssim_maps, sigma) -> None:
    out = post("smooth", ssim_maps, sigma=sigma)
    for i in range(2):
        # torch's "reflect" padding is scipy's "mirror"; core truncates at 3 sigma.
        expected = ndimage.gaussian_filter(ssim_maps[i].double().numpy(), sigma,
                                           mode="mirror", truncate=3.0)
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-6)


def test_smooth_handles_channels_and_tiny_maps() -> None:
    m = torch.rand(2, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    out = post("smooth", m, sigma=1.5)
    for c in range(3):
        torch.testing.assert_close(out[:, c], post("smooth", m[:, c], sigma=1.5))
    for shape in [(1, 1, 1), (1, 1, 7), (1, 2, 2), (1, 3, 9)]:
        tiny = torch.rand(*shape)
        smoothed = post("smooth", tiny, sigma=10.0)
        assert smoothed.shape == tiny.shape and torch.isfinite(smoothed).all()


def test_threshold_otsu_matches_skimage(ssim_maps) -> None:
    out = post("threshold", ssim_maps, method="otsu", binary=True)
    for i in range(2):
        m = ssim_maps[i].numpy()
        t = threshold_otsu(m.astype(np.float64), nbins=256)
        width = (float(m.max()) - float(m.min())) / 256
        # Same 256-bin histogram and the same chosen bin: skimage reports its centre,
        # core its upper edge (so the whole chosen bin is background).
        core_t = float(otsu_threshold(ssim_maps[i : i + 1]).item())
        assert core_t == pytest.approx(t + width / 2, abs=width * 1e-3)
        np.testing.assert_array_equal(out[i].numpy(), (m > core_t).astype(np.float32))


def test_threshold_otsu_separates_two_levels() -> None:
    gen = torch.Generator().manual_seed(1)
    m = 0.1 + 0.02 * torch.rand(1, 64, 64, generator=gen)
    m[0, 10:20, 30:45] = 0.9 + 0.02 * torch.rand(10, 15, generator=gen)
    mask = post("threshold", m, binary=True)
    expected = torch.zeros_like(m)
    expected[0, 10:20, 30:45] = 1
    assert torch.equal(mask, expected)
    kept = post("threshold", m)  # non-binary: values kept above, zero below
    assert torch.equal(kept, m * expected)


def test_threshold_percentile_and_value(ssim_maps) -> None:
    out = post("threshold", ssim_maps, method="percentile", percentile=90.0)
    for i in range(2):
        m = ssim_maps[i].numpy()
        np.testing.assert_array_equal(out[i].numpy(), np.where(m > np.percentile(m, 90), m, 0))
        assert (out[i] > 0).float().mean().item() == pytest.approx(0.1, abs=0.01)
    val = post("threshold", ssim_maps, method="value", value=0.3, binary=True)
    np.testing.assert_array_equal(val.numpy(), (ssim_maps.numpy() > 0.3).astype(np.float32))


def test_post_processors_act_per_sample(ssim_maps) -> None:
    specs = [("normalize", {}), ("clip", {"low": 2.0, "high": 97.0}), ("smooth", {"sigma": 2}),
             ("threshold", {"method": "otsu"}), ("threshold", {"method": "percentile"})]
    for name, params in specs:
        together = post(name, ssim_maps, **params)
        for i in range(2):
            torch.testing.assert_close(together[i : i + 1], post(name, ssim_maps[i : i + 1],
                                                                 **params))


def test_chain_applies_in_order(camera) -> None:
    ref, cand = camera[:200, :200], distort(camera, seed=7)[:200, :200]
    base = raw_finder(strategy="map", metric="ssim").run(ref, cand)
    chain = [{"name": "clip", "high": 98.0}, {"name": "smooth", "sigma": 1.5}, "normalize",
             {"name": "threshold", "method": "value", "value": 0.5}]
    got = raw_finder(strategy="map", metric="ssim", post_processor=chain).run(ref, cand)
    m = torch.from_numpy(base)[None]
    m = post("clip", m, high=98.0)
    m = post("smooth", m, sigma=1.5)
    m = post("normalize", m)
    m = post("threshold", m, method="value", value=0.5)
    np.testing.assert_allclose(got, m[0].numpy(), atol=1e-6)
    reordered = raw_finder(strategy="map", metric="ssim", post_processor=chain[::-1]).run(ref, cand)
    assert not np.allclose(got, reordered)


def test_chain_errors_name_the_step() -> None:
    with pytest.raises(ValidationError) as info:
        PipelineConfig(post_processor=["normalize", {"name": "smooth", "sigma": -1}])
    assert info.value.errors()[0]["loc"][:3] == ("post_processor", 1, "sigma")
    with pytest.raises(ValidationError, match="at most 16"):
        PipelineConfig(post_processor=["identity"] * 17)
