"""The ``significance`` strategy: a map in robust sigmas, and its default hysteresis regions.

Behaviour a user relies on, whatever the tuned thresholds: nothing is reported for an identical
or a nuisance-only pair; a clear, a hue-only or a mirrored edit is; sizes, channels, bit depths
and batches all work.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from core import Finder
from core.regions import Region, RegionsConfig
from core.significance import SAMPLES, significance_map

SIG = {"strategy": "significance", "post_processor": [], "regions": {"threshold": "hysteresis"}}


def _finder(**kw) -> Finder:
    return Finder(device="cpu", **{**SIG, **kw})


def _regions(ref: np.ndarray, cand: np.ndarray) -> list[Region]:
    return _finder().analyze(ref, cand, metrics=False)[0].regions


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _u8(img.astype(np.float64) + rng.normal(0, sigma, img.shape))


def _jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(_noisy(img, 1.5)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def _bicubic2(img: np.ndarray) -> np.ndarray:
    pil = Image.fromarray(img)
    small = pil.resize((pil.width // 2, pil.height // 2), Image.Resampling.BICUBIC)
    return np.asarray(small.resize(pil.size, Image.Resampling.BICUBIC))


def _blur(img: np.ndarray, sigma: float = 0.6) -> np.ndarray:
    s = (sigma, sigma, 0)[: img.ndim]
    return _u8(ndimage.gaussian_filter(img.astype(np.float32), s))


def _tv_denoised(img: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    noisy = np.clip(img / 255.0 + np.random.default_rng(1).normal(0, 0.03, img.shape), 0, 1)
    axis = -1 if img.ndim == 3 else None
    return _u8(denoise_tv_chambolle(noisy, weight=0.05, channel_axis=axis) * 255)


NUISANCES = {"jpeg q75 + faint noise": _jpeg, "bicubic 2x round trip": _bicubic2,
             "gaussian blur 0.6": _blur, "tv denoiser on noisy input": _tv_denoised,
             "plain noise": lambda x: _noisy(x, 2.5)}


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()  # (400, 600, 3), non-square


def _box_iou(r: Region, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    ix = max(0, min(r.x + r.width, x + w) - max(r.x, x))
    iy = max(0, min(r.y + r.height, y + h) - max(r.y, y))
    inter = ix * iy
    return inter / (r.width * r.height + w * h - inter)


def _covers(r: Region, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    return r.x <= cx < r.x + r.width and r.y <= cy < r.y + r.height


def _brighten(img: np.ndarray, box: tuple[int, int, int, int], delta: float) -> np.ndarray:
    x, y, w, h = box
    out = img.astype(np.float64)
    out[y : y + h, x : x + w] += delta
    return _u8(out)


def test_identical_pair_has_a_zero_map_and_no_region(astronaut: np.ndarray) -> None:
    res = _finder().analyze(astronaut, astronaut.copy())[0]
    assert res.regions == []
    assert float(np.abs(res.map).max()) == 0.0


@pytest.mark.parametrize("nuisance", list(NUISANCES))
@pytest.mark.parametrize("photo", ["astronaut", "coffee", "camera"])
def test_nuisance_only_pair_has_no_region(nuisance: str, photo: str,
                                          request: pytest.FixtureRequest) -> None:
    ref = request.getfixturevalue(photo)
    cand = NUISANCES[nuisance](ref)
    assert _regions(ref, cand) == [], f"{photo} / {nuisance}"


def test_one_clear_edit_on_a_noisy_pair_gives_one_region_covering_it(coffee: np.ndarray) -> None:
    box = (260, 150, 40, 32)  # x, y, w, h
    cand = _noisy(_brighten(coffee, box, 30.0), 2.0)
    regions = _regions(coffee, cand)
    assert len(regions) == 1
    assert _box_iou(regions[0], box) >= 0.5
    assert regions[0].significance is not None and regions[0].significance > 0


def test_the_map_is_in_calibrated_units_on_a_nuisance_only_pair(coffee: np.ndarray) -> None:
    m = _finder().analyze(coffee, _jpeg(coffee), regions=False)[0].map
    # most of a nuisance-only map is within a few robust sigmas of nothing
    assert float(np.median(m)) < 2.0
    assert float(np.percentile(m, 99)) < RegionsConfig(threshold="hysteresis").high


def test_same_pair_at_twice_the_size_finds_the_same_spots(astronaut: np.ndarray) -> None:
    boxes = [(100, 300, 30, 30), (330, 120, 44, 36)]
    cand = astronaut
    for i, b in enumerate(boxes):
        cand = _brighten(cand, b, 25.0 * (-1) ** i)
    cand = _noisy(cand, 2.0)

    def up(x: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(x).resize((x.shape[1] * 2, x.shape[0] * 2),
                                                    Image.Resampling.BICUBIC))

    small, big = _regions(astronaut, cand), _regions(up(astronaut), up(cand))
    assert len(small) == len(boxes) == len(big)
    for b in boxes:
        assert any(_covers(r, b) for r in small)
        assert any(_covers(r, tuple(2 * v for v in b)) for r in big)


def test_a_hue_only_edit_at_constant_luminance_is_found(coffee: np.ndarray) -> None:
    # red and blue swapped in the most colourful 40x40 block: a hue change, the same mean level
    rb = np.abs(coffee[..., 0].astype(float) - coffee[..., 2])
    blocks = rb[:360, :560].reshape(9, 40, 14, 40).mean(axis=(1, 3))
    by, bx = np.unravel_index(int(blocks.argmax()), blocks.shape)
    x, y, w, h = int(bx) * 40, int(by) * 40, 40, 40
    cand = coffee.copy()
    cand[y : y + h, x : x + w] = coffee[y : y + h, x : x + w][..., ::-1]
    assert np.array_equal(cand.astype(int).sum(-1), coffee.astype(int).sum(-1))  # same R+G+B
    regions = _regions(coffee, _noisy(cand, 1.5))
    assert any(_covers(r, (x, y, w, h)) for r in regions)


def test_a_mirrored_patch_without_mean_shift_is_found(astronaut: np.ndarray) -> None:
    x, y, w, h = 180, 60, 40, 40  # textured part of the photo
    cand = astronaut.copy()
    cand[y : y + h, x : x + w] = cand[y : y + h, x : x + w][:, ::-1]
    before = astronaut[y : y + h, x : x + w].astype(float).mean()
    assert abs(cand[y : y + h, x : x + w].astype(float).mean() - before) < 1e-9
    regions = _regions(astronaut, _noisy(cand, 1.5))
    assert any(_covers(r, (x, y, w, h)) for r in regions)


def test_a_grayscale_pair_works(camera: np.ndarray) -> None:
    box = (300, 80, 36, 36)
    cand = _noisy(_brighten(camera, box, -35.0), 2.0)
    regions = _regions(camera, cand)
    assert len(regions) >= 1 and any(_covers(r, box) for r in regions)
    assert _regions(camera, _jpeg(camera)) == []


def test_a_16_bit_pair_works(camera: np.ndarray) -> None:
    ref = camera.astype(np.uint16) * 257
    rng = np.random.default_rng(3)
    cand = np.clip(ref + rng.normal(0, 400, ref.shape), 0, 65535)
    box = (120, 300, 40, 30)
    x, y, w, h = box
    cand[y : y + h, x : x + w] += 8000
    cand = np.clip(cand, 0, 65535).astype(np.uint16)
    regions = _regions(ref, cand)
    assert len(regions) == 1 and _box_iou(regions[0], box) >= 0.5
    assert _regions(ref, ref.copy()) == []


def test_a_tiny_image_works() -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cand = ref.copy()
    cand[1:4, 2:6] = 255 - cand[1:4, 2:6]
    for a, b in ((ref, ref.copy()), (ref, cand), (ref[:1, :1], cand[:1, :1])):
        res = _finder(regions={"threshold": "hysteresis", "min_area": 1}).analyze(
            a, b, metrics=False)[0]
        assert res.map.shape == a.shape[:2] and np.isfinite(res.map).all()
    assert _finder().analyze(ref, ref.copy(), metrics=False)[0].regions == []


def test_batched_maps_equal_single_pairs_and_runs_are_deterministic(
        astronaut: np.ndarray, camera: np.ndarray) -> None:
    a = torch.from_numpy(np.stack([astronaut, np.repeat(camera[..., None], 3, -1)])
                         ).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.stack([_jpeg(astronaut), _brighten(
        np.repeat(camera[..., None], 3, -1), (50, 50, 30, 30), 30)])).permute(0, 3, 1, 2) / 255
    b = b.float()
    with torch.inference_mode():
        both = significance_map(a, b)
        again = significance_map(a, b)
        one = [significance_map(a[i : i + 1], b[i : i + 1]) for i in range(2)]
    assert both.shape == (2, 1, 512, 512)
    assert torch.equal(both, again)
    for i in range(2):
        torch.testing.assert_close(both[i : i + 1], one[i], rtol=1e-5, atol=1e-5)


def test_heatmap_of_a_significance_map_uses_fixed_units(astronaut: np.ndarray) -> None:
    from core.render import heatmap

    f = _finder()
    assert f.config.render.vmin is not None and f.config.render.vmax is not None
    assert "sigma" in (f.config.render.label or "")
    clean = f.analyze(astronaut, _noisy(astronaut, 2.0), regions=False)[0].map
    edited = f.analyze(astronaut, _brighten(astronaut, (100, 100, 40, 40), 40), regions=False)
    img_clean = np.asarray(heatmap(clean, f.config.render))
    img_edit = np.asarray(heatmap(edited[0].map, f.config.render))
    black = np.asarray(heatmap(np.zeros((4, 4)), f.config.render))[0, 0]
    # a pair without a difference looks empty: nearly all of it the colormap's first colour
    assert (np.abs(img_clean.astype(int) - black).sum(-1) < 30).mean() > 0.95
    assert (np.abs(img_edit[100:140, 100:140].astype(int) - black).sum(-1) > 100).mean() > 0.5


def _reference_curve(key: torch.Tensor, val: torch.Tensor, bins: int, spread: bool,
                     tail: bool = False) -> torch.Tensor:
    """The robust per-bin curve written plainly (torch sorts, ``torch.quantile``, a per-pixel
    ``searchsorted``), on the same regular subsample as the strategy's."""
    n, k = val.shape[:2]
    kk = key.shape[1]
    step = max(1, int((key.shape[-2] * key.shape[-1] / SAMPLES) ** 0.5))
    ks = key[..., ::step, ::step].reshape(n, kk, -1)
    vs = val[..., ::step, ::step].reshape(n, k, -1)
    b = max(1, min(bins, ks.shape[-1] // 8))
    per = ks.shape[-1] // b
    order = ks.argsort(dim=-1)[..., : per * b].expand(n, k, -1)
    ksort = ks.expand(n, k, -1).gather(2, order).view(n, k, b, per)
    vsort = vs.gather(2, order).view(n, k, b, per)
    if spread:
        q = torch.quantile(vsort.abs(), torch.tensor([0.5, 0.75, 0.9]), dim=-1)
        stat = torch.maximum(q[0] * 1.4826, q[1] / 1.1503)
        if tail:
            stat = torch.maximum(stat, q[2] / 1.6449)
    else:
        stat = vsort.median(dim=-1).values
    centres = ksort.median(dim=-1).values.contiguous()
    flat = key.reshape(n, kk, -1).expand(n, k, -1).contiguous()
    hi = torch.searchsorted(centres, flat).clamp(1, b - 1)
    c0, c1 = centres.gather(2, hi - 1), centres.gather(2, hi)
    wgt = ((flat - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0.0, 1.0)
    s0, s1 = stat.gather(2, hi - 1), stat.gather(2, hi)
    return (s0 + (s1 - s0) * wgt).view(val.shape)


@pytest.mark.parametrize("channels", [(1, 3), (3, 3), (1, 1)])
@pytest.mark.parametrize("spread,tail", [(False, False), (True, False), (True, True)])
def test_binned_curves_equal_a_plain_reference(channels: tuple[int, int], spread: bool,
                                               tail: bool) -> None:
    from core.significance import BinnedCurves

    kk, k = channels
    gen = torch.Generator().manual_seed(7)
    key = torch.randn(2, kk, 300, 260, generator=gen) * 2.0  # continuous: no ties
    # residue whose spread and offset grow with the key (as codec residue with texture)
    val = (torch.randn(2, k, 300, 260, generator=gen) * (0.01 + 0.02 * key.sigmoid())
           + 0.005 * key)
    fast = BinnedCurves(key, 16).curve(val, spread=spread, tail=tail)
    ref = _reference_curve(key, val, 16, spread, tail)
    scale = float(ref.abs().max())
    torch.testing.assert_close(fast, ref, rtol=0, atol=2e-3 * scale)
    assert float((fast - ref).abs().mean()) < 2e-4 * scale


def test_pool2_equals_avg_pool_with_ceil_mode() -> None:
    from core.numeric import argsort_last, pool2, sort_last

    gen = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 7, 5), (2, 1, 6, 9), (1, 2, 64, 64), (1, 1, 2, 3)]:
        x = torch.rand(shape, generator=gen)
        ref = torch.nn.functional.avg_pool2d(x, 2, ceil_mode=True)
        torch.testing.assert_close(pool2(x), ref, rtol=0, atol=1e-6)
    x = torch.rand(3, 4, 500, generator=gen)
    assert torch.equal(sort_last(x), x.sort(dim=-1).values)
    assert torch.equal(x.gather(-1, argsort_last(x)), x.sort(dim=-1).values)


def test_linear_filter_fit_recovers_an_image_wide_blur_despite_local_edits(
        astronaut: np.ndarray) -> None:
    """The fitted kernel equals the one that made the candidate (scipy's correlate, nearest
    borders), though a tenth of the image was edited; the prediction matches scipy's too."""
    from core.significance import apply_linear_filter, fit_linear_filter

    a = astronaut[:256, :256].astype(np.float32) / 255.0
    kernel = np.outer([1, 4, 6, 4, 1], [1, 2, 3, 2, 1]).astype(np.float32)
    kernel /= kernel.sum() / 0.9  # a blur with gain 0.9 and an offset of 0.05
    b = np.stack([ndimage.correlate(a[..., c], kernel, mode="nearest") for c in range(3)], -1)
    b += 0.05
    b[40:120, 60:140] = 0.8  # local edits: ~10 % of the pixels, not explained by the filter
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].contiguous()
    beta = fit_linear_filter(ta, tb, radius=2)  # the default: 3 reweightings
    assert beta.shape == (1, 3, 26)
    exact = fit_linear_filter(ta, tb, radius=2, iters=10)  # converged: the edits carry no weight
    for c in range(3):
        np.testing.assert_allclose(beta[0, c, :25].reshape(5, 5).numpy(), kernel, atol=4e-3)
        np.testing.assert_allclose(exact[0, c, :25].reshape(5, 5).numpy(), kernel, atol=1e-5)
        assert abs(float(exact[0, c, 25]) - 0.05) < 1e-5
    pred = apply_linear_filter(ta, beta)[0].permute(1, 2, 0).numpy()
    taps = beta[0, :, :25].reshape(3, 5, 5).numpy()
    want = np.stack([ndimage.correlate(a[..., c], taps[c], mode="nearest") for c in range(3)],
                    -1) + beta[0, :, 25].numpy()
    np.testing.assert_allclose(pred, want, atol=1e-5)


def test_linear_filter_in_bands_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.numeric
    from core.significance import apply_linear_filter

    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 203, 171, generator=gen)
    beta = torch.randn(2, 3, 50, generator=gen)  # radius 3 kernels (49 taps) and offsets
    whole = apply_linear_filter(a, beta)
    monkeypatch.setattr(core.numeric, "BAND_ELEMENTS", 64)  # bands of a few rows
    torch.testing.assert_close(apply_linear_filter(a, beta), whole, rtol=0, atol=1e-5)


def test_the_filter_keeps_a_blurred_candidate_quiet_but_finds_a_local_sharpening(
        astronaut: np.ndarray) -> None:
    """An image-wide blur is explained (no region); a local sharpening under it is not."""
    blurred = _blur(astronaut, 1.0)
    assert _regions(astronaut, blurred) == []
    box = (300, 180, 48, 48)
    x, y, w, h = box
    sharp = blurred.astype(np.float64)
    patch = sharp[y : y + h, x : x + w]
    sharp[y : y + h, x : x + w] = patch + 1.5 * (patch - ndimage.gaussian_filter(patch, (2, 2, 0)))
    regions = _regions(astronaut, _u8(sharp))
    assert regions and _box_iou(regions[0], box) > 0.3
    assert all(_box_iou(r, box) > 0 for r in regions)


def test_linear_filter_on_a_constant_or_tiny_image_is_finite() -> None:
    """No kernel can be told apart on a constant reference (a singular fit) or a 3x3 image:
    the fit falls back to a smaller kernel or the identity, never NaN or an exception."""
    from core.significance import fit_linear_filter

    flat = torch.full((1, 3, 64, 64), 0.5)
    edited = flat.clone()
    edited[..., 20:30, 20:30] = 0.9
    beta = fit_linear_filter(flat, edited)
    assert beta.isfinite().all()
    m = significance_map(flat, edited)[0, 0]
    assert float(m[22:28, 22:28].min()) > float(m[40:, 40:].max()) + 10
    tiny = fit_linear_filter(torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3))
    assert tiny.shape == (2, 1, 2) and tiny.isfinite().all()  # a 1x1 kernel and an offset
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\) and \(1, 1, 8, 8\)"):
        fit_linear_filter(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8))  # no broadcasting


def test_an_identity_fit_skips_the_filter_and_equals_the_plain_difference(
        astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edits-only pair: the plain difference fits as well as any kernel, so the fit is the
    identity, the filter is not applied, and the map is exactly the kernel-0 (plain) map."""
    import core.significance as sig

    cand = astronaut.copy()
    cand[100:160, 200:260] = (30, 200, 40)
    ref_t = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float().div(255).contiguous()
    cand_t = torch.from_numpy(cand).permute(2, 0, 1)[None].float().div(255).contiguous()
    calls: list[int] = []
    real = sig.apply_linear_filter
    monkeypatch.setattr(sig, "apply_linear_filter", lambda a, b: calls.append(1) or real(a, b))
    filtered = significance_map(ref_t, cand_t)
    assert calls == []
    torch.testing.assert_close(filtered, significance_map(ref_t, cand_t, kernel=0), rtol=0,
                               atol=0)
    blurred = torch.from_numpy(_blur(cand, 1.0)).permute(2, 0, 1)[None].float().div(255)
    significance_map(ref_t, blurred.contiguous())  # a blur is a filter: applied
    assert calls == [1]


@pytest.mark.parametrize("source", [(350, 100), (400, 400), (200, 50)])
def test_a_pasted_patch_is_one_region_covering_it(astronaut: np.ndarray,
                                                  source: tuple[int, int]) -> None:
    """A 60x60 patch pasted from elsewhere: its difference varies tenfold inside it, yet it is
    reported once, with a box on the patch (not a box on its upper part and slivers)."""
    sy, sx = source
    cand = astronaut.copy()
    cand[100:160, 300:360] = astronaut[sy : sy + 60, sx : sx + 60]
    regions = _regions(astronaut, cand)
    assert len(regions) == 1
    assert _box_iou(regions[0], (300, 100, 60, 60)) > 0.85


@pytest.mark.parametrize("source", [(350, 100), (400, 400), (200, 50)])
def test_a_strong_edit_on_an_exact_pair_reads_evenly(astronaut: np.ndarray,
                                                     source: tuple[int, int]) -> None:
    """Nothing but a pasted patch differs: the patch filled a tenth of some texture bins, whose
    tails then set the sigma there, so its map varied ~100-fold inside (parts of it cut away
    as 'weak beside a strong spot'); the tail is capped where the bulk is exact."""
    sy, sx = source
    cand = astronaut.copy()
    cand[100:160, 300:360] = astronaut[sy : sy + 60, sx : sx + 60]

    def to(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(2, 0, 1)[None].float().div(255).contiguous()

    m = significance_map(to(astronaut), to(cand))[0, 0].numpy()
    inside = m[104:156, 304:356]  # (the patch less its outermost pixels)
    assert np.percentile(inside, 10) > inside.max() / 20
    outside = m.copy()
    outside[92:168, 292:368] = 0
    assert outside.max() == 0  # an exact pair: nothing elsewhere


@pytest.mark.parametrize("side", [40, 200])
def test_a_large_solid_fill_is_found_whole_not_as_its_outline(astronaut: np.ndarray,
                                                              side: int) -> None:
    """A solid colour over a textured area is flat in the candidate: its own pixels used to
    make up the flattest bins' noise, so a 200x200 fill stood out only at its outline (19%
    of it above the core threshold, a ring of an area for a mask). Left out of the noise
    fit, the whole fill stands out, and its region's area is the fill's."""
    cand = astronaut.copy()
    cand[100 : 100 + side, 150 : 150 + side] = (255, 0, 0)
    m = Finder(device="cpu").run(astronaut, cand)
    inside = m[100 : 100 + side, 150 : 150 + side]
    assert (inside > RegionsConfig().high).mean() > 0.95
    [region] = _regions(astronaut, cand)
    assert _box_iou(region, (150, 100, side, side)) > 0.9
    assert region.area >= 0.95 * side * side


def test_binned_curves_leave_excluded_pixels_out_of_the_fit() -> None:
    """Excluded pixels are looked up on the curve but do not shape it: the same curve as
    fitting the other pixels alone."""
    from core.significance import BinnedCurves

    gen = torch.Generator().manual_seed(3)
    key = torch.randn(1, 1, 128, 128, generator=gen)
    val = torch.randn(1, 1, 128, 128, generator=gen) * 0.01
    exclude = torch.zeros_like(key, dtype=torch.bool)
    exclude[..., :64, :] = True
    val[..., :64, :] += 5.0  # an edit: would dominate every bin it is part of
    fitted = BinnedCurves(key, 8, exclude).curve(val, spread=True)
    assert float(fitted.max()) < 0.05  # the edit's residue is not taken for noise
    plain = BinnedCurves(key, 8).curve(val, spread=True)
    assert float(plain.max()) > 1.0


@pytest.mark.parametrize("looked_up_first", [False, True])
@pytest.mark.parametrize("excluded", [False, True])
def test_a_binned_curves_channel_equals_binning_that_channel_alone(looked_up_first: bool,
                                                                   excluded: bool) -> None:
    """The first pyramid level reuses the noise fit's bins of its first channel: the curves
    must be exactly those of binning that channel on its own."""
    from core.significance import BinnedCurves

    gen = torch.Generator().manual_seed(5)
    key = torch.randn(1, 3, 150, 130, generator=gen)
    exclude = torch.rand(1, 1, 150, 130, generator=gen) > 0.8 if excluded else None
    val = torch.randn(1, 3, 150, 130, generator=gen) * (1.0 + key.abs())
    whole = BinnedCurves(key, 16, exclude)
    if looked_up_first:  # the whole key's cells already worked out
        whole.curve(val, spread=True)
    for i in range(3):
        alone = BinnedCurves(key[:, i : i + 1].clone(), 16, exclude)
        for v in (val, val[:, i : i + 1]):
            for spread, tail in [(False, False), (True, False), (True, True)]:
                assert torch.equal(whole.channel(i).curve(v, spread, tail),
                                   alone.curve(v, spread, tail))


def test_curves_with_a_flag_per_channel_equal_each_curve_asked_for_alone() -> None:
    """A level's mean sigmas and energy median come from one pass: each channel exactly
    as its own curve."""
    from core.significance import BinnedCurves

    gen = torch.Generator().manual_seed(11)
    key = torch.randn(1, 1, 120, 140, generator=gen)
    val = torch.randn(1, 4, 120, 140, generator=gen) * (0.5 + key.sigmoid()) + 0.3 * key
    fit = BinnedCurves(key, 16)
    flags = (True, False, True, False)
    for tail in (False, True):
        both = fit.curve(val, spread=flags, tail=tail)
        for i, spread in enumerate(flags):
            alone = fit.curve(val[:, i : i + 1], spread=spread, tail=tail)
            assert torch.equal(both[:, i : i + 1], alone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_map_on_cuda_matches_the_cpu_map() -> None:
    """The accelerator path (torch sorts and statistics instead of NumPy's) gives the map
    the CPU gives, up to float rounding."""
    from skimage import data

    ref = torch.from_numpy(data.astronaut()[:256, :256]).permute(2, 0, 1)[None].float() / 255
    cand = ref.clone()
    cand[..., 100:130, 80:120] *= 1.1
    cpu = significance_map(ref, cand)
    gpu = significance_map(ref.cuda(), cand.cuda()).cpu()
    diff = (gpu - cpu).abs().flatten()
    assert float(diff.quantile(0.99)) < 0.05  # a tie sorted otherwise may move a pixel or two
    assert float(cpu.max()) > 13 and abs(float(gpu.max()) / float(cpu.max()) - 1) < 0.01


def test_grey_stored_as_rgb_is_as_significant_as_a_grey_file() -> None:
    """A faint edit on a grey photo: the same map whether the files are L or RGB with three
    equal channels (three channels read ~sqrt(3) lower and could miss it); a tint on the
    grey candidate still counts as colour."""
    from skimage import data

    from core import Finder

    g = data.camera()[:256, :256]
    c = g.copy()
    c[100:140, 100:140] = np.clip(c[100:140, 100:140].astype(int) + 1, 0, 255)
    finder = Finder()
    grey = finder.analyze(g, c, metrics=False)[0]
    rgb = finder.analyze(np.stack([g] * 3, -1), np.stack([c] * 3, -1), metrics=False)[0]
    np.testing.assert_array_equal(grey.map, rgb.map)
    assert [r.to_dict() for r in grey.regions] == [r.to_dict() for r in rgb.regions]
    assert len(grey.regions) == 1
    tinted = np.stack([g] * 3, -1)
    tinted[100:140, 100:140, 0] = np.clip(tinted[100:140, 100:140, 0].astype(int) + 6, 0, 255)
    found = finder.analyze(np.stack([g] * 3, -1), tinted, metrics=False)[0].regions
    assert any(r.x <= 120 <= r.x + r.width and r.y <= 120 <= r.y + r.height for r in found)


def test_an_odd_sized_blurred_photo_gets_no_false_spot_along_its_borders(coffee: np.ndarray
                                                                        ) -> None:
    # the candidate's last row was blurred with its neighbour: dropping the odd row made a
    # false spot along the bottom (12.9-19.6 sigmas); completed by reflection and with each
    # border band's residue measured on the band, the borders stay below the regions' core
    def to(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float() / 255

    high = RegionsConfig(threshold="hysteresis").high
    for h, w in ((341, 512), (101, 131), (400, 599)):
        ref = coffee[:h, :w]
        for sigma in (1.0, 1.5):
            cand = ndimage.gaussian_filter(ref.astype(np.float32), (sigma, sigma, 0),
                                           mode="reflect")
            cand = np.clip(cand.round(), 0, 255).astype(np.uint8)
            m = significance_map(to(ref), to(cand))[0, 0].numpy()
            assert m.shape == (h, w)
            edges = max(m[-6:].max(), m[:, -6:].max(), m[:6].max(), m[:, :6].max())
            assert edges < high * 0.75, (h, w, sigma, edges)


def test_block_median_matches_a_per_block_loop() -> None:
    """The tone curve's median over blocks, cross-checked against plain per-group medians."""
    from core.significance import _block_median

    rng = np.random.default_rng(3)
    v = rng.normal(size=(1, 2, 5, 200)).astype(np.float32)
    block = rng.integers(0, 16, size=(1, 1, 5, 200))
    block[0, 0, 4] = 0  # one bin whose members all lie in one block
    block[0, 0, 3, :190] = rng.integers(0, 2, size=190)  # few members outside blocks 0-1
    got = _block_median(v, block, 16)
    for c in range(2):
        for j in range(5):
            meds = [np.sort(v[0, c, j][block[0, 0, j] == g])[(k - 1) // 2]
                    for g in range(16) if (k := int((block[0, 0, j] == g).sum())) >= 4]
            expect = np.sort(meds)[(len(meds) - 1) // 2]
            assert got[0, c, j] == pytest.approx(expect, abs=1e-5), (c, j)


@pytest.mark.parametrize("crop, box", [
    (np.s_[:, :], (89, 345, 164, 420)),  # a quarter of coffee: a 256² red square
    (np.s_[37:293, 28:284], (8, 72, 39, 103)),  # a 64² square on a 256² crop
    (np.s_[150:278, 200:328], (42, 84, 42, 84)),  # a 42² square on a 128² crop
])
def test_a_large_fill_or_a_small_image_gives_one_region_on_the_edit(
        coffee: np.ndarray, astronaut: np.ndarray, crop: Any, box: tuple[int, ...]) -> None:
    """A large share of the image edited: it must not become the image's tone (regions on
    unchanged pixels, the edit read at 2 sigma), nor fill the flattest noise bins."""
    photo = coffee if box[3] - box[2] == 256 else astronaut
    a = np.ascontiguousarray(photo[crop])
    y0, y1, x0, x1 = box
    c = a.copy()
    c[y0:y1, x0:x1] = (255, 0, 0)
    regions = _regions(a, c)
    assert len(regions) == 1
    assert _box_iou(regions[0], (x0, y0, x1 - x0, y1 - y0)) > 0.8


@pytest.mark.parametrize("side", ["top", "left", "bottom", "right"])
def test_an_edit_touching_the_border_gets_a_box_reaching_it(astronaut: np.ndarray,
                                                            side: str) -> None:
    """Each border band's own sigma leaves out strong edits on it (and their spill at coarse
    levels): a fill along 12% of a side once lowered the map there and the box stopped 4 px
    short of the edge, short of where an annotation should start."""
    h, w = astronaut.shape[:2]
    x, y, bw, bh = {"top": (200, 0, 60, 40), "left": (0, 200, 40, 60),
                    "bottom": (200, h - 40, 60, 40), "right": (w - 40, 200, 40, 60)}[side]
    cand = astronaut.copy()
    cand[y : y + bh, x : x + bw] = (255, 0, 0)
    (region,) = _regions(astronaut, cand)
    assert _box_iou(region, (x, y, bw, bh)) > 0.85
    assert {"top": region.y == 0, "left": region.x == 0,
            "bottom": region.y + region.height == h, "right": region.x + region.width == w}[side]


@pytest.mark.parametrize("rows", [np.s_[150:162], np.s_[100:101], np.s_[150:174]])
def test_a_thin_strip_with_one_edit_gets_one_region_on_it(astronaut: np.ndarray,
                                                          rows: Any) -> None:
    """An exact pair 1-24 px high: the tone curve, bent by the edit's share of a luminance
    bin, moved unchanged pixels (a false region at 28 sigmas); it is kept only where it fits
    better than none."""
    ref = np.ascontiguousarray(astronaut[rows])
    cand = ref.copy()
    cand[:, 300:360] = (255, 0, 0)
    (region,) = _regions(ref, cand)
    assert _box_iou(region, (300, 0, 60, ref.shape[0])) > 0.85


def test_the_torch_branch_of_the_bin_statistics_matches_numpys() -> None:
    """The CUDA path runs _bin_stats on torch tensors (no GPU here: the same branch on the
    CPU): tails, the floor cap, and mixed spread flags agree with the NumPy branch."""
    from core.significance import _bin_stats

    rng = np.random.default_rng(5)
    v = rng.normal(size=(2, 3, 4, 64)).astype(np.float32)
    v[0, 1, 2, :56] = 0.0  # a bin whose bulk is exact: the cap applies
    for flags in ((True, True, True), (True, False, True), (False, False, False)):
        for tail in (False, True):
            want = _bin_stats(v, flags, tail, np, cap=0.25)
            got = _bin_stats(torch.from_numpy(v), flags, tail, torch, cap=0.25)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
