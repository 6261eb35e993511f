"""Synthetic-edit dataset for the quality benchmark: photos, small local edits, a nuisance.

Each pair is (reference, candidate): the reference is a scikit-image photo; the candidate is the
same photo with several small local edits (colour, brightness, pasted or mirrored patch, blurred
or removed detail, added disk/rectangle/text) and then one image-wide nuisance (JPEG re-encode,
faint noise, slight blur, or a mix). The ground truth is exactly the pixels the edits changed
(uint8 values differ before the nuisance), plus each edit's tight box. Everything is seeded.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage import color, data

__all__ = [
    "EDIT_KINDS",
    "NUISANCES",
    "PHOTOS",
    "Edit",
    "EditPair",
    "apply_edits",
    "apply_nuisance",
    "load_photo",
    "make_dataset",
]

# name -> loader; grayscale and colour photos shipped with scikit-image (no download needed).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,
    "coffee": data.coffee,
    "chelsea": data.chelsea,
    "rocket": data.rocket,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
    "immunohistochemistry": data.immunohistochemistry,
    "camera": data.camera,
    "moon": data.moon,
    "coins": data.coins,
    "brick": data.brick,
}

EDIT_KINDS = ("colour", "brightness", "paste", "mirror", "blur", "remove", "disk", "rectangle",
              "text")
COLOUR_ONLY = {"colour"}
NUISANCES = ("jpeg", "noise", "blur", "mix")

GAP = 8  # pixels kept free between edit boxes and from the image border
EDITS_PER_IMAGE = 6


@dataclass(frozen=True)
class Edit:
    """One local edit: its kind, tight box (x, y, width, height) and changed pixels (H, W)."""

    kind: str
    box: tuple[int, int, int, int]
    mask: np.ndarray


@dataclass(frozen=True)
class EditPair:
    """A benchmark pair: reference, edited (before nuisance), candidate, ground truth."""

    image: str
    nuisance: str
    reference: np.ndarray  # uint8 (H, W, C), C = 1 or 3
    edited: np.ndarray  # uint8, the edits only
    candidate: np.ndarray  # uint8, edits then nuisance
    mask: np.ndarray  # bool (H, W): pixels any edit changed
    edits: tuple[Edit, ...]


def load_photo(name: str, size: int = 384) -> np.ndarray:
    """The named photo as uint8 (H, W, C), resized so its longer side is ``size``."""
    img = np.asarray(PHOTOS[name]())
    pil = Image.fromarray(img)
    scale = size / max(pil.size)
    if scale != 1:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)),
                         Image.Resampling.LANCZOS)
    out = np.asarray(pil, dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out[..., :3]


# -- local edits ----------------------------------------------------------------------------
# Each edit takes (image uint8 (H,W,C), placement box (y, x, h, w), rng) and returns a new image
# that differs from the input only inside the box; or None when the spot does not suit it.

Box = tuple[int, int, int, int]  # y, x, h, w


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1.0


def _patch(img: np.ndarray, box: Box) -> np.ndarray:
    y, x, h, w = box
    return img[y : y + h, x : x + w].astype(np.float32) / 255.0


def _put(img: np.ndarray, box: Box, patch: np.ndarray, where: np.ndarray) -> np.ndarray:
    y, x, h, w = box
    out = img.copy()
    region = out[y : y + h, x : x + w]
    new = np.clip(np.rint(patch * 255.0), 0, 255).astype(np.uint8)
    region[where] = new[where]
    return out


def _luma(p: np.ndarray) -> np.ndarray:
    return p.mean(axis=-1)


def _contrasting(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random colour (per channel) at least 0.3 away from the patch's mean luminance."""
    mean = float(_luma(p).mean())
    base = rng.uniform(0.0, 1.0, size=p.shape[-1]).astype(np.float32)
    if abs(float(base.mean()) - mean) < 0.3:
        base = np.clip(base + (0.45 if mean < 0.5 else -0.45), 0.0, 1.0)
    return base


def _colour(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    p = _patch(img, box)
    hsv = color.rgb2hsv(p)
    if hsv[..., 1].mean() < 0.15:
        return None  # greyish spot: a hue shift would barely show
    hsv[..., 0] = (hsv[..., 0] + rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)) % 1.0
    return _put(img, box, color.hsv2rgb(hsv).astype(np.float32), _ellipse(*p.shape[:2]))


def _brightness(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    p = _patch(img, box)
    delta = rng.choice([-1, 1]) * rng.uniform(0.08, 0.15)
    if not 0.15 < float(_luma(p).mean()) + delta < 0.85:
        delta = -delta
    return _put(img, box, p + delta, _ellipse(*p.shape[:2]))


def _paste(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    y, x, h, w = box
    H, W = img.shape[:2]
    for _ in range(20):
        sy, sx = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        if abs(sy - y) >= 2 * h or abs(sx - x) >= 2 * w:
            src = _patch(img, (sy, sx, h, w))
            if np.abs(src - _patch(img, box)).mean() > 0.06:
                return _put(img, box, src, np.ones((h, w), bool))
    return None


def _mirror(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    p = _patch(img, box)
    if _luma(p).std() < 0.05:
        return None
    flipped = p[:, ::-1] if rng.random() < 0.5 else p[::-1]
    return _put(img, box, flipped, np.ones(p.shape[:2], bool))


def _blur(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    y, x, h, w = box
    if _luma(_patch(img, box)).std() < 0.06:
        return None  # nothing to blur away
    pad = 8  # blur with real surroundings, write inside the box only
    y0, x0 = max(0, y - pad), max(0, x - pad)
    big = img[y0 : y + h + pad, x0 : x + w + pad].astype(np.float32) / 255.0
    sigma = rng.uniform(2.0, 3.5)
    blurred = ndimage.gaussian_filter(big, sigma=(sigma, sigma, 0), mode="reflect")
    inner = blurred[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
    return _put(img, box, inner, _ellipse(h, w))


def _remove(img: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray | None:
    p = _patch(img, box)
    if _luma(p).std() < 0.06:
        return None
    inside = _ellipse(*p.shape[:2])
    fill = p[~inside].mean(axis=0)  # inpaint-ish: the mean of the ring around the detail
    noise = rng.normal(0.0, 0.01, size=p.shape).astype(np.float32)
    return _put(img, box, np.broadcast_to(fill, p.shape) + noise, inside)


def _draw(img: np.ndarray, box: Box, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Draw a small object of a contrasting colour with PIL, anywhere inside the box."""
    p = _patch(img, box)
    h, w = p.shape[:2]
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "disk":
        r = rng.uniform(3.5, min(h, w) / 2 - 1)
        cy, cx = h / 2, w / 2
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif kind == "rectangle":
        rh, rw = int(rng.integers(5, h - 2)), int(rng.integers(5, w - 2))
        ry, rx = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        draw.rectangle((rx, ry, rx + rw - 1, ry + rh - 1), fill=255)
    else:
        chars = "ABCDEFGHKMNPRSTXYZ23456789"
        text = "".join(rng.choice(list(chars), size=int(rng.integers(1, 3))))
        font = ImageFont.load_default(size=int(rng.integers(12, 17)))
        draw.text((w / 2, h / 2), text, fill=255, font=font, anchor="mm")
    where = np.asarray(canvas) > 127
    return _put(img, box, np.broadcast_to(_contrasting(p, rng), p.shape), where)


EDITS: dict[str, Callable[[np.ndarray, Box, np.random.Generator], np.ndarray | None]] = {
    "colour": _colour,
    "brightness": _brightness,
    "paste": _paste,
    "mirror": _mirror,
    "blur": _blur,
    "remove": _remove,
    "disk": lambda img, box, rng: _draw(img, box, rng, "disk"),
    "rectangle": lambda img, box, rng: _draw(img, box, rng, "rectangle"),
    "text": lambda img, box, rng: _draw(img, box, rng, "text"),
}
SIZES = {"disk": (12, 22), "rectangle": (12, 22), "text": (14, 24)}  # placement box sides


def _free(box: Box, taken: list[Box]) -> bool:
    y, x, h, w = box
    return all(y + h + GAP <= ty or ty + th + GAP <= y or x + w + GAP <= tx or tx + tw + GAP <= x
               for ty, tx, th, tw in taken)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def apply_edits(img: np.ndarray, kinds: list[str], rng: np.random.Generator
                ) -> tuple[np.ndarray, list[Edit]]:
    """Apply one edit of each kind at disjoint spots; return the image and the edits.

    A spot is accepted when the edit changed enough of it (a quarter of its box, or 12 pixels for
    drawn objects), so every edit is visible in the ground truth.
    """
    H, W = img.shape[:2]
    out, taken, edits = img, [], []
    for kind in kinds:
        lo, hi = SIZES.get(kind, (24, 44))
        for _ in range(300):
            h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
            y = int(rng.integers(GAP, H - h - GAP + 1))
            x = int(rng.integers(GAP, W - w - GAP + 1))
            if not _free((y, x, h, w), taken):
                continue
            new = EDITS[kind](out, (y, x, h, w), rng)
            if new is None:
                continue
            changed = (new != out).any(axis=-1)
            need = 12 if kind in SIZES else h * w // 4
            if changed.sum() >= need:
                out = new
                taken.append((y, x, h, w))
                edits.append(Edit(kind, _tight_box(changed), changed))
                break
        else:
            raise RuntimeError(f"could not place a {kind!r} edit")
    return out, edits


# -- global nuisances -----------------------------------------------------------------------

def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=quality)
    out = np.asarray(Image.open(buf), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def _noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma * 255.0, size=img.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    blurred = ndimage.gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0),
                                      mode="reflect")
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def apply_nuisance(img: np.ndarray, nuisance: str, rng: np.random.Generator) -> np.ndarray:
    """An image-wide change that is not a difference a user wants shown."""
    if nuisance == "jpeg":
        return _jpeg(img, 70)
    if nuisance == "noise":
        return _noise(img, 0.012, rng)
    if nuisance == "blur":
        return _gauss(img, 0.7)
    if nuisance == "mix":
        return _jpeg(_noise(_gauss(img, 0.5), 0.008, rng), 85)
    if nuisance == "none":
        return img.copy()
    raise ValueError(f"unknown nuisance {nuisance!r}")


# -- the dataset ----------------------------------------------------------------------------

def edit_kinds_for(index: int, channels: int, seed: int, n: int = EDITS_PER_IMAGE) -> list[str]:
    """The edit kinds of the photo at ``index`` in PHOTOS: ``n`` consecutive kinds of a seeded
    cycle, so over the photos every kind occurs about equally; colour edits on colour photos only.
    """
    order = np.random.default_rng([seed, 1]).permutation(len(EDIT_KINDS))
    kinds = [EDIT_KINDS[k] for k in order if channels == 3 or EDIT_KINDS[k] not in COLOUR_ONLY]
    n = min(n, len(kinds))
    return [kinds[(index * n + j) % len(kinds)] for j in range(n)]


def make_dataset(images: tuple[str, ...] | None = None, nuisances: tuple[str, ...] = NUISANCES,
                 size: int = 384, seed: int = 0, n_edits: int = EDITS_PER_IMAGE
                 ) -> Iterator[EditPair]:
    """Yield every (image, nuisance) pair; the edits of an image are the same for all nuisances.

    ``n_edits`` is the number of local edits per photo (at most one of each kind). A photo's
    edits and noise depend only on its name, the nuisance and ``seed``, not on which other
    photos are asked for.
    """
    names = list(PHOTOS)
    for name in images or tuple(PHOTOS):
        i = names.index(name)
        ref = load_photo(name, size)
        kinds = edit_kinds_for(i, ref.shape[-1], seed, n_edits)
        edited, edits = apply_edits(ref, kinds, np.random.default_rng([seed, i, 2]))
        mask = np.zeros(ref.shape[:2], bool)
        for e in edits:
            mask |= e.mask
        for nuisance in nuisances:
            j = [*NUISANCES, "none"].index(nuisance)
            cand = apply_nuisance(edited, nuisance, np.random.default_rng([seed, i, 3, j]))
            yield EditPair(name, nuisance, ref, edited, cand, mask, tuple(edits))


if __name__ == "__main__":
    for pair in make_dataset(nuisances=("jpeg",)):
        kinds = ", ".join(e.kind for e in pair.edits)
        print(f"{pair.image:22s} {pair.reference.shape} edited {pair.mask.mean():.2%}: {kinds}")
