"""Image-wide nuisances for the quality benchmark: changes a user does not want shown.

Codecs (JPEG, WebP, AVIF when Pillow has it), resampling round trips (down then up by 2x or 3x
with one filter), scikit-image denoisers applied to a noisy copy, Gaussian blur and noise, each
at several strengths. Families are split in two fixed halves (``TUNING_FAMILIES`` and
``HELDOUT_FAMILIES``): defaults are chosen on the first, the README reports the second.
Every nuisance maps uint8 (H, W, C), C = 1 or 3, to uint8 of the same shape.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, features
from scipy import ndimage
from skimage import restoration

__all__ = [
    "FAMILIES",
    "HELDOUT_FAMILIES",
    "NUISANCES",
    "TUNING_FAMILIES",
    "Nuisance",
    "avif_available",
    "nuisances_of",
]

NuisanceFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Nuisance:
    """One nuisance at one strength: ``family`` names the split unit, ``name`` is unique."""

    name: str
    family: str
    apply: NuisanceFn


def avif_available() -> bool:
    """True when this Pillow can write and read AVIF."""
    return bool(features.check("avif"))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(pil.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def _codec(fmt: str, quality: int) -> NuisanceFn:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        buf = io.BytesIO()
        _pil(img).save(buf, fmt, quality=quality)
        buf.seek(0)
        return _from_pil(Image.open(buf), img.shape[-1])
    return apply


def _resample(filt: Image.Resampling, factor: int) -> NuisanceFn:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pil = _pil(img)
        w, h = pil.size
        small = pil.resize((max(1, round(w / factor)), max(1, round(h / factor))), filt)
        return _from_pil(small.resize((w, h), filt), img.shape[-1])
    return apply


def _noisy(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Float [0, 1] copy with Gaussian noise of ``sigma`` (clipped)."""
    x = img.astype(np.float32) / 255.0
    return np.clip(x + rng.normal(0.0, sigma, size=x.shape).astype(np.float32), 0.0, 1.0)


def _denoised(kind: str, noise: float) -> NuisanceFn:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _noisy(img, noise, rng)
        axis = -1 if img.shape[-1] == 3 else None
        x2 = x if axis is not None else x[..., 0]
        if kind == "bilateral":
            out = restoration.denoise_bilateral(x2, sigma_color=2 * noise, sigma_spatial=1.5,
                                                channel_axis=axis)
        elif kind == "tv":
            out = restoration.denoise_tv_chambolle(x2, weight=1.5 * noise, channel_axis=axis)
        elif kind == "wavelet":
            out = restoration.denoise_wavelet(x2, sigma=noise, channel_axis=axis,
                                              rescale_sigma=True)
        else:  # non-local means
            out = restoration.denoise_nl_means(x2, h=0.8 * noise, sigma=noise, patch_size=5,
                                               patch_distance=6, fast_mode=True,
                                               channel_axis=axis)
        out = np.asarray(out, dtype=np.float32).reshape(img.shape)
        return _u8(out * 255.0)
    return apply


def _blur(sigma: float) -> NuisanceFn:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _u8(ndimage.gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0),
                                           mode="reflect"))
    return apply


def _noise(sigma: float) -> NuisanceFn:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _u8(_noisy(img, sigma, rng) * 255.0)
    return apply


R = Image.Resampling


def _families() -> dict[str, list[Nuisance]]:
    spec: dict[str, list[tuple[str, NuisanceFn]]] = {
        "jpeg": [("jpeg q80", _codec("JPEG", 80)), ("jpeg q50", _codec("JPEG", 50))],
        "webp": [("webp q80", _codec("WEBP", 80)), ("webp q50", _codec("WEBP", 50))],
        "avif": [("avif q70", _codec("AVIF", 70)), ("avif q40", _codec("AVIF", 40))],
        "bicubic": [(f"bicubic {f}x", _resample(R.BICUBIC, f)) for f in (2, 3)],
        "nearest": [(f"nearest {f}x", _resample(R.NEAREST, f)) for f in (2, 3)],
        "lanczos": [(f"lanczos {f}x", _resample(R.LANCZOS, f)) for f in (2, 3)],
        **{kind: [(f"{kind} of noise {s:g}", _denoised(kind, s)) for s in (0.03, 0.06)]
           for kind in ("bilateral", "tv", "wavelet", "nlmeans")},
        "blur": [(f"blur {s:g}", _blur(s)) for s in (0.6, 1.0, 1.5)],
        "noise": [(f"noise {s:g}", _noise(s)) for s in (0.01, 0.02, 0.035)],
    }
    if not avif_available():
        del spec["avif"]
    return {fam: [Nuisance(n, fam, fn) for n, fn in items] for fam, items in spec.items()}


#: family -> its nuisances, mildest first.
FAMILIES: dict[str, list[Nuisance]] = _families()
#: Fixed split of the families: parameters are chosen on TUNING_FAMILIES only.
TUNING_FAMILIES: tuple[str, ...] = ("jpeg", "bicubic", "nearest", "bilateral", "tv", "blur")
HELDOUT_FAMILIES: tuple[str, ...] = tuple(
    f for f in ("webp", "avif", "lanczos", "wavelet", "nlmeans", "noise") if f in FAMILIES)
NUISANCES: dict[str, Nuisance] = {n.name: n for items in FAMILIES.values() for n in items}


def nuisances_of(families: tuple[str, ...], quick: bool = False) -> list[Nuisance]:
    """The nuisances of ``families`` (every strength; with ``quick`` the strongest only)."""
    return [n for f in families for n in (FAMILIES[f][-1:] if quick else FAMILIES[f])]
