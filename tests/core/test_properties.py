"""Property tests: any shape and dtype in gives the documented (H, W) out, or a clear
InputError, never another exception; corrupt image bytes fail the same way.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from core import Finder, InputError
from core.images import decode_image

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

GOOD_NUMPY = ["uint8", "uint16", "bool", "float16", "float32", "float64"]
BAD_NUMPY = ["int8", "int16", "int32", "int64", "uint32", "complex64"]
GOOD_TORCH = [torch.uint8, torch.uint16, torch.bool, torch.float16, torch.bfloat16,
              torch.float32, torch.float64]
BAD_TORCH = [torch.int8, torch.int16, torch.int32, torch.int64, torch.complex64]

DIFFERENCE = Finder(strategy="difference", device="cpu")
DEFAULT = Finder(device="cpu")


def expected_shape(shape: tuple[int, ...], channel_last_first: bool) -> tuple[int, ...] | None:
    """The documented output shape for an input shape, or None when it must be refused.

    ``channel_last_first``: numpy/PIL look for channels last first, torch first first.
    """
    if any(s == 0 for s in shape) or len(shape) not in (2, 3, 4):
        return None
    if len(shape) == 2:
        return shape
    batch, rest = (shape[0], shape[1:]) if len(shape) == 4 else (1, shape)
    first, last = 1 <= rest[0] <= 4, 1 <= rest[-1] <= 4
    order = ("last", "first") if channel_last_first else ("first", "last")
    for side in order:
        if side == "first" and first:
            hw = rest[1:]
            break
        if side == "last" and last:
            hw = rest[:2]
            break
    else:
        return None
    return (batch, *hw) if len(shape) == 4 and batch > 1 else tuple(hw)


@st.composite
def shapes(draw) -> tuple[int, ...]:
    """Mostly image-like layouts (so successes are common), sometimes anything at all."""
    kind = draw(st.sampled_from(["any", "hw", "chw", "hwc", "nchw", "nhwc"]))
    if kind == "any":
        return tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=5)))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    c, n = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return {"hw": (h, w), "chw": (c, h, w), "hwc": (h, w, c), "nchw": (n, c, h, w),
            "nhwc": (n, h, w, c)}[kind]


def numpy_array(draw, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype.startswith("float"):
        elements = st.floats(-4.0, 4.0, width=16 if dtype == "float16" else 32)
    elif dtype == "bool":
        elements = st.booleans()
    elif dtype.startswith("complex"):
        elements = st.complex_numbers(max_magnitude=4.0, allow_nan=False, allow_infinity=False,
                                      width=64)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def image_inputs(draw):
    shape = draw(shapes())
    lib = draw(st.sampled_from(["numpy", "torch"]))
    good = draw(st.integers(0, 3)) > 0  # three in four draws use a supported dtype
    if lib == "numpy":
        dtype = draw(st.sampled_from(GOOD_NUMPY if good else BAD_NUMPY))
        a, b = numpy_array(draw, shape, dtype), numpy_array(draw, shape, dtype)
        ok = dtype in GOOD_NUMPY
    else:
        dtype = draw(st.sampled_from(GOOD_TORCH if good else BAD_TORCH))
        a = torch.from_numpy(numpy_array(draw, shape, "float32") * 30).to(dtype)
        b = torch.from_numpy(numpy_array(draw, shape, "float32") * 30).to(dtype)
        ok = dtype in GOOD_TORCH
    want = expected_shape(shape, lib == "numpy") if ok else None
    return a, b, want


def check(finder: Finder, a, b, want) -> np.ndarray | None:
    """Run; a supported input must give ``want``; anything else must be an InputError."""
    try:
        out = finder.run(a, b)
    except InputError as exc:
        assert str(exc)  # a message, always
        event(f"refused: {type(exc).__name__}")
        return None
    except Exception as exc:  # pragma: no cover - this is the failure being looked for
        pytest.fail(f"{type(exc).__name__} (not InputError) for {getattr(a, 'shape', a)} "
                    f"{getattr(a, 'dtype', '')}: {exc}")
    assert want is not None, f"accepted an input that should be refused: {a.shape} {a.dtype}"
    event(f"accepted {len(a.shape)}-D")
    assert out.shape == want and out.dtype == np.float32
    assert np.isfinite(out).all()
    return out


@SETTINGS
@given(image_inputs())
def test_any_input_gives_its_hw_map_or_an_input_error(case) -> None:
    a, b, want = case
    out = check(DIFFERENCE, a, b, want)
    if want is not None:
        assert out is not None, f"refused a supported input {a.shape} {a.dtype}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_inputs())
def test_default_pipeline_gives_its_hw_map_or_an_input_error(case) -> None:
    """SSIM needs 11 pixels a side: smaller images are an InputError (MetricError)."""
    a, b, want = case
    out = check(DEFAULT, a, b, want)
    if want is not None and min(want[-2:]) >= 11:
        assert out is not None


PIPELINES = st.fixed_dictionaries({
    "pre_processor": st.sampled_from(["identity", "normalize", "highpass_filter",
                                      "lowpass_filter", "bandpass_filter"]),
    "strategy": st.sampled_from(["difference", "gradient", "map"]),
    "metric": st.sampled_from(["mse", "psnr", "ssim", {"name": "ssim", "win_size": 3},
                               {"name": "ms-ssim", "win_size": 3}]),
    "post_processor": st.sampled_from(["identity", "normalize", ["clip", "smooth"],
                                       {"name": "threshold", "method": "otsu"}]),
    "reduction": st.sampled_from(["mean", "max"]),
}).filter(lambda p: not (p["strategy"] == "map" and isinstance(p["metric"], dict)
                         and p["metric"]["name"] == "ms-ssim"))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_inputs(), PIPELINES)
def test_any_pipeline_gives_its_hw_map_or_an_input_error(case, pipeline) -> None:
    a, b, want = case
    check(Finder(**pipeline, device="cpu"), a, b, want)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["numpy", "torch"]), st.integers(2, 4), st.sampled_from([np.nan,
                                                                                 np.inf]))
def test_non_finite_values_are_refused(lib, ndim, bad) -> None:
    a = np.zeros((5, 6, 3, 2)[:ndim], np.float32)
    a.flat[7] = bad
    x = torch.from_numpy(a) if lib == "torch" else a
    with pytest.raises(InputError, match="NaN or infinite"):
        DIFFERENCE.run(x, np.zeros_like(a))


@SETTINGS
@given(st.data())
def test_mismatched_shapes_are_an_input_error(data) -> None:
    h1, w1, h2, w2 = (data.draw(st.integers(1, 24)) for _ in range(4))
    a, b = np.zeros((h1, w1), np.uint8), np.zeros((h2, w2), np.uint8)
    if (h1, w1) == (h2, w2):
        assert DIFFERENCE.run(a, b).shape == (h1, w1)
    else:
        with pytest.raises(InputError, match="size"):
            DIFFERENCE.run(a, b)


def _png(mode: str) -> bytes:
    buf = io.BytesIO()
    arr = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


PNGS = [_png(mode) for mode in ("RGB", "L", "RGBA", "P")]


@SETTINGS
@given(st.sampled_from(PNGS), st.data())
def test_corrupted_image_bytes_decode_or_raise_input_error(png, data) -> None:
    raw = bytearray(png)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    blob = bytes(raw[:cut])
    try:
        arr = decode_image(blob, what="upload")
    except InputError as exc:
        assert "upload" in str(exc)
        return
    assert arr.ndim in (2, 3) and arr.shape[:2] == (12, 10)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a"]


@SETTINGS
@given(st.sampled_from(MAGIC), st.binary(max_size=300))
def test_random_bytes_after_a_format_signature_only_raise_input_error(magic, tail) -> None:
    with contextlib.suppress(InputError):
        decode_image(magic + tail)
