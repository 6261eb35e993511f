"""core.images: every input form gives the same map; dtypes, alpha, files, directories, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import (
    Finder,
    ImageDecodeError,
    InputError,
    PairingError,
    ShapeMismatchError,
)
from core.images import (
    Limits,
    align_pair,
    decode_image,
    image_size,
    load_image,
    open_header,
    to_tensor,
)
from tests.conftest import distort, raw_finder


@pytest.fixture(scope="module")
def finder() -> Finder:
    # A pipeline whose map depends on every pixel and every channel of both inputs.
    return raw_finder(strategy="map", metric="ssim", reduction="none")


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def as_forms(img: np.ndarray, tmp: Path, name: str) -> dict[str, object]:
    """The same uint8 (H, W, 3) photo in every supported input form."""
    t = torch.from_numpy(img)
    path = save(img, tmp / f"{name}.png")
    return {
        "path str": str(path),
        "path": path,
        "torch (C,H,W)": t.permute(2, 0, 1).contiguous(),
        "torch (H,W,C)": t,
        "torch (N,C,H,W)": t.permute(2, 0, 1)[None].contiguous(),
        "torch (N,H,W,C)": t[None],
        "numpy (H,W,C)": img,
        "numpy (C,H,W)": np.ascontiguousarray(img.transpose(2, 0, 1)),
        "numpy (N,H,W,C)": img[None],
        "PIL": Image.fromarray(img),
        "torch float (C,H,W)": t.permute(2, 0, 1).float() / 255,
    }


def test_every_input_form_gives_the_same_map(finder, chelsea_pair, tmp_path) -> None:
    ref, cand = (np.ascontiguousarray(a[60:220, 100:340]) for a in chelsea_pair)  # 160x240
    expected = finder.run(ref, cand)
    assert expected.shape == (3, *ref.shape[:2]) and expected.dtype == np.float32
    refs, cands = as_forms(ref, tmp_path, "ref"), as_forms(cand, tmp_path, "cand")
    for kind in refs:
        got = finder.run(refs[kind], cands[kind])
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=kind)
    # Mixed forms within one pair, too.
    np.testing.assert_allclose(finder.run(refs["path"], cands["torch (N,H,W,C)"]), expected,
                               atol=1e-6)


@pytest.mark.parametrize(("suffix", "options"), [
    (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}),
    (".webp", {"lossless": True}), (".PNG", {}),
])
def test_lossless_file_formats_load_the_same_pixels(chelsea, tmp_path, suffix, options) -> None:
    path = save(chelsea, tmp_path / f"cat{suffix}", **options)
    np.testing.assert_array_equal(load_image(path), chelsea)


def test_jpeg_files_load(chelsea, tmp_path) -> None:
    for suffix in (".jpg", ".jpeg", ".JPG"):
        path = save(chelsea, tmp_path / f"cat{suffix}", quality=95)
        got = load_image(path)
        assert got.shape == chelsea.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - chelsea).mean() < 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_the_exif_orientation_is_applied_as_viewers_do(chelsea, tmp_path, fmt) -> None:
    # a phone stores the sensor's pixels and a tag saying "rotate 90 degrees clockwise to view"
    stored = Image.fromarray(chelsea).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise
    buf = io.BytesIO()
    stored.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    for got in (decode_image(buf.getvalue()), load_image(save_bytes(buf, tmp_path, fmt))):
        assert got.shape == chelsea.shape
        assert np.abs(got.astype(int) - chelsea).mean() < 3
    untagged = io.BytesIO()
    stored.save(untagged, format=fmt)
    assert decode_image(untagged.getvalue()).shape == (chelsea.shape[1], chelsea.shape[0], 3)


def save_bytes(buf: io.BytesIO, tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"tagged.{fmt.lower()}"
    path.write_bytes(buf.getvalue())
    return path


def test_uint16_is_scaled_by_its_range(finder, camera, tmp_path) -> None:
    """A 16-bit PNG (PIL mode I;16), a uint16 array and the 8-bit photo give one map."""
    camera = camera[100:300, 150:400]
    cand8 = distort(camera, seed=9)
    ref16, cand16 = (a.astype(np.uint16) * 257 for a in (camera, cand8))  # x/255 == 257x/65535
    p_ref = tmp_path / "ref16.png"
    p_cand = tmp_path / "cand16.png"
    for arr, path in ((ref16, p_ref), (cand16, p_cand)):
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
        img.save(path)
    with Image.open(p_ref) as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    loaded = load_image(p_ref)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, ref16)
    expected = finder.run(camera, cand8)
    np.testing.assert_allclose(finder.run(p_ref, p_cand), expected, atol=1e-6)
    np.testing.assert_allclose(finder.run(ref16, cand16), expected, atol=1e-6)
    t16 = torch.from_numpy(ref16.astype(np.int32)).to(torch.uint16)
    c16 = torch.from_numpy(cand16.astype(np.int32)).to(torch.uint16)
    np.testing.assert_allclose(finder.run(t16, c16), expected, atol=1e-6)


def test_float_inputs_are_taken_as_given(camera) -> None:
    d = raw_finder(strategy="difference")
    a = np.zeros((8, 8), np.float32)
    b = np.full((8, 8), 3.5, np.float32)
    assert np.allclose(d.run(a, b), 3.5)  # not clipped or rescaled
    u = d.run(np.zeros((8, 8), np.uint8), np.full((8, 8), 51, np.uint8))
    assert np.allclose(u, 0.2)
    assert np.allclose(d.run(np.zeros((8, 8), bool), np.ones((8, 8), bool)), 1.0)


def test_grayscale_against_rgb(finder, camera, tmp_path) -> None:
    camera = camera[100:300, 150:400]
    cand = distort(camera, seed=10)
    rgb_ref = np.repeat(camera[..., None], 3, axis=2)
    rgb_cand = np.repeat(cand[..., None], 3, axis=2)
    expected = finder.run(rgb_ref, rgb_cand)
    np.testing.assert_allclose(finder.run(camera, rgb_cand), expected, atol=1e-6)
    np.testing.assert_allclose(finder.run(rgb_ref, cand), expected, atol=1e-6)
    gray_png = save(camera, tmp_path / "gray.png")  # mode L
    rgb_png = save(rgb_cand, tmp_path / "rgb.png")
    np.testing.assert_allclose(finder.run(gray_png, rgb_png), expected, atol=1e-6)
    # Gray vs gray stays one channel.
    assert finder.run(camera, cand).shape == (1, *camera.shape)


def test_rgba_is_composited_over_black(chelsea_pair, tmp_path) -> None:
    finder = raw_finder(strategy={"name": "difference", "absolute": False}, reduction="none")
    ref, cand = chelsea_pair
    h, w = ref.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    rgba_ref = np.dstack([ref, alpha])
    rgba_cand = np.dstack([cand, alpha])
    over_black = [a.astype(np.float64) / 255 * (alpha[..., None] / 255) for a in (ref, cand)]
    expected = finder.run(*over_black)
    p1, p2 = save(rgba_ref, tmp_path / "a.png"), save(rgba_cand, tmp_path / "b.png")
    with Image.open(p1) as im:
        assert im.mode == "RGBA"
    assert expected.shape == (3, h, w)
    np.testing.assert_allclose(finder.run(p1, p2), expected, atol=1e-6)
    np.testing.assert_allclose(finder.run(rgba_ref, rgba_cand), expected, atol=1e-6)
    # A change of transparency alone shows up as a difference.
    opaque = np.dstack([ref, np.full((h, w), 255, np.uint8)])
    diff = raw_finder(strategy="difference").run(opaque, rgba_ref)
    assert diff[:, : w // 10].mean() > diff[:, -w // 10 :].mean() > 0
    # Gray + alpha (PIL mode LA) is composited the same way.
    la = np.dstack([ref[..., 0], alpha])
    got = raw_finder(strategy="difference").run(Image.fromarray(la, mode="LA"), np.zeros((h, w)))
    np.testing.assert_allclose(got, ref[..., 0] / 255 * alpha / 255, atol=1e-6)


def test_palette_and_animated_images(chelsea, tmp_path) -> None:
    pal = Image.fromarray(chelsea).convert("P")
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(load_image(tmp_path / "pal.png"),
                                  np.asarray(pal.convert("RGB")))
    frames = [Image.fromarray(chelsea), Image.fromarray(255 - chelsea)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(load_image(tmp_path / "anim.png"), chelsea)  # first frame


def test_directories_are_paired_by_name(tmp_path, camera, chelsea) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    images = {"z": camera[:64, :80], "b": camera[100:164, :80], "m": chelsea[:64, :80, 0]}
    for name, img in images.items():
        save(img, a / f"{name}.png")
        save(distort(img, seed=11), b / f"{name}.bmp")  # other extension, same stem
    (a / "notes.txt").write_text("not an image")
    finder = raw_finder(strategy="map", metric="ssim")
    maps, scores = finder.run(a, b, return_metric=True)
    assert isinstance(maps, list) and len(maps) == 3 == len(scores)
    for got, score, name in zip(maps, scores, ["b", "m", "z"], strict=True):  # name order
        single, single_score = finder.run(a / f"{name}.png", b / f"{name}.bmp",
                                          return_metric=True)
        np.testing.assert_array_equal(got, single)
        assert score == pytest.approx(single_score)
    assert len(finder.run(str(a), str(b))) == 3


def test_unmatched_directory_files_are_named(tmp_path, camera) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name in ("one", "two", "three"):
        save(camera[:32, :32], a / f"{name}.png")
    save(camera[:32, :32], b / "one.png")
    save(camera[:32, :32], b / "four.jpg")
    with pytest.raises(PairingError) as info:
        raw_finder(strategy="difference").run(a, b)
    msg = str(info.value)
    assert "two.png" in msg and "three.png" in msg and "four.jpg" in msg
    assert "one.png" not in msg
    assert sorted(info.value.extra["unmatched"]) == ["four.jpg", "three.png", "two.png"]
    save(camera[:32, :32], a / "one.jpg")  # same stem twice in one directory
    with pytest.raises(PairingError, match="one"):
        raw_finder(strategy="difference").run(a, b)
    empty1, empty2 = tmp_path / "e1", tmp_path / "e2"
    empty1.mkdir(), empty2.mkdir()
    with pytest.raises(PairingError, match="no images"):
        raw_finder(strategy="difference").run(empty1, empty2)
    with pytest.raises(InputError, match="directory"):
        raw_finder(strategy="difference").run(a, camera)


def test_decode_errors_are_typed_and_named(tmp_path, camera) -> None:
    buf = io.BytesIO()
    Image.fromarray(camera).save(buf, format="PNG")
    png = buf.getvalue()
    np.testing.assert_array_equal(decode_image(png), camera)
    assert image_size(png) == (512, 512)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", what="reference")
    with pytest.raises(ImageDecodeError, match="candidate"):
        decode_image(b"definitely not an image", what="candidate")
    with pytest.raises(ImageDecodeError, match="reference"):
        decode_image(png[: len(png) // 2], what="reference")
    gif = io.BytesIO()
    Image.fromarray(camera).save(gif, format="GIF")
    with pytest.raises(ImageDecodeError, match="GIF"):
        decode_image(gif.getvalue())
    with pytest.raises(ImageDecodeError):
        image_size(b"nope")
    (tmp_path / "x.gif").write_bytes(gif.getvalue())
    with pytest.raises(ImageDecodeError, match=r"\.gif"):
        load_image(tmp_path / "x.gif")
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageDecodeError, match=r"fake\.png"):
        raw_finder(strategy="difference").run(tmp_path / "fake.png", camera)


def test_limits_are_checked_before_decoding(camera) -> None:
    buf = io.BytesIO()
    Image.new("L", (3000, 2000)).save(buf, format="PNG")  # small file, 6 megapixels
    data = buf.getvalue()
    with pytest.raises(InputError, match="3000x2000") as info:
        decode_image(data, limits=Limits(max_pixels=1_000_000))
    assert info.value.extra["limit"] == "max_pixels"
    with pytest.raises(InputError, match="2500") as info:
        decode_image(data, limits=Limits(max_side=2500))
    assert info.value.extra["limit"] == "max_side"
    assert decode_image(data, limits=Limits(max_pixels=6_000_000, max_side=3000)).shape == (
        2000, 3000)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` (its pixel data is empty: only the header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def test_the_callers_pixel_limit_rules_over_pillows_bomb_guard() -> None:
    """A header far past Pillow's ~89 MP guard is refused by the caller's limit, named as
    such; a limit above Pillow's guard is honoured (a 100 MP scan decodes); without limits
    Pillow's guard stays, and it is back in place afterwards."""
    guard = Image.MAX_IMAGE_PIXELS
    huge = _png_header(100_000, 100_000)
    with pytest.raises(InputError, match="claims 10000000000 pixels, over the limit of "
                                         "40000000") as info:
        decode_image(huge, limits=Limits(max_pixels=40_000_000))
    assert info.value.extra["limit"] == "max_pixels"
    assert "80000000" not in str(info.value) and "178956970" not in str(info.value)  # one limit
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a small file
    big = buf.getvalue()
    assert decode_image(big, limits=Limits(max_pixels=200_000_000)).shape == (10_000, 10_000)
    with pytest.raises(InputError, match="decompression bomb"):
        decode_image(big)
    with pytest.raises(InputError, match="decompression bomb"):
        image_size(big)  # header readers follow the same rule
    assert guard == Image.MAX_IMAGE_PIXELS


def test_a_raised_pixel_limit_never_unguards_other_threads() -> None:
    """While one thread reads headers under a limit above Pillow's guard, a limitless read in
    another thread is still refused every time (the guard is raised under a lock, never off)."""
    import threading

    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a small file
    big = buf.getvalue()
    stop, seen = threading.Event(), []

    def allowed() -> None:
        while not stop.is_set():
            with open_header(io.BytesIO(big), Limits(max_pixels=200_000_000)) as img:
                seen.append(img.size)

    worker = threading.Thread(target=allowed)
    worker.start()
    try:
        refused = 0
        for _ in range(200):
            with pytest.raises(InputError, match="decompression bomb"):
                image_size(big)
            refused += 1
    finally:
        stop.set()
        worker.join()
    assert refused == 200 and seen and set(seen) == {(10_000, 10_000)}


@pytest.mark.parametrize(("shape", "batched", "expected"), [
    ((5, 7), False, (1, 1, 5, 7)),
    ((3, 5, 7), False, (1, 3, 5, 7)),
    ((5, 7, 3), False, (1, 3, 5, 7)),
    ((2, 3, 5, 7), True, (2, 3, 5, 7)),
    ((2, 5, 7, 4), True, (2, 3, 5, 7)),  # RGBA, alpha dropped
    ((1, 5, 7, 1), True, (1, 1, 5, 7)),
])
def test_to_tensor_shapes(shape, batched, expected) -> None:
    for arr in (np.zeros(shape, np.uint8), torch.zeros(shape, dtype=torch.uint8)):
        t, b = to_tensor(arr)
        assert tuple(t.shape) == expected and b is batched and t.dtype == torch.float32


def test_ambiguous_shapes_follow_each_library_convention() -> None:
    # (3, 5, 4): both ends could be channels. numpy is channel-last, torch channel-first.
    assert tuple(to_tensor(np.zeros((3, 5, 4), np.uint8))[0].shape) == (1, 3, 3, 5)
    assert tuple(to_tensor(torch.zeros(3, 5, 4))[0].shape) == (1, 3, 5, 4)


@pytest.mark.parametrize("bad", [
    np.zeros((5, 6, 7), np.uint8),  # no channel axis
    np.zeros((2, 3, 4, 5, 6), np.uint8),  # 5-D
    np.zeros(5, np.uint8),  # 1-D
    np.zeros((0, 5), np.uint8),
    np.zeros((4, 4), np.int32),  # ambiguous integer range
    np.zeros((4, 4), np.complex64),
    np.array([[0.0, np.nan], [0.0, 1.0]]),
    np.array([[0.0, np.inf], [0.0, 1.0]], np.float32),
    np.zeros((4, 4), dtype=object),
    torch.zeros(4, 4, dtype=torch.int64),
    torch.zeros(4, 4, dtype=torch.complex64),
    torch.full((4, 4), float("nan")),
    [[0, 1], [1, 0]],
    "not/a/file.png",
])
def test_bad_inputs_raise_input_error(bad) -> None:
    with pytest.raises(InputError):
        to_tensor(bad)


def test_align_pair_policies() -> None:
    a, b = torch.rand(1, 3, 40, 60), torch.rand(1, 3, 30, 70)
    with pytest.raises(ShapeMismatchError, match=r"60x40.*70x30") as info:
        align_pair(a, b)
    assert info.value.extra == {"reference": [60, 40], "candidate": [70, 30]}
    r, c = align_pair(a, b, "resize")
    assert r.shape == c.shape == (1, 3, 40, 60) and torch.equal(r, a)
    r, c = align_pair(a, b, "crop")
    assert r.shape == c.shape == (1, 3, 30, 60)
    assert torch.equal(r, a[..., :30, :60]) and torch.equal(c, b[..., :30, :60])
    r, c = align_pair(a, b, "pad")
    assert r.shape == c.shape == (1, 3, 40, 70)
    assert torch.equal(r[..., :40, :60], a) and r[..., 60:].abs().sum() == 0
    assert torch.equal(c[..., :30, :70], b) and c[..., 30:, :].abs().sum() == 0
    # One image against a batch is broadcast; unequal batches are refused.
    r, c = align_pair(torch.rand(1, 1, 8, 8), torch.rand(4, 3, 8, 8))
    assert r.shape == c.shape == (4, 3, 8, 8)
    with pytest.raises(ShapeMismatchError, match="batch"):
        align_pair(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))


def test_size_policy_through_finder(camera) -> None:
    with pytest.raises(ShapeMismatchError, match="size_policy"):
        raw_finder(strategy="difference").run(camera, camera[:500, :400])
    assert raw_finder(strategy="difference", size_policy="crop").run(
        camera, camera[:500, :400]).shape == (500, 400)
    resized = raw_finder(strategy="difference", size_policy="resize").run(camera, camera[::2, ::2])
    assert resized.shape == (512, 512) and resized.mean() < 0.05
