"""core.strategies: difference, gradient (checked against autograd) and metric maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core import METRICS, Finder, PipelineConfig
from tests.conftest import distort, raw_finder


def nchw(img: np.ndarray) -> torch.Tensor:
    a = img.astype(np.float32) / 255
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def pair(chelsea_pair) -> tuple[torch.Tensor, torch.Tensor]:
    """A (2, 3, 96, 128) batch of real photo crops and their distorted versions."""
    ref, cand = chelsea_pair
    crops = [(slice(40, 136), slice(60, 188)), (slice(150, 246), slice(200, 328))]
    r = torch.cat([nchw(ref[c]) for c in crops])
    c = torch.cat([nchw(cand[c]) for c in crops])
    return r, c


def signed_gradient(metric: str | dict) -> Finder:
    return raw_finder(strategy={"name": "gradient", "magnitude": False}, metric=metric,
                  reduction="none", device="cpu")


def test_difference_absolute_and_signed(pair) -> None:
    ref, cand = pair
    absolute = raw_finder(strategy="difference", reduction="none").compute(ref, cand)[0]
    torch.testing.assert_close(absolute, (cand - ref).abs())
    signed = raw_finder(strategy={"name": "difference", "absolute": False},
                    reduction="none").compute(ref, cand)[0]
    torch.testing.assert_close(signed, cand - ref)  # positive where the candidate is brighter


@pytest.mark.parametrize("metric", ["mse", "psnr", "ssim", {"name": "ssim", "win_size": 7},
                                    {"name": "ms-ssim", "win_size": 3}])
def test_gradient_is_autograd_gradient_times_pixel_count(pair, metric) -> None:
    ref, cand = pair
    spec = {"name": metric} if isinstance(metric, str) else metric
    params = {k: v for k, v in spec.items() if k != "name"}
    var = cand.clone().requires_grad_(True)
    distance = METRICS.get(spec["name"]).func(ref, var, 1.0, False, **params).distance
    (grad,) = torch.autograd.grad(distance.sum(), var)
    expected = grad * (ref.shape[-2] * ref.shape[-1])
    got = signed_gradient(metric).compute(ref, cand)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-4)
    assert got.abs().max() > 0


def test_gradient_of_lpips_matches_lpips_package_autograd(lpips_home, pair) -> None:
    import lpips

    ref, cand = pair
    model = lpips.LPIPS(net="alex", verbose=False).eval()
    var = cand.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(ref * 2 - 1, var * 2 - 1).sum(), var)
    expected = grad * (ref.shape[-2] * ref.shape[-1])
    got = signed_gradient("lpips").compute(ref, cand)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-3)


def test_gradient_sign_convention_and_magnitude(pair) -> None:
    """MSE's gradient is 2 (candidate - reference) / C: positive where brightening adds error."""
    ref, cand = pair
    signed = signed_gradient("mse").compute(ref, cand)[0]
    torch.testing.assert_close(signed, 2 * (cand - ref) / ref.shape[1], atol=1e-6, rtol=1e-5)
    magnitude = raw_finder(strategy="gradient", metric="mse", reduction="none").compute(
        ref, cand)[0]
    torch.testing.assert_close(magnitude, signed.abs())
    strategy = raw_finder(strategy="gradient").config.strategy
    assert strategy == {"name": "gradient", "magnitude": True}


def test_gradient_does_not_depend_on_image_size(camera) -> None:
    """Scaling by H*W: the same local change gives the same values on a crop and the whole."""
    cand = camera.copy()
    cand[200:220, 200:230] = 255 - cand[200:220, 200:230]
    finder = raw_finder(strategy="gradient", metric="mse")
    whole = finder.run(camera, cand)
    crop = finder.run(camera[150:300, 150:300], cand[150:300, 150:300])
    np.testing.assert_allclose(crop, whole[150:300, 150:300], atol=1e-5)


def test_gradient_finds_the_edit(astronaut) -> None:
    cand = astronaut.copy()
    cand[300:330, 100:130] = np.clip(cand[300:330, 100:130].astype(int) + 60, 0, 255)
    for metric in ("psnr", "ssim"):
        m = raw_finder(strategy="gradient", metric=metric).run(astronaut, cand)
        assert m[300:330, 100:130].mean() > 10 * max(m[:280].mean(), 1e-12), metric
    psnr = raw_finder(strategy="gradient", metric="psnr").run(astronaut, cand)
    assert psnr[:280].max() == 0  # PSNR's gradient is local: zero wherever pixels agree


def test_map_strategy_is_the_metrics_own_map(pair) -> None:
    ref, cand = pair
    for name in ("mse", "ssim"):
        expected = METRICS.get(name).func(ref, cand, 1.0, True).map
        got = raw_finder(strategy="map", metric=name, reduction="none").compute(ref, cand)[0]
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValidationError, match="spatial map") as info:
        PipelineConfig(strategy="map", metric="ms-ssim")
    for name in ("mse", "psnr", "ssim", "lpips"):
        assert name in str(info.value)


@pytest.mark.parametrize("reduction", ["mean", "max", "none"])
def test_channel_reduction(pair, reduction) -> None:
    ref, cand = pair
    per_channel = (cand - ref).abs()
    expected = {"mean": per_channel.mean(1), "max": per_channel.amax(1), "none": per_channel}
    got = raw_finder(strategy="difference", reduction=reduction).compute(ref, cand)[0]
    torch.testing.assert_close(got, expected[reduction])


@pytest.mark.parametrize(("strategy", "metric"), [
    ("difference", "mse"), ("gradient", "mse"), ("gradient", "psnr"), ("gradient", "ssim"),
    ("map", "ssim"), ("gradient", "lpips"), ("map", "lpips"),
])
def test_callers_tensors_are_never_modified(lpips_home, pair, strategy, metric) -> None:
    ref, cand = pair[0].clone(), pair[1].clone()
    before = (ref.clone(), cand.clone(), ref._version, cand._version)
    for pre in ("identity", "normalize", "highpass_filter"):
        raw_finder(strategy=strategy, metric=metric, pre_processor=pre).run(ref, cand,
                                                                         return_metric=True)
    assert torch.equal(ref, before[0]) and torch.equal(cand, before[1])
    assert (ref._version, cand._version) == before[2:]
    assert not ref.requires_grad and not cand.requires_grad
    assert ref.grad is None and cand.grad is None


def test_inputs_that_require_grad_or_come_from_inference_mode(pair) -> None:
    ref, cand = pair
    finder = signed_gradient("ssim")
    expected = finder.compute(ref, cand)[0]
    leaf = cand.clone().requires_grad_(True)
    out = finder.compute(ref, leaf)[0]
    torch.testing.assert_close(out, expected)
    assert leaf.grad is None and not out.requires_grad
    with torch.inference_mode():
        inf_ref, inf_cand = ref.clone(), cand.clone()
    torch.testing.assert_close(finder.compute(inf_ref, inf_cand)[0], expected)


@pytest.mark.parametrize(("strategy", "metric"), [
    ("gradient", "mse"), ("gradient", "ssim"), ("map", "ssim"), ("gradient", "lpips"),
])
def test_a_pairs_result_never_depends_on_its_batch(lpips_home, pair, strategy, metric) -> None:
    ref, cand = pair
    for pre in ("normalize", "highpass_filter"):
        finder = raw_finder(strategy=strategy, metric=metric, pre_processor=pre,
                        post_processor=["normalize", {"name": "clip", "high": 98}])
        maps, scores = finder.compute(ref, cand, with_score=True)
        for i in range(2):
            alone, score = finder.compute(ref[i : i + 1], cand[i : i + 1], with_score=True)
            torch.testing.assert_close(maps[i : i + 1], alone, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(scores[i : i + 1], score, atol=1e-6, rtol=1e-5)


def test_identical_images_give_finite_zero_maps(camera) -> None:
    img = camera[:64, :64]
    for metric in ("mse", "psnr", "ssim"):
        m, _ = raw_finder(strategy="gradient", metric=metric).run(img, img.copy(),
                                                                  return_metric=True)
        # Zero up to float32 rounding (times H*W): far below any real difference's values.
        assert np.isfinite(m).all() and np.abs(m).max() < 1e-3, metric
    assert raw_finder(strategy="gradient", metric="psnr").run(img, img, return_metric=True)[1] == (
        float("inf"))
    other = distort(img, seed=12)
    for metric in ("psnr", "ssim"):
        assert np.abs(raw_finder(strategy="gradient", metric=metric).run(img, other)).max() > 0.1
