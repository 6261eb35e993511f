"""core.figure: the paper figure's layout, panels on the shared scale, insets at the
strongest differences, and each output format (PNG with DPI, SVG, PDF)."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import ConfigError
from core.compare import compare
from core.figure import (
    IMPROVEMENT_COLORMAP,
    figure_bytes,
    inset_boxes,
    layout_figure,
    save_figure,
)
from core.render import colorize, tick_marks

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}href"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _edit(img: np.ndarray, y: int, x: int, side: int, delta: float) -> np.ndarray:
    out = img.astype(np.float64)
    out[y : y + side, x : x + side] += delta
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ref(astronaut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(astronaut[::2, ::2])  # 256 x 256


@pytest.fixture(scope="module")
def spots(ref: np.ndarray):
    """Two candidates, each with one edited square in a different place, a baseline."""
    first = _edit(ref, 30, 40, 20, 70.0)  # strong: near the top left
    second = _edit(ref, 180, 190, 20, -50.0)  # weaker: bottom right
    return compare(ref, [first, second], labels=["first", "second"], baseline="first",
                   device="cpu")


@pytest.fixture(scope="module")
def noisy(ref: np.ndarray):
    """A noisy baseline, ours with a third of its noise, and ours with two brightened
    squares: two spots stronger than the noise, so two insets whatever the pipeline."""
    rng = np.random.default_rng(11)
    noise = rng.normal(0, 15, ref.shape)
    base = np.clip(ref + noise, 0, 255).astype(np.uint8)
    ours = np.clip(ref + noise / 3, 0, 255).astype(np.uint8)
    artefacts = _edit(_edit(ours, 100, 100, 24, 60.0), 190, 60, 16, 60.0)
    return compare(ref, [base, ours, artefacts],
                   labels=["baseline", "ours", "ours + artefact"], baseline="baseline",
                   device="cpu")


def _contains(box: tuple[int, int, int, int], y: int, x: int) -> bool:
    bx, by, side, _ = box
    return bx <= x < bx + side and by <= y < by + side


def test_insets_sit_on_the_strongest_differences(spots) -> None:
    boxes = inset_boxes(spots, 2)
    assert len(boxes) == 2
    assert _contains(boxes[0], 40, 50)  # the stronger edit first
    assert _contains(boxes[1], 190, 200)
    for bx, by, side, side2 in boxes:
        assert side == side2 and 32 <= side <= 64  # 1/8 .. 1/4 of 256
        assert 0 <= bx <= 256 - side and 0 <= by <= 256 - side
    assert inset_boxes(spots, 1) == boxes[:1]
    assert inset_boxes(spots, 0) == []


def test_no_insets_for_identical_images(ref) -> None:
    same = compare(ref, [ref.copy()], device="cpu")
    assert inset_boxes(same, 2) == []
    layout = layout_figure(same)
    assert not [p for p in layout.panels if p.kind == "inset"]


def test_layout_panels_share_one_scale_and_use_a_diverging_map(noisy) -> None:
    layout = layout_figure(noisy, insets=2)
    names = [p.name for p in layout.panels if p.kind == "panel"]
    assert names == ["reference", "baseline", "ours", "ours + artefact", "baseline map",
                     "ours map", "ours + artefact map", "ours improvement",
                     "ours + artefact improvement"]
    vmin, vmax = noisy.scale
    scale = noisy.config.render.scale  # the pipeline's: sqrt for the default significance map
    assert scale == "sqrt" and layout.bars[0].scale == scale
    panels = {p.name: p for p in layout.panels}
    for c in noisy.candidates:  # 256 px panels: no resampling, exact colours
        expected = colorize(c.map, "magma", vmin, vmax, scale)
        np.testing.assert_array_equal(np.asarray(panels[f"{c.label} map"].image), expected)
    lo, hi = noisy.improvement_scale
    for gain in noisy.improvement:
        expected = colorize(gain.map, IMPROVEMENT_COLORMAP, lo, hi)
        np.testing.assert_array_equal(
            np.asarray(panels[f"{gain.label} improvement"].image), expected)
    np.testing.assert_array_equal(np.asarray(panels["reference"].image), noisy.reference)
    bars = [(b.colormap, b.vmin, b.vmax) for b in layout.bars]
    assert bars == [("magma", vmin, vmax), (IMPROVEMENT_COLORMAP, lo, hi)]
    # insets: two per image column, enlarged crops of the same boxes
    insets = [p for p in layout.panels if p.kind == "inset"]
    assert len(insets) == 2 * 4
    (bx, by, side, _), _ = inset_boxes(noisy, 2)
    crop = Image.fromarray(noisy.candidates[1].image[by : by + side, bx : bx + side])
    got = next(p.image for p in insets if p.name == "ours inset 1")
    assert got.width > side  # enlarged
    np.testing.assert_array_equal(np.asarray(got), np.asarray(
        crop.resize(got.size, Image.Resampling.NEAREST)))
    # boxes on the 4 images and 3 maps, plus the inset frames
    assert len(layout.boxes) == 2 * (4 + 3) + len(insets)


def test_layout_without_baseline_has_no_improvement_row(spots, ref) -> None:
    plain = compare(ref, [c.image for c in spots.candidates], device="cpu")
    layout = layout_figure(plain, insets=0)
    assert [p.name for p in layout.panels] == [
        "reference", "candidate 1", "candidate 2", "candidate 1 map", "candidate 2 map"]
    assert len(layout.bars) == 1
    assert layout.boxes == []


def test_png_records_dpi_and_draws_the_layout(noisy) -> None:
    data = figure_bytes(noisy, "png", dpi=600)
    layout = layout_figure(noisy)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        assert img.size == (layout.width, layout.height)
        assert img.info["dpi"] == pytest.approx((600, 600), abs=0.05)
        arr = np.asarray(img.convert("RGB"))
    panel = next(p for p in layout.panels if p.name == "ours map")
    inside = arr[panel.y + 70 : panel.y + 90, panel.x + 5 : panel.x + 25]  # clear of boxes
    expected = np.asarray(panel.image)[70:90, 5:25]
    np.testing.assert_array_equal(inside, expected)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "figure.png").write_bytes(data)


def test_svg_is_xml_with_the_expected_panels(noisy) -> None:
    data = figure_bytes(noisy, "svg", dpi=300)
    root = ET.fromstring(data)
    assert root.tag == f"{SVG}svg"
    layout = layout_figure(noisy)
    assert root.get("viewBox") == f"0 0 {layout.width} {layout.height}"
    assert float(root.get("width").removesuffix("in")) == pytest.approx(layout.width / 300,
                                                                          abs=1e-3)
    images = root.findall(f"{SVG}image")
    kinds = [i.get("class") for i in images]
    assert kinds.count("panel") == 1 + 3 + 3 + 2
    assert kinds.count("inset") == 2 * 4
    assert kinds.count("colorbar") == 2
    for node in images:  # every embedded raster decodes at its declared size
        uri = node.get(XLINK)
        assert uri.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
            assert img.size == (int(node.get("width")), int(node.get("height")))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"reference", "baseline", "ours", "ours + artefact"} <= set(texts)
    psnr = noisy.candidate("ours").metrics["psnr"]
    assert any(f"PSNR {psnr:.2f} dB" in t for t in texts if t)  # scores under the labels
    assert any(re.fullmatch(r"better \d+\.\d%, worse \d+\.\d%", t or "") for t in texts)
    vmin, vmax = noisy.scale
    assert f"{vmax:.3g}" in texts and f"{vmin:.3g}" in texts  # vector colorbar ticks
    # at the raster colorbar's round values (the sqrt scale of the significance map)
    ticks = [t for _, t in tick_marks(vmin, vmax, noisy.config.render.scale)]
    assert len(ticks) >= 3 and set(ticks) <= set(texts)
    boxes = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "box"]
    assert len(boxes) == len(layout.boxes)


def test_pdf_is_one_page_at_the_dpi(noisy, tmp_path: Path) -> None:
    path = save_figure(noisy, tmp_path / "figure.pdf", dpi=200)
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    layout = layout_figure(noisy)
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", data)
    assert box is not None
    assert float(box.group(1)) == pytest.approx(layout.width * 72 / 200, abs=0.5)
    assert float(box.group(2)) == pytest.approx(layout.height * 72 / 200, abs=0.5)
    assert data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") + \
        data.count(b"/Type /Page>") >= 1


def test_save_figure_takes_the_format_from_the_suffix(spots, tmp_path: Path) -> None:
    svg = save_figure(spots, tmp_path / "f.svg")
    assert svg.read_bytes().startswith(b"<?xml")
    png = save_figure(spots, tmp_path / "f.png", dpi=72)
    with Image.open(png) as img:
        assert img.format == "PNG"


def test_narrow_panels_scale_the_images(noisy) -> None:
    layout = layout_figure(noisy, panel_width=128)
    ref = next(p for p in layout.panels if p.name == "reference")
    assert ref.image.size == (128, 128)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fmt": "gif"}, "unknown figure format 'gif'"),
    ({"dpi": 5}, "dpi must lie in 30..2400"),
    ({"improvement_colormap": "magma"}, "choose a diverging colormap"),
    ({"colormap": "no-such-map"}, "unknown colormap"),
    ({"insets": 9}, "insets must lie in 0..6"),
    ({"panel_width": 8}, "panel_width must lie in 32..4096"),
])
def test_bad_options_are_config_errors(spots, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        figure_bytes(spots, **kwargs)
