"""core.metrics: every metric cross-checked against an independent implementation.

PSNR and SSIM against scikit-image, SSIM/MS-SSIM against pytorch_msssim,
LPIPS against the lpips package (same stand-in backbone weights), and the
differentiable distances with torch.autograd.gradcheck.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from core import METRICS, MetricError
from tests.conftest import distort, raw_finder


def nchw(img: np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """uint8 (H, W[, C]) -> float32 (1, C, H, W) in [0, 1] (test-side conversion)."""
    a = img.astype(np.float32) / scale
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def metric(name: str, x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
           want_map: bool = False, **params):
    return METRICS.get(name).func(x, y, data_range, want_map, **params)


# -- PSNR ------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["astronaut", "camera", "chelsea"])
def test_psnr_matches_skimage(photo: str, request: pytest.FixtureRequest) -> None:
    ref = request.getfixturevalue(photo)
    cand = distort(ref, seed=3)
    expected = peak_signal_noise_ratio(ref, cand, data_range=255)
    _, got = raw_finder(strategy="difference", metric="psnr").run(ref, cand, return_metric=True)
    assert got == pytest.approx(expected, abs=1e-4)


def test_psnr_data_range_for_float_inputs(astronaut_pair) -> None:
    ref, cand = (a.astype(np.float64) for a in astronaut_pair)
    expected = peak_signal_noise_ratio(ref, cand, data_range=255.0)
    finder = raw_finder(strategy="difference", metric="psnr", data_range=255.0)
    _, got = finder.run(ref, cand, return_metric=True)
    assert got == pytest.approx(expected, abs=1e-4)
    # Same floats but the default data_range of 1.0: 20*log10(255) dB lower.
    _, unit = raw_finder(strategy="difference", metric="psnr").run(ref, cand, return_metric=True)
    assert unit == pytest.approx(expected - 20 * np.log10(255.0), abs=1e-4)


def test_psnr_of_identical_images_is_infinite_with_zero_gradient(camera) -> None:
    x = nchw(camera[:64, :64])
    out = metric("psnr", x, x.clone())
    assert torch.isinf(out.score).all() and out.score.item() > 0
    var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(metric("psnr", x, var).distance.sum(), var)
    assert torch.isfinite(grad).all() and grad.abs().max() == 0


def test_mse_and_psnr_maps_are_squared_error(chelsea_pair) -> None:
    x, y = (nchw(a) for a in chelsea_pair)
    sq = (x - y) ** 2
    for name in ("mse", "psnr"):
        out = metric(name, x, y, want_map=True)
        torch.testing.assert_close(out.map, sq)
    assert metric("mse", x, y).score.item() == pytest.approx(sq.mean().item(), rel=1e-5)


# -- SSIM ------------------------------------------------------------------------


def _skimage_ssim(ref: np.ndarray, cand: np.ndarray, data_range: float, sigma: float = 1.5):
    return structural_similarity(
        ref, cand, gaussian_weights=True, sigma=sigma, use_sample_covariance=False,
        data_range=data_range, channel_axis=-1 if ref.ndim == 3 else None, full=True,
    )


@pytest.mark.parametrize(("win_size", "sigma"), [(11, 1.5), (9, 1.0), (7, 0.8)])
def test_ssim_map_and_mean_match_skimage(astronaut_pair, win_size: int, sigma: float) -> None:
    # scikit-image's Gaussian window has radius int(3.5 * sigma + 0.5): 11, 9, 7 taps here.
    ref, cand = astronaut_pair
    mean, smap = _skimage_ssim(ref / 255.0, cand / 255.0, 1.0, sigma)
    finder = raw_finder(strategy="map", reduction="none",
                        metric={"name": "ssim", "win_size": win_size, "sigma": sigma})
    got, score = finder.run(ref, cand, return_metric=True)
    expected = 1.0 - smap.transpose(2, 0, 1)  # core's map is 1 - local SSIM, channel-first
    assert got.shape == expected.shape == (3, 512, 512)
    r = win_size // 2
    inner = (slice(None), slice(r, -r), slice(r, -r))
    # float32 vs float64: E[x^2] - E[x]^2 cancels; allow that, and check the mean error too.
    np.testing.assert_allclose(got[inner], expected[inner], atol=5e-4)
    np.testing.assert_allclose(got, expected, atol=5e-4)  # symmetric padding at the borders
    assert np.abs(got - expected).mean() < 5e-5
    assert score == pytest.approx(mean, abs=2e-5)


def test_ssim_grayscale_and_data_range_match_skimage(camera) -> None:
    ref = camera.astype(np.float64)
    cand = distort(camera, seed=4).astype(np.float64)
    mean, smap = _skimage_ssim(ref, cand, 255.0)
    finder = raw_finder(strategy="map", metric="ssim", data_range=255.0)
    got, score = finder.run(ref, cand, return_metric=True)
    assert got.shape == camera.shape
    np.testing.assert_allclose(got, 1.0 - smap, atol=5e-4)
    assert score == pytest.approx(mean, abs=2e-5)


@pytest.mark.parametrize("win_size", [11, 7])
def test_ssim_matches_pytorch_msssim(chelsea_pair, win_size: int) -> None:
    from pytorch_msssim import ssim as ref_ssim

    x, y = (nchw(a) for a in chelsea_pair)
    expected = ref_ssim(x, y, data_range=1.0, size_average=False, win_size=win_size)
    for want_map in (False, True):  # the score is the same whether or not a map is made
        got = metric("ssim", x, y, want_map=want_map, win_size=win_size).score
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_ssim_too_small_is_a_metric_error() -> None:
    x = torch.rand(1, 1, 8, 20)
    with pytest.raises(MetricError, match="win_size 11"):
        metric("ssim", x, x)
    assert metric("ssim", x, x, win_size=7).score.item() == pytest.approx(1.0)


# -- MS-SSIM ---------------------------------------------------------------------


@pytest.mark.parametrize(("photo", "win_size"), [("astronaut_pair", 11), ("chelsea_pair", 7)])
def test_ms_ssim_matches_pytorch_msssim(photo: str, win_size: int, request) -> None:
    from pytorch_msssim import ms_ssim as ref_ms_ssim

    x, y = (nchw(a) for a in request.getfixturevalue(photo))
    expected = ref_ms_ssim(x * 255, y * 255, data_range=255, size_average=False,
                           win_size=win_size)
    got = metric("ms-ssim", x, y, win_size=win_size).score
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    _, via_finder = raw_finder(strategy="gradient", metric={"name": "ms-ssim", "win_size": win_size}
                           ).run(x, y, return_metric=True)
    assert via_finder == pytest.approx(expected.item(), abs=1e-5)


def test_ms_ssim_takes_data_range(chelsea_pair) -> None:
    ref, cand = chelsea_pair
    finder = raw_finder(strategy="difference", metric={"name": "ms-ssim", "win_size": 7})
    _, from_uint8 = finder.run(ref, cand, return_metric=True)
    floats = raw_finder(strategy="difference", metric={"name": "ms-ssim", "win_size": 7},
                    data_range=255.0)
    _, from_floats = floats.run(ref.astype(np.float32), cand.astype(np.float32),
                                return_metric=True)
    assert from_floats == pytest.approx(from_uint8, abs=1e-5)
    # The wrong data_range changes the score: it is really used.
    _, wrong = finder.run(ref.astype(np.float32), cand.astype(np.float32), return_metric=True)
    assert abs(wrong - from_uint8) > 1e-3


@pytest.mark.parametrize("side", [32, 40, 100, 128, 150, 160])
def test_ms_ssim_too_small_is_a_clear_metric_error(side: int) -> None:
    x = torch.rand(1, 3, side, side + 50)
    y = torch.rand(1, 3, side, side + 50)
    with pytest.raises(MetricError) as info:
        metric("ms-ssim", x, y)
    msg = str(info.value)
    assert "MS-SSIM" in msg and f"{side + 50}x{side}" in msg
    # The hint must be right: a suggested window works, and one is suggested when any does.
    works = [w for w in range(3, 12, 2) if (w - 1) * 16 < side]
    if works:
        assert f"win_size {max(works)} or less" in msg
        score = metric("ms-ssim", x, y, win_size=max(works)).score
        assert torch.isfinite(score).all()
    else:
        assert "larger images" in msg


def test_ms_ssim_too_small_through_finder_is_not_an_assertion(camera) -> None:
    small = camera[:100, :100]
    for strategy in ("gradient", "difference"):
        finder = raw_finder(strategy=strategy, metric="ms-ssim")
        with pytest.raises(MetricError, match="MS-SSIM"):
            finder.run(small, small[::-1].copy(), return_metric=True)


# -- LPIPS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_lpips(lpips_home):
    """lpips.LPIPS(net=...) built by the lpips package itself, once per net."""
    import lpips

    models: dict[str, torch.nn.Module] = {}

    def get(net: str) -> torch.nn.Module:
        if net not in models:
            models[net] = lpips.LPIPS(net=net, verbose=False).eval()
        return models[net]

    return get


def lpips_reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    spatial: bool) -> torch.Tensor:
    """The lpips package's own forward pass with spatial=True or False, inputs in [-1, 1]."""
    model.spatial = spatial  # LPIPS(spatial=...) only sets this attribute
    with torch.no_grad():
        return model(x * 2 - 1, y * 2 - 1)


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_score_and_map_match_lpips_package(reference_lpips, chelsea_pair, net) -> None:
    ref, cand = chelsea_pair
    x, y = nchw(ref), nchw(cand)
    model = reference_lpips(net)
    expected_map = lpips_reference(model, x, y, spatial=True)[0, 0].numpy()
    expected_score = lpips_reference(model, x, y, spatial=False).item()
    finder = raw_finder(strategy="map", metric={"name": "lpips", "net": net})
    got, score = finder.run(ref, cand, return_metric=True)
    assert got.shape == ref.shape[:2]
    np.testing.assert_allclose(got, expected_map, rtol=1e-4, atol=1e-6)
    assert score == pytest.approx(expected_score, rel=1e-4)
    assert expected_score > 0


def test_lpips_scales_inputs_by_data_range_and_expands_gray(reference_lpips, camera) -> None:
    ref, cand = camera[:128, :160], distort(camera, seed=5)[:128, :160]
    x, y = nchw(ref).expand(-1, 3, -1, -1), nchw(cand).expand(-1, 3, -1, -1)
    expected = lpips_reference(reference_lpips("alex"), x, y, spatial=False).item()
    finder = raw_finder(strategy="difference", metric="lpips")
    assert finder.run(ref, cand, return_metric=True)[1] == pytest.approx(expected, rel=1e-4)
    floats = raw_finder(strategy="difference", metric="lpips", data_range=255.0)
    got = floats.run(ref.astype(np.float32), cand.astype(np.float32), return_metric=True)[1]
    assert got == pytest.approx(expected, rel=1e-4)


def test_lpips_too_small_is_a_metric_error(lpips_home) -> None:
    x = torch.rand(1, 3, 12, 40)
    with pytest.raises(MetricError, match="16x16"):
        metric("lpips", x, x)


# -- gradients -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "want_map"),
    [("mse", {}, False), ("psnr", {}, False), ("ssim", {"win_size": 5}, False),
     ("ssim", {"win_size": 5}, True), ("ssim", {"win_size": 3, "sigma": 0.7}, False)],
)
def test_distances_pass_gradcheck(one_thread, name: str, params: dict, want_map: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 2, 7, 8, dtype=torch.float64, generator=gen)
    cand = torch.rand(2, 2, 7, 8, dtype=torch.float64, generator=gen).requires_grad_(True)

    def distance(c: torch.Tensor) -> torch.Tensor:
        return metric(name, ref, c, want_map=want_map, **params).distance

    assert torch.autograd.gradcheck(distance, (cand,), eps=1e-6, atol=1e-5)
    if want_map:
        def smap(c: torch.Tensor) -> torch.Tensor:
            return metric(name, ref, c, want_map=True, **params).map

        assert torch.autograd.gradcheck(smap, (cand,), eps=1e-6, atol=1e-5)


def test_distance_orders_like_the_score(astronaut) -> None:
    """Distances grow as images get more different; scores follow each metric's direction."""
    x = nchw(astronaut[::4, ::4])
    mild = nchw(distort(astronaut, seed=6, noise=3.0)[::4, ::4])
    strong = nchw(distort(astronaut, seed=6, noise=25.0)[::4, ::4])
    for name in ("mse", "psnr", "ssim"):
        d_mild, d_strong = metric(name, x, mild), metric(name, x, strong)
        assert d_mild.distance.item() < d_strong.distance.item()
        higher_better = METRICS.get(name).meta["higher_is_better"]
        assert (d_mild.score.item() > d_strong.score.item()) == higher_better
