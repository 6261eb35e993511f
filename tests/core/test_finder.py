"""core.finder: the seed-compatible run(), analyze(), compute(), batches, devices, defaults."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage.metrics import peak_signal_noise_ratio

from core import ConfigError, DeviceError, Finder, PairResult, Region
from core.finder import resolve_device
from tests.conftest import distort


@pytest.fixture(scope="module")
def batch(astronaut, chelsea) -> tuple[torch.Tensor, torch.Tensor]:
    """Three different (3, 128, 160) photo crops, uint8 (N, H, W, C), and distorted copies."""
    crops = [astronaut[:128, :160], astronaut[300:428, 200:360], chelsea[100:228, 150:310]]
    ref = np.stack(crops)
    cand = np.stack([distort(c, seed=20 + i) for i, c in enumerate(crops)])
    return torch.from_numpy(ref), torch.from_numpy(cand)


def test_one_pair_gives_a_float32_hw_map(chelsea_pair) -> None:
    out = Finder().run(*chelsea_pair)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == chelsea_pair[0].shape[:2]
    assert np.isfinite(out).all()


def test_return_metric_for_tensors_too(chelsea_pair) -> None:
    ref, cand = chelsea_pair
    expected = peak_signal_noise_ratio(ref, cand, data_range=255)
    finder = Finder(strategy="gradient", metric="psnr")
    for r, c in ((ref, cand), (torch.from_numpy(ref), torch.from_numpy(cand)),
                 (torch.from_numpy(ref).permute(2, 0, 1).float() / 255,
                  torch.from_numpy(cand).permute(2, 0, 1).float() / 255)):
        m, value = finder.run(r, c, return_metric=True)
        assert m.shape == ref.shape[:2]
        assert isinstance(value, float) and value == pytest.approx(expected, abs=1e-3)
        np.testing.assert_array_equal(finder.run(r, c), m)  # same map without the metric


@pytest.mark.parametrize(("strategy", "metric"), [("gradient", "psnr"), ("map", "ssim"),
                                                  ("difference", "ms-ssim"),
                                                  ("gradient", "lpips")])
def test_batches_return_every_sample(lpips_home, batch, strategy, metric) -> None:
    ref, cand = batch
    finder = Finder(strategy=strategy, metric=({"name": metric, "win_size": 3}
                                               if metric == "ms-ssim" else metric))
    maps, values = finder.run(ref, cand, return_metric=True)
    assert maps.shape == (3, 128, 160) and maps.dtype == np.float32
    assert isinstance(values, np.ndarray) and values.shape == (3,)
    for i in range(3):
        single, value = finder.run(ref[i], cand[i], return_metric=True)
        np.testing.assert_allclose(maps[i], single, atol=1e-5, rtol=1e-4)
        assert values[i] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert len({float(v) for v in values}) == 3  # really three different pairs
    # A batch of one is one pair: (H, W) and a float, as for unbatched input.
    one, value = finder.run(ref[:1], cand[:1], return_metric=True)
    assert one.shape == (128, 160) and isinstance(value, float)


def test_a_pairs_result_never_depends_on_the_rest_of_its_batch(batch) -> None:
    ref, cand = batch
    finder = Finder(pre_processor="normalize", strategy="gradient", metric="ssim",
                    post_processor=["normalize", {"name": "threshold", "method": "otsu"}])
    full = finder.run(ref, cand)
    # Replace the other samples with something else entirely: sample 1 must not change.
    other_ref, other_cand = ref.clone(), cand.clone()
    other_ref[0], other_cand[2] = 255 - other_ref[0], torch.zeros_like(other_cand[2])
    np.testing.assert_allclose(finder.run(other_ref, other_cand)[1], full[1], atol=1e-6)


def test_one_image_against_a_batch(batch) -> None:
    ref, cand = batch
    finder = Finder(strategy="difference")
    maps = finder.run(ref[0], cand)
    assert maps.shape == (3, 128, 160)
    for i in range(3):
        np.testing.assert_allclose(maps[i], finder.run(ref[0], cand[i]), atol=1e-7)


def test_analyze_gives_full_results(chelsea_pair) -> None:
    finder = Finder(strategy="map", metric="ssim")
    (res,) = finder.analyze(*chelsea_pair)
    assert isinstance(res, PairResult)
    assert res.map.dtype == np.float32 and res.map.shape == (300, 451)
    np.testing.assert_array_equal(res.map, finder.run(*chelsea_pair))
    _, score = finder.run(*chelsea_pair, return_metric=True)
    assert res.metrics == {"ssim": pytest.approx(score)}
    assert res.regions and all(isinstance(r, Region) for r in res.regions)
    assert set(res.timing_ms) == {"load", "compute", "regions"}
    assert all(v >= 0 for v in res.timing_ms.values())
    (bare,) = finder.analyze(*chelsea_pair, metrics=False, regions=False)
    assert bare.metrics == {} and bare.regions == []


def test_compute_on_tensors(batch) -> None:
    ref, cand = (t.permute(0, 3, 1, 2).float() / 255 for t in batch)
    finder = Finder(strategy="map", metric="mse", post_processor="identity")
    maps, scores = finder.compute(ref, cand, with_score=True)
    assert maps.shape == (3, 128, 160) and scores.shape == (3,)
    torch.testing.assert_close(maps, ((cand - ref) ** 2).mean(1))
    torch.testing.assert_close(scores, ((cand - ref) ** 2).flatten(1).mean(1))
    assert finder.compute(ref, cand)[1] is None
    assert not maps.requires_grad


def test_reduction_none_keeps_channels(chelsea_pair) -> None:
    raw = {"strategy": "difference", "post_processor": "identity"}
    out = Finder(reduction="none", **raw).run(*chelsea_pair)
    assert out.shape == (3, 300, 451)
    mx = Finder(reduction="max", **raw).run(*chelsea_pair)
    np.testing.assert_allclose(mx, out.max(axis=0))


def test_devices() -> None:
    assert Finder(device="cpu").device == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected == resolve_device(None).type
    for bad in ("cuda:99", "tpu", "cuda:x"):
        with pytest.raises(DeviceError) as info:
            Finder(device=bad)
        assert bad in str(info.value) and info.value.status == 503
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            Finder(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_gives_the_cpu_map(chelsea_pair) -> None:
    for strategy, metric in (("map", "ssim"), ("gradient", "psnr")):
        cpu = Finder(strategy=strategy, metric=metric, device="cpu").run(*chelsea_pair)
        gpu = Finder(strategy=strategy, metric=metric, device="cuda").run(*chelsea_pair)
        np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_directory_progress_callback(tmp_path, camera) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(3):
        Image.fromarray(camera[i * 40 : i * 40 + 32, :32]).save(a / f"{i}.png")
        Image.fromarray(camera[i * 40 + 1 : i * 40 + 33, :32]).save(b / f"{i}.png")
    seen = []

    def progress(items):
        for item in items:
            seen.append(item)
            yield item

    maps = Finder(strategy="difference").run(a, b, progress=progress)
    assert len(maps) == 3 and [p[0].name for p in seen] == ["0.png", "1.png", "2.png"]


def _edited(astronaut: np.ndarray) -> np.ndarray:
    cand = astronaut.astype(np.float64)
    cand[128:152, 128:152] += 40.0  # brightened square
    cand[256:288, 256:288] = cand[256:288, 256:288][:, ::-1]  # mirrored patch
    return np.clip(cand, 0, 255).round().astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def _noise(img: np.ndarray, sigma: float) -> np.ndarray:
    noisy = img + np.random.default_rng(0).normal(0.0, sigma, img.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


NUISANCES = {
    "jpeg q75": lambda im: _jpeg(im, 75),
    "slight blur": lambda im: np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(0.6))),
    "faint noise": lambda im: _noise(im, 3.0),
}


@pytest.mark.parametrize("nuisance", NUISANCES.values(), ids=NUISANCES.keys())
def test_default_pipeline_puts_local_edits_above_global_nuisance(astronaut, nuisance) -> None:
    """What Finder() promises: small local edits stand out over image-wide reconstruction noise."""
    cand = nuisance(_edited(astronaut))
    regions = Finder().analyze(astronaut, cand)[0].regions
    edits = [(128, 128, 24), (256, 256, 32)]  # x, y, side

    def hits(r: Region, edit: tuple[int, int, int]) -> bool:
        x, y, s = edit
        return r.x < x + s and x < r.x + r.width and r.y < y + s and y < r.y + r.height

    top = regions[:2]
    assert all(any(hits(r, e) for r in top) for e in edits), top
    assert all(any(hits(r, e) for e in edits) for r in top), top


def test_default_scores_are_cheap_and_costly_ones_come_when_asked(chelsea_pair) -> None:
    """The default pipeline's metric (SSIM) is costly next to its map: analyze gives MSE
    and PSNR by default, SSIM with metrics=True or by name, all equal to the metrics'."""
    ref, cand = chelsea_pair
    finder = Finder(device="cpu")
    (res,) = finder.analyze(ref, cand, regions=False)
    r, c = ref / 255.0, cand / 255.0
    mse = float(((c - r) ** 2).mean())
    assert res.metrics == {"mse": pytest.approx(mse, rel=1e-5),
                           "psnr": pytest.approx(10 * np.log10(1 / mse), rel=1e-6)}
    _, ssim = finder.run(ref, cand, return_metric=True)
    assert finder.analyze(ref, cand, metrics=True)[0].metrics == {"ssim": pytest.approx(ssim)}
    both = finder.analyze(ref, cand, metrics=["ssim", "mse"])[0].metrics
    assert both == {"ssim": pytest.approx(ssim), "mse": pytest.approx(mse, rel=1e-5)}
    # A strategy that computes the metric anyway returns it by default.
    assert set(Finder(strategy="map", device="cpu").analyze(ref, cand)[0].metrics) == {"ssim"}
    with pytest.raises(ConfigError):
        finder.analyze(ref, cand, metrics=["nope"])


def test_large_map_regions_are_the_whole_image_path(astronaut) -> None:
    """A 2000x2000 map (bands and many components): the same regions as find_regions on
    the map computed without bands, and the map equals the unbanded blur."""
    import core.numeric as numeric
    from core.regions import find_regions

    big = np.tile(astronaut, (4, 4, 1))[:2000, :2000]
    cand = big.copy()
    cand[500:560, 900:980] = 255 - cand[500:560, 900:980]
    # the smoothed-difference pipeline, whose map has a closed form to check against
    finder = Finder(strategy="difference", post_processor=[{"name": "smooth", "sigma": 2.0}],
                    regions={"threshold": "percentile"}, device="cpu")
    (res,) = finder.analyze(big, cand)
    r, c = (torch.from_numpy(x).permute(2, 0, 1)[None].double() / 255 for x in (big, cand))
    saved = numeric.BAND_ELEMENTS
    try:
        numeric.BAND_ELEMENTS = 1 << 40
        whole = numeric.gaussian_blur((c - r).abs().mean(1), 2.0)[0].float().numpy()
    finally:
        numeric.BAND_ELEMENTS = saved
    np.testing.assert_allclose(res.map, whole, atol=1e-5)
    # Regions against an independent labelling (scikit-image), same threshold.
    from skimage.measure import label, regionprops

    mask = res.map > np.percentile(res.map, 98)
    props = {(p.bbox[1], p.bbox[0], p.bbox[3] - p.bbox[1], p.bbox[2] - p.bbox[0]): p.area
             for p in regionprops(label(mask, connectivity=2))}
    assert res.regions and res.regions == find_regions(res.map, finder.config.regions)
    for reg in res.regions:
        assert props[(reg.x, reg.y, reg.width, reg.height)] == reg.area
    assert res.regions[0].x <= 900 < res.regions[0].x + res.regions[0].width
