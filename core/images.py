"""Turn what callers hand us (paths, arrays, tensors, PIL images, bytes) into
float tensors shaped (N, C, H, W), and line two images up with each other.

Rules, in one place:
- uint8 / uint16 are scaled by their dtype range to [0, 1]; bool to {0, 1};
  floats are taken as given (``data_range`` in the pipeline says their scale).
- 2-D is (H, W); 3-D is (C, H, W) or (H, W, C); 4-D is (N, C, H, W) or
  (N, H, W, C). The channel axis is the one of size 1-4; when both ends could
  be channels, numpy/PIL data is taken as channel-last and torch data as
  channel-first (each library's own convention).
- Alpha is composited over black (colour premultiplied by alpha), then dropped,
  so a change in transparency shows as a change in colour.
- Animated images: the first frame is used.
- Files and bytes are turned as viewers show them (the EXIF orientation tag is applied, the
  way a phone's rotated JPEG is displayed); PIL images and arrays are taken as they are.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, InputError, PairingError, ShapeMismatchError

__all__ = [
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "ImageLike",
    "align_pair",
    "decode_image",
    "directory_pair",
    "image_size",
    "list_images",
    "load_image",
    "open_header",
    "pair_directories",
    "to_tensor",
]

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
#: PIL format names we decode; anything else is refused before decoding.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")

ImageLike = str | Path | torch.Tensor | np.ndarray | Image.Image

_CHANNELS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Limits:
    """Caps checked from the image header, before any pixel is decoded."""

    max_pixels: int | None = None
    max_side: int | None = None


def _check_header(img: Image.Image, limits: Limits | None, what: str) -> None:
    if img.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"{what}: format {img.format or 'unknown'} is not supported; "
            f"supported: {', '.join(SUPPORTED_FORMATS)}"
        )
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{what}: image has zero size ({w}x{h})")
    if limits is None:
        return
    if limits.max_side is not None and max(w, h) > limits.max_side:
        raise InputError(
            f"{what}: {w}x{h} exceeds the largest allowed side of {limits.max_side} pixels",
            limit="max_side",
        )
    if limits.max_pixels is not None and w * h > limits.max_pixels:
        raise InputError(
            f"{what}: {w}x{h} = {w * h} pixels exceeds the limit of {limits.max_pixels}",
            limit="max_pixels",
        )


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> numpy (H, W) or (H, W, C) in uint8/uint16/float32."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageDecodeError("32-bit integer images outside 0..65535 are not supported")
        return arr.astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("1", "L", "LA", "RGB", "RGBA"):
        return np.asarray(img.convert("L") if mode == "1" else img)
    if mode in ("P", "PA"):
        has_alpha = "transparency" in img.info or mode == "PA"
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    return np.asarray(img.convert("RGB"))  # CMYK, YCbCr, LAB, HSV ...


def decode_image(data: bytes, *, limits: Limits | None = None, what: str = "image") -> np.ndarray:
    """Decode an encoded image file held in memory; header checks come first."""
    if not data:
        raise ImageDecodeError(f"{what}: empty file")
    return _open(io.BytesIO(data), limits, what)


def load_image(path: str | Path, *, limits: Limits | None = None) -> np.ndarray:
    """Read an image file into a numpy array (see module docstring for dtypes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ImageDecodeError(
            f"{path}: unsupported file type {path.suffix!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return _open(path, limits, str(path))


_HEADER_LOCK = threading.Lock()


def open_header(src: Any, limits: Limits | None = None, what: str = "image") -> Image.Image:
    """``Image.open`` (the header only), one rule for every caller that reads headers.

    Under a pixel limit of the caller's, that limit rules, not Pillow's decompression-bomb
    guard (~89 MP): a limit above it is honoured, and a header past it is refused naming the
    limit. Without one, Pillow's guard refuses what exceeds it. Pillow's guard is a module
    global: it is raised (never lowered, never off) only while a header is read, under a lock.
    """
    cap = limits.max_pixels if limits is not None else None
    with _HEADER_LOCK:
        guard = Image.MAX_IMAGE_PIXELS
        if cap is not None and guard is not None:
            Image.MAX_IMAGE_PIXELS = max(guard, cap)
        try:
            with warnings.catch_warnings():  # sizes are checked here, not by a warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(src)
        except Image.DecompressionBombError as exc:  # past twice the guard: no image object
            limit = cap if cap is not None else guard
            claim = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the pixel count
            claimed = f"its header claims {claim[1]} pixels" if claim else "it is too large"
            raise InputError(f"{what}: refused as a decompression bomb: {claimed}, over the "
                             f"limit of {limit}", limit="max_pixels") from None
        finally:
            Image.MAX_IMAGE_PIXELS = guard
    w, h = img.size
    if cap is None and guard is not None and w * h > guard:
        img.close()
        raise InputError(f"{what}: {w}x{h} = {w * h} pixels exceeds Pillow's limit of {guard}: "
                         "refused as a decompression bomb (a larger pixel limit allows it: "
                         "Limits(max_pixels=...) in Python, --max-pixels in the CLI, "
                         "DF_MAX_PIXELS in the service)", limit="max_pixels")
    return img


def _open(src: Any, limits: Limits | None, what: str) -> np.ndarray:
    try:
        with open_header(src, limits, what) as img:
            _check_header(img, limits, what)
            img.seek(0)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # (no tag: nothing done)
            return _pil_to_array(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{what}: not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise ImageDecodeError(f"{what}: corrupt or truncated image ({exc})") from None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone (Pillow's guard applies: see open_header), as
    stored: an EXIF orientation of 5-8 swaps them in the decoded array."""
    try:
        with open_header(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDecodeError(f"not a decodable image ({exc})") from None


def _is_channel(n: int) -> bool:
    return n in _CHANNELS


def _channel_axis_3d(shape: Sequence[int], prefer_last: bool) -> Literal["first", "last"]:
    first, last = _is_channel(shape[0]), _is_channel(shape[-1])
    if first and last:
        return "last" if prefer_last else "first"
    if first:
        return "first"
    if last:
        return "last"
    raise InputError(
        f"cannot find a channel axis in shape {tuple(shape)}: one end must have 1-4 channels"
    )


def _to_float(t: torch.Tensor, what: str) -> torch.Tensor:
    """float32 in one contiguous (N, C, H, W) layout for every later step (a channel-last
    view would make each reshape downstream copy the image); integer data is converted
    and laid out in one pass, then scaled in place (same values as ``t / 255``)."""
    contiguous = torch.contiguous_format
    if t.dtype == torch.uint8:
        return t.to(torch.float32, memory_format=contiguous).div_(255.0)
    if t.dtype == torch.uint16:
        return t.to(torch.float32, memory_format=contiguous).div_(65535.0)
    if t.dtype == torch.bool:
        return t.to(torch.float32, memory_format=contiguous)
    if t.is_floating_point():
        t = t.to(torch.float32, memory_format=contiguous)
        # min and max propagate NaN and show infinities: one cheap pass (isfinite().all()
        # allocates a mask and takes ~20x as long)
        if t.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
            raise InputError(f"{what}: contains NaN or infinite values")
        return t
    if t.is_complex():
        raise InputError(f"{what}: complex values are not images")
    raise InputError(
        f"{what}: dtype {t.dtype} is ambiguous; give uint8, uint16, bool or floating point data"
    )


def _numpy_to_torch(a: np.ndarray, what: str) -> torch.Tensor:
    if a.dtype == np.uint16:
        # torch's uint16 lacks most kernels: scale in numpy instead.
        scaled = a.astype(np.float32)
        scaled /= 65535.0
        return torch.from_numpy(scaled)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{what}: numpy dtype {a.dtype} is not an image type")
    if a.dtype.kind in "iu" and a.dtype != np.uint8:
        raise InputError(
            f"{what}: dtype {a.dtype} is ambiguous; give uint8, uint16, bool or floating point data"
        )
    if not a.flags.writeable:  # torch refuses read-only memory (e.g. np.asarray(PIL image))
        return torch.from_numpy(np.array(a))
    return torch.from_numpy(np.ascontiguousarray(a))


def to_tensor(obj: ImageLike, *, what: str = "image", limits: Limits | None = None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor (N, C, H, W) float32, batched)`` for any supported input.

    ``batched`` is True for 4-D input: the caller gets one result per sample.
    The caller's tensor is never modified (we only read it or copy it). With ``device``
    the decoded data moves there before it becomes float (a quarter of the bytes for uint8).
    """
    prefer_last = True
    if isinstance(obj, (str, Path)):
        arr = load_image(obj, limits=limits)
        t = _numpy_to_torch(arr, what)
        what = str(obj)
    elif isinstance(obj, Image.Image):
        t = _numpy_to_torch(_pil_to_array(obj), what)
    elif isinstance(obj, np.ndarray):
        t = _numpy_to_torch(obj, what)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach()
        prefer_last = False
    else:
        raise InputError(
            f"{what}: unsupported input type {type(obj).__name__}; give a path, a directory, "
            "a torch tensor, a numpy array or a PIL image"
        )
    if device is not None:
        t = t.to(device, non_blocking=True)
    batched = t.ndim == 4
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t.unsqueeze(0)
        if _channel_axis_3d(t.shape[1:], prefer_last) == "last":
            t = t.permute(0, 3, 1, 2)
    elif t.ndim == 4:
        if _channel_axis_3d(t.shape[1:], prefer_last) == "last":
            t = t.permute(0, 3, 1, 2)
    else:
        raise InputError(
            f"{what}: {t.ndim}-D input; expected (H,W), (C,H,W), (H,W,C), (N,C,H,W) or (N,H,W,C)"
        )
    n, _, h, w = t.shape
    if n == 0 or h == 0 or w == 0:
        raise InputError(f"{what}: empty image of shape {tuple(t.shape)}")
    # one contiguous (N, C, H, W) layout for every later step (a channel-last view would
    # make each reshape downstream copy the image)
    return _drop_alpha(_to_float(t, what)), batched


def _drop_alpha(t: torch.Tensor) -> torch.Tensor:
    """Composite an alpha channel over black (C=2: gray+alpha, C=4: RGB+alpha)."""
    c = t.shape[1]
    if c in (2, 4):
        return t[:, : c - 1] * t[:, c - 1 :]
    return t


def _match_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ca, cb = a.shape[1], b.shape[1]
    if ca == cb:
        return a, b
    if ca == 1:
        return a.expand(-1, cb, -1, -1), b
    if cb == 1:
        return a, b.expand(-1, ca, -1, -1)
    raise ShapeMismatchError(f"cannot compare {ca}-channel with {cb}-channel images")


SizePolicy = Literal["error", "resize", "crop", "pad"]


def align_pair(
    ref: torch.Tensor, cand: torch.Tensor, size_policy: SizePolicy = "error"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make two (N, C, H, W) tensors comparable: batch, channels and size.

    A single image is broadcast against a batch. Sizes must match unless a
    policy says otherwise: ``resize`` resamples the candidate to the
    reference's size, ``crop`` keeps the common top-left area, ``pad`` pads
    both (with zeros, bottom/right) to the larger size.
    """
    if ref.shape[0] != cand.shape[0]:
        if ref.shape[0] == 1:
            ref = ref.expand(cand.shape[0], -1, -1, -1)
        elif cand.shape[0] == 1:
            cand = cand.expand(ref.shape[0], -1, -1, -1)
        else:
            raise ShapeMismatchError(
                f"batch sizes differ: reference has {ref.shape[0]}, candidate {cand.shape[0]}"
            )
    ref, cand = _match_channels(ref, cand)
    (hr, wr), (hc, wc) = ref.shape[-2:], cand.shape[-2:]
    if (hr, wr) == (hc, wc):
        return ref, cand
    if size_policy == "resize":
        cand = F.interpolate(cand, size=(hr, wr), mode="bilinear", antialias=True,
                             align_corners=False)
    elif size_policy == "crop":
        h, w = min(hr, hc), min(wr, wc)
        ref, cand = ref[..., :h, :w], cand[..., :h, :w]
    elif size_policy == "pad":
        h, w = max(hr, hc), max(wr, wc)
        ref = F.pad(ref, (0, w - wr, 0, h - hr))
        cand = F.pad(cand, (0, w - wc, 0, h - hc))
    else:
        raise ShapeMismatchError(
            f"image sizes differ: reference is {wr}x{hr}, candidate is {wc}x{hc} (width x height); "
            "set size_policy to resize, crop or pad to compare them anyway",
            reference=[wr, hr], candidate=[wc, hc],
        )
    return ref, cand


def list_images(directory: str | Path) -> list[Path]:
    """Image files (by suffix) directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    return sorted(
        (p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES),
        key=lambda p: p.name,
    )


def _is_dir(x: Any) -> bool:
    return isinstance(x, (str, Path)) and Path(x).is_dir()


def directory_pair(a: Any, b: Any) -> bool:
    """True when both inputs are directories, False when neither is; an
    :class:`InputError` when only one is (the rule every entry point shares)."""
    a_dir, b_dir = _is_dir(a), _is_dir(b)
    if a_dir != b_dir:
        raise InputError(f"{a if a_dir else b} is a directory, the other is not")
    return a_dir


def pair_directories(dir1: str | Path, dir2: str | Path) -> list[tuple[Path, Path]]:
    """Pair the images of two directories by file name without extension.

    ``a/x.png`` pairs with ``b/x.jpg``. Any name present on one side only is an
    error that lists every such file.
    """
    def by_stem(d: str | Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in list_images(d):
            if p.stem in out:
                raise PairingError(f"{d}: two images share the name {p.stem!r}: "
                                   f"{out[p.stem].name}, {p.name}")
            out[p.stem] = p
        return out

    a, b = by_stem(dir1), by_stem(dir2)
    if not a and not b:
        raise PairingError(f"no images in {dir1} or {dir2}")
    only_a = sorted(a.keys() - b.keys())
    only_b = sorted(b.keys() - a.keys())
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in {dir1}: {', '.join(a[s].name for s in only_a)}")
        if only_b:
            parts.append(f"only in {dir2}: {', '.join(b[s].name for s in only_b)}")
        raise PairingError("unmatched files; " + "; ".join(parts),
                           unmatched=[a[s].name for s in only_a] + [b[s].name for s in only_b])
    return [(a[s], b[s]) for s in sorted(a)]

