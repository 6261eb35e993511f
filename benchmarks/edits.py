"""Synthetic-edit dataset for the quality benchmark: photos, small local edits, a nuisance.

Each photo (scikit-image's offline set, longer side 512 px) gets about seven small local edits of
different kinds (8-100 px, strengths from clear down to the edge of visibility) at disjoint
spots. The candidate is the edited photo after one image-wide nuisance (benchmarks/nuisances.py);
for every nuisance there is also a nuisance-only pair (the unedited photo after the nuisance).
Ground truth per edit: its changed pixels (uint8 values differ by more than ``TRUTH_EPS`` before
the nuisance) and their tight box. Photos are split in two fixed halves, ``TUNING_PHOTOS`` and
``HELDOUT_PHOTOS``. Everything is seeded by names, not by order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage import data

from benchmarks.nuisances import Nuisance

__all__ = [
    "COLOUR_KINDS",
    "EDITS_PER_IMAGE",
    "EDIT_KINDS",
    "HELDOUT_PHOTOS",
    "PHOTOS",
    "TRUTH_EPS",
    "TUNING_PHOTOS",
    "Edit",
    "EditPair",
    "apply_edits",
    "load_photo",
    "make_pairs",
    "rng_for",
]


def _crop(img: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    return img[y : y + size, x : x + size]


# name -> loader; photos shipped with scikit-image (no download needed).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,
    "coffee": data.coffee,
    "camera": data.camera,
    "immunohistochemistry": data.immunohistochemistry,
    "brick": data.brick,
    "clock": data.clock,
    "gravel": data.gravel,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
    "chelsea": data.chelsea,
    "rocket": data.rocket,
    "hubble_deep_field": lambda: _crop(data.hubble_deep_field(), 180, 244, 512),
    "coins": data.coins,
    "cell": data.cell,
    "grass": data.grass,
    "moon": data.moon,
    "retina": data.retina,
}
#: Fixed split: defaults and parameters are chosen on TUNING_PHOTOS only. Beyond the four named
#: in issue 11 for each half, the other photos alternate alphabetically (brick -> tuning,
#: cell -> held-out, clock -> tuning, ...). ``cat`` is chelsea again and stays out.
TUNING_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "camera", "immunohistochemistry", "brick", "clock", "gravel",
    "motorcycle")
HELDOUT_PHOTOS: tuple[str, ...] = (
    "chelsea", "rocket", "hubble_deep_field", "coins", "cell", "grass", "moon", "retina")

EDIT_KINDS = ("brightness", "tint", "hue", "paste", "mirror", "swap", "blur", "remove", "blob",
              "text", "contrast", "sharpen", "line")
COLOUR_KINDS = {"tint", "hue"}  # colour photos only
EDITS_PER_IMAGE = 7
TRUTH_EPS = 1  # uint8 levels: a pixel is changed when some channel moved by more than this
GAP = 10  # pixels kept free between edit boxes and from the image border
SIZE_RANGE = (8, 100)  # placement box sides, log-uniform


@dataclass(frozen=True)
class Edit:
    """One local edit: its kind, strength (0 faint .. 1 clear), tight box (x, y, width, height)
    of its changed pixels, those pixels as a bool (H, W) mask, and the box it was placed in
    (x, y, width, height; it changed nothing outside)."""

    kind: str
    strength: float
    box: tuple[int, int, int, int]
    mask: np.ndarray
    placed: tuple[int, int, int, int]


@dataclass(frozen=True)
class EditPair:
    """A benchmark pair. ``edits`` is empty for a nuisance-only pair."""

    image: str
    nuisance: str
    family: str
    reference: np.ndarray  # uint8 (H, W, C), C = 1 or 3
    edited: np.ndarray  # uint8, the edits only (the reference for a nuisance-only pair)
    candidate: np.ndarray  # uint8, edited then nuisance
    truth: np.ndarray  # bool (H, W): pixels any edit changed
    edits: tuple[Edit, ...]

    @property
    def box_truth(self) -> np.ndarray:
        """bool (H, W): every pixel inside some edit's box."""
        out = np.zeros_like(self.truth)
        for e in self.edits:
            x, y, w, h = e.box
            out[y : y + h, x : x + w] = True
        return out


def rng_for(seed: int, *names: str | int) -> np.random.Generator:
    """A generator keyed by the seed and names (crc32), independent of iteration order."""
    keys = [n if isinstance(n, int) else zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng([seed, *keys])


def load_photo(name: str, size: int = 512) -> np.ndarray:
    """The named photo as uint8 (H, W, C), C = 1 or 3, resized so its longer side is ``size``."""
    img = np.asarray(PHOTOS[name]())
    pil = Image.fromarray(img if img.ndim == 2 else img[..., :3])
    scale = size / max(pil.size)
    if scale != 1:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)),
                         Image.Resampling.LANCZOS)
    out = np.asarray(pil, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


# -- local edits ----------------------------------------------------------------------------
# An edit takes (image float32 (H, W, C) in [0, 1], box (y, x, h, w), rng, strength in [0, 1])
# and returns the new content of the box, float (h, w, C), or None where the spot does not suit
# it. Paste and swap also read elsewhere in the image; swap writes a second box (see below).

Box = tuple[int, int, int, int]  # y, x, h, w


def _logu(lo: float, hi: float, s: float) -> float:
    """Log-interpolate: s = 0 -> lo (faint), s = 1 -> hi (clear)."""
    return float(lo * (hi / lo) ** s)


def _sign(rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]))


def _patch(img: np.ndarray, box: Box) -> np.ndarray:
    y, x, h, w = box
    return img[y : y + h, x : x + w]


def _ellipse(h: int, w: int, feather: float = 0.15) -> np.ndarray:
    """Weights (h, w, 1): 1 inside an inscribed ellipse, fading to 0 over its outer rim."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2)
    return np.clip((1.0 - r) / feather, 0.0, 1.0).astype(np.float32)[..., None]


def _luma(p: np.ndarray) -> np.ndarray:
    return p.mean(axis=-1)


def _textured(p: np.ndarray, min_std: float = 0.03) -> bool:
    return float(_luma(p).std()) >= min_std


def _brightness(img, box, rng, s):
    p = _patch(img, box)
    delta = _sign(rng) * _logu(0.025, 0.15, s)
    if not 0.1 < float(_luma(p).mean()) + delta < 0.9:
        delta = -delta
    return p + delta * _ellipse(*p.shape[:2])


def _tint(img, box, rng, s):
    p = _patch(img, box)
    direction = rng.normal(size=3).astype(np.float32)
    direction /= np.abs(direction).max()
    return p + _logu(0.03, 0.15, s) * direction * _ellipse(*p.shape[:2])


_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                np.float32)


def _hue(img, box, rng, s):
    """Rotate the chroma (Cb, Cr) at constant luma Y: a change of hue only."""
    p = _patch(img, box)
    ycc = p @ _YCC.T
    if float(np.hypot(ycc[..., 1], ycc[..., 2]).mean()) < 0.04:
        return None  # greyish spot: no hue to turn
    theta = np.deg2rad(_sign(rng) * _logu(15.0, 90.0, s))
    c, sn = np.cos(theta), np.sin(theta)
    cb, cr = ycc[..., 1].copy(), ycc[..., 2].copy()
    ycc[..., 1], ycc[..., 2] = c * cb - sn * cr, sn * cb + c * cr
    turned = ycc @ np.linalg.inv(_YCC).T
    wgt = _ellipse(*p.shape[:2])
    return p + (turned - p) * wgt


def _paste(img, box, rng, s):
    y, x, h, w = box
    H, W = img.shape[:2]
    for _ in range(30):
        sy, sx = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        if abs(sy - y) >= h + GAP or abs(sx - x) >= w + GAP:
            src = _patch(img, (sy, sx, h, w))
            if np.abs(src - _patch(img, box)).mean() > 0.03:
                return src.copy()
    return None


def _mirror(img, box, rng, s):
    p = _patch(img, box)
    if not _textured(p):
        return None
    return p[:, ::-1].copy() if rng.random() < 0.5 else p[::-1].copy()


def _blur(img, box, rng, s):
    y, x, h, w = box
    if not _textured(_patch(img, box)):
        return None
    pad = 12  # blur with the real surroundings, write inside the box only
    y0, x0 = max(0, y - pad), max(0, x - pad)
    big = img[y0 : y + h + pad, x0 : x + w + pad]
    sigma = _logu(1.0, 4.0, s)
    blurred = ndimage.gaussian_filter(big, sigma=(sigma, sigma, 0), mode="reflect")
    inner = blurred[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
    p = _patch(img, box)
    return p + (inner - p) * _ellipse(h, w)


def _remove(img, box, rng, s):
    """Replace a detail by a smooth fill from its surroundings (normalised convolution)."""
    y, x, h, w = box
    p = _patch(img, box)
    if not _textured(p, 0.04):
        return None
    pad = max(6, min(h, w) // 3)
    y0, x0 = max(0, y - pad), max(0, x - pad)
    big = img[y0 : y + h + pad, x0 : x + w + pad]
    known = np.ones(big.shape[:2], np.float32)
    hole = _ellipse(h, w, feather=0.01)[..., 0] > 0
    known[y - y0 : y - y0 + h, x - x0 : x - x0 + w][hole] = 0.0
    sig = max(h, w) / 3
    num = ndimage.gaussian_filter(big * known[..., None], sigma=(sig, sig, 0))
    den = ndimage.gaussian_filter(known, sigma=sig)[..., None]
    fill = (num / np.maximum(den, 1e-6))[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
    fill = fill + rng.normal(0.0, 0.006, size=fill.shape).astype(np.float32)
    return p + (fill - p) * _ellipse(h, w, feather=0.2)


def _blob(img, box, rng, s):
    """A soft round spot, lighter or darker (coloured on colour photos)."""
    p = _patch(img, box)
    h, w = p.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy + 0.5 - h / 2) / (h / 4)) ** 2 + ((xx + 0.5 - w / 2) / (w / 4)) ** 2
    bump = np.exp(-r2 / 2).astype(np.float32)[..., None]
    tone = np.ones(p.shape[-1], np.float32)
    if p.shape[-1] == 3 and rng.random() < 0.5:
        tone = rng.uniform(0.2, 1.0, 3).astype(np.float32)
    amp = _logu(0.04, 0.4, s)
    sign = -1.0 if float(_luma(p).mean()) > 0.5 else 1.0
    return p + sign * amp * tone * bump


def _text(img, box, rng, s):
    p = _patch(img, box)
    h, w = p.shape[:2]
    if min(h, w) < 10:
        return None
    canvas = Image.new("L", (w, h), 0)
    chars = "ABCDEFGHKMNPRSTXYZ23456789"
    n = max(1, min(4, int(w / (0.7 * min(h, 40)))))
    text = "".join(rng.choice(list(chars), size=n))
    font = ImageFont.load_default(size=max(8, int(min(h, 40) * 0.8)))
    ImageDraw.Draw(canvas).text((w / 2, h / 2), text, fill=255, font=font, anchor="mm")
    alpha = (np.asarray(canvas, np.float32) / 255.0)[..., None] * _logu(0.12, 1.0, s)
    target = np.full(p.shape[-1], 0.05 if float(_luma(p).mean()) > 0.5 else 0.95, np.float32)
    return p + (target - p) * alpha


def _contrast(img, box, rng, s):
    p = _patch(img, box)
    if not _textured(p):
        return None
    factor = 1.0 + _sign(rng) * _logu(0.15, 0.6, s)
    mean = p.mean(axis=(0, 1), keepdims=True)
    return p + ((mean + (p - mean) * factor) - p) * _ellipse(*p.shape[:2])


def _sharpen(img, box, rng, s):
    y, x, h, w = box
    p = _patch(img, box)
    if not _textured(p):
        return None
    pad = 6
    y0, x0 = max(0, y - pad), max(0, x - pad)
    big = img[y0 : y + h + pad, x0 : x + w + pad]
    soft = ndimage.gaussian_filter(big, sigma=(1.2, 1.2, 0))[y - y0 : y - y0 + h,
                                                              x - x0 : x - x0 + w]
    return p + _logu(0.5, 2.5, s) * (p - soft) * _ellipse(h, w)


def _line(img, box, rng, s):
    """A thin scratch along the box's diagonal (or a side), antialiased."""
    p = _patch(img, box)
    h, w = p.shape[:2]
    k = 4  # drawn 4x larger, then averaged down: antialiased
    canvas = Image.new("L", (w * k, h * k), 0)
    ends = [(0, 0, w * k - 1, h * k - 1), (0, h * k - 1, w * k - 1, 0),
            (0, h * k // 2, w * k - 1, h * k // 2), (w * k // 2, 0, w * k // 2, h * k - 1)]
    width = int(rng.integers(1, 3)) * k
    ImageDraw.Draw(canvas).line(ends[int(rng.integers(0, 4))], fill=255, width=width)
    cov = np.asarray(canvas, np.float32).reshape(h, k, w, k).mean(axis=(1, 3)) / 255.0
    amp = _logu(0.06, 0.5, s) * (-1.0 if float(_luma(p).mean()) > 0.5 else 1.0)
    return p + amp * cov[..., None]


EDITS: dict[str, Callable[..., np.ndarray | None]] = {
    "brightness": _brightness, "tint": _tint, "hue": _hue, "paste": _paste, "mirror": _mirror,
    "blur": _blur, "remove": _remove, "blob": _blob, "text": _text, "contrast": _contrast,
    "sharpen": _sharpen, "line": _line,
}  # "swap" is placed by apply_edits: two boxes trade contents
MIN_SIDE = {"text": 12, "line": 10, "mirror": 8}


def _free(box: Box, taken: list[Box]) -> bool:
    y, x, h, w = box
    return all(y + h + GAP <= ty or ty + th + GAP <= y or x + w + GAP <= tx or tx + tw + GAP <= x
               for ty, tx, th, tw in taken)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _changed(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Pixels (H, W) where some channel moved by more than TRUTH_EPS uint8 levels."""
    return (np.abs(new.astype(np.int16) - old.astype(np.int16)) > TRUTH_EPS).any(axis=-1)


def _random_box(shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> Box:
    H, W = shape[:2]
    lo, hi = SIZE_RANGE
    lo = max(lo, MIN_SIDE.get(kind, lo))
    if kind == "swap":
        hi = 60
    side = _logu(lo, hi, float(rng.random()))
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    h = int(np.clip(round(side * np.sqrt(aspect)), lo, hi))
    w = int(np.clip(round(side / np.sqrt(aspect)), lo, hi))
    y = int(rng.integers(GAP, H - h - GAP + 1))
    x = int(rng.integers(GAP, W - w - GAP + 1))
    return y, x, h, w


def _accept(changed: np.ndarray, box: Box) -> bool:
    """Enough of the placement box changed for the edit to be a spot (8 px, and a fifth of the
    box for area edits)."""
    y, x, h, w = box
    n = int(changed[y : y + h, x : x + w].sum())
    return n >= 8 and (n >= h * w // 5 or h * w < 200)


def apply_edits(img: np.ndarray, kinds: Iterable[str], rng: np.random.Generator
                ) -> tuple[np.ndarray, list[Edit]]:
    """Apply one edit of each kind at disjoint spots; return the uint8 image and the edits.

    An edit changes pixels inside its placement box only; its truth is the pixels there that
    moved by more than TRUTH_EPS. A kind that finds no suitable spot in 400 tries is skipped.
    """
    out = img.copy()
    taken: list[Box] = []
    edits: list[Edit] = []
    for kind in kinds:
        f = out.astype(np.float32) / 255.0
        for _ in range(400):
            box = _random_box(out.shape, kind, rng)
            if not _free(box, taken):
                continue
            strength = float(rng.random())
            boxes = [box]
            new = out.copy()
            y, x, h, w = box
            if kind == "swap":
                other = _random_box(out.shape, "swap", rng)
                other = (other[0], other[1], h, w)
                if (other[0] + h + GAP > out.shape[0] or other[1] + w + GAP > out.shape[1]
                        or not _free(other, [*taken, box])):
                    continue
                a, b = _patch(f, box), _patch(f, other)
                if np.abs(a - b).mean() < 0.03:
                    continue
                oy, ox = other[:2]
                new[y : y + h, x : x + w] = _to_u8(b)
                new[oy : oy + h, ox : ox + w] = _to_u8(a)
                boxes.append(other)
            else:
                patch = EDITS[kind](f, box, rng, strength)
                if patch is None:
                    continue
                new[y : y + h, x : x + w] = _to_u8(patch)
            changed = _changed(new, out)
            if not all(_accept(changed, b) for b in boxes):
                continue
            for by, bx, bh, bw in boxes:
                m = np.zeros(changed.shape, bool)
                m[by : by + bh, bx : bx + bw] = changed[by : by + bh, bx : bx + bw]
                edits.append(Edit(kind, strength if kind != "swap" else 1.0, _tight_box(m), m,
                                  (bx, by, bw, bh)))
            out = new
            taken.extend(boxes)
            break
    return out, edits


# -- the dataset ----------------------------------------------------------------------------


def edit_kinds_for(name: str, channels: int, seed: int, n: int = EDITS_PER_IMAGE) -> list[str]:
    """The edit kinds of a photo: ``n`` consecutive kinds of a seeded cycle, starting where the
    photo's position in PHOTOS puts it, so every kind occurs about equally over the photos;
    hue and tint on colour photos only. A swap counts twice (it changes two spots)."""
    order = np.random.default_rng([seed, 1]).permutation(len(EDIT_KINDS))
    kinds = [EDIT_KINDS[k] for k in order if channels == 3 or EDIT_KINDS[k] not in COLOUR_KINDS]
    start = list(PHOTOS).index(name) * n
    out: list[str] = []
    j = 0
    while sum(2 if k == "swap" else 1 for k in out) < n:
        out.append(kinds[(start + j) % len(kinds)])
        j += 1
    return out


def make_pairs(images: Iterable[str], nuisances: Iterable[Nuisance], size: int = 512,
               seed: int = 0, n_edits: int = EDITS_PER_IMAGE, clean: bool = True
               ) -> Iterator[EditPair]:
    """For every photo and nuisance: the edited pair, then (with ``clean``) the nuisance-only
    pair. A photo's edits are the same under every nuisance; edits and noise depend only on the
    photo's name, the nuisance's name and ``seed``."""
    nuisances = list(nuisances)
    for name in images:
        ref = load_photo(name, size)
        kinds = edit_kinds_for(name, ref.shape[-1], seed, n_edits)
        edited, edits = apply_edits(ref, kinds, rng_for(seed, name, "edits"))
        truth = np.zeros(ref.shape[:2], bool)
        for e in edits:
            truth |= e.mask
        for nz in nuisances:
            cand = nz.apply(edited, rng_for(seed, name, nz.name, "edited"))
            yield EditPair(name, nz.name, nz.family, ref, edited, cand, truth, tuple(edits))
            if clean:
                plain = nz.apply(ref, rng_for(seed, name, nz.name, "clean"))
                yield EditPair(name, nz.name, nz.family, ref, ref, plain,
                               np.zeros_like(truth), ())


if __name__ == "__main__":
    for photo in (*TUNING_PHOTOS, *HELDOUT_PHOTOS):
        ref = load_photo(photo)
        img, found = apply_edits(ref, edit_kinds_for(photo, ref.shape[-1], 0),
                                 rng_for(0, photo, "edits"))
        share = np.mean(np.any([e.mask for e in found], axis=0))
        print(f"{photo:22s} {ref.shape} edited {share:.2%}: "
              + ", ".join(f"{e.kind} {e.box[2]}x{e.box[3]} s{e.strength:.2f}" for e in found))
