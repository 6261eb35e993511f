"""The paper figure of a :class:`~core.results.Comparison`.

A grid: the reference and each candidate (labels and scores above, boxes at
the strongest difference regions), enlarged crops of those boxes below them,
every map on one shared scale with one colorbar, and improvement maps over
the baseline (diverging colormap) when there is one. The grid is laid out
once as a list of elements, then drawn as a raster (PNG, PDF) or as SVG with
vector text and boxes around embedded raster panels.
"""

from __future__ import annotations

import base64
import io
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import ConfigError
from .formats import FIGURE_FORMATS
from .numeric import channel_plane, gaussian_blur
from .regions import RegionsConfig, find_regions
from .render import DIVERGING, colorbar, colorize, load_font, lut, tick_marks, to_png
from .results import Comparison

__all__ = [
    "FIGURE_FORMATS",
    "IMPROVEMENT_COLORMAP",
    "MEDIA_TYPES",
    "Layout",
    "figure_bytes",
    "inset_boxes",
    "layout_figure",
    "save_figure",
]

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
#: inset box colours: bright, distinct on photos and on magma/viridis maps
#: improvement maps: green where a candidate beats the baseline, pink where it is worse
IMPROVEMENT_COLORMAP = "PiYG"
BOX_COLOURS = ("#00e5ff", "#ffd600", "#ff40ff", "#76ff03", "#ff6d00", "#ffffff")
_FONT_FAMILY = "DejaVu Sans, Helvetica, Arial, sans-serif"
_TICKS = 5


@dataclass
class Panel:
    """A raster placed at (x, y); ``kind`` is panel, inset or colorbar."""

    x: int
    y: int
    image: Image.Image
    kind: str = "panel"
    name: str = ""


@dataclass
class Text:
    x: int
    y: int  # top of the text
    text: str
    size: int
    anchor: str = "start"  # or "middle"


@dataclass
class Box:
    x: int
    y: int
    width: int
    height: int
    colour: str
    line: int


@dataclass
class Bar:
    """A colorbar: gradient ``width`` px wide, ticks and a label to its right."""

    x: int
    y: int
    height: int
    colormap: str
    vmin: float
    vmax: float
    label: str | None
    raster: Image.Image  # core.render.colorbar's drawing, used by raster output
    scale: str = "linear"  # the colour scale (RenderConfig.scale): where the ticks sit


@dataclass
class Layout:
    """A figure as positioned elements; draw it with :meth:`to_image` or :meth:`to_svg`."""

    width: int
    height: int
    panels: list[Panel] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)

    def to_image(self) -> Image.Image:
        """The whole figure as one RGB image."""
        canvas = Image.new("RGB", (self.width, self.height), "white")
        for p in self.panels:
            canvas.paste(p.image.convert("RGB"), (p.x, p.y))
        for b in self.bars:
            canvas.paste(b.raster, (b.x, b.y))
        draw = ImageDraw.Draw(canvas)
        for t in self.texts:
            font = load_font(t.size)
            x = t.x - font.getlength(t.text) / 2 if t.anchor == "middle" else t.x
            draw.text((x, t.y), t.text, fill="black", font=font)
        for b in self.boxes:
            draw.rectangle([b.x, b.y, b.x + b.width - 1, b.y + b.height - 1],
                           outline=b.colour, width=b.line)
        return canvas

    def to_svg(self, dpi: int = 300) -> bytes:
        """SVG 1.1: vector text, boxes and colorbar ticks; panels embedded as PNG."""
        svg = ET.Element("svg", {
            "xmlns": "http://www.w3.org/2000/svg", "version": "1.1",
            "xmlns:xlink": "http://www.w3.org/1999/xlink",
            "width": f"{self.width / dpi:.4f}in", "height": f"{self.height / dpi:.4f}in",
            "viewBox": f"0 0 {self.width} {self.height}",
        })
        ET.SubElement(svg, "rect", {"width": "100%", "height": "100%", "fill": "white"})
        for p in self.panels:
            _svg_image(svg, p.x, p.y, p.image, p.kind, p.name)
        for b in self.bars:
            _svg_bar(svg, b)
        for t in self.texts:
            _svg_text(svg, t.x, t.y, t.text, t.size, t.anchor)
        for b in self.boxes:
            half = b.line / 2
            ET.SubElement(svg, "rect", {
                "class": "box", "x": f"{b.x + half:g}", "y": f"{b.y + half:g}",
                "width": f"{b.width - b.line:g}", "height": f"{b.height - b.line:g}",
                "fill": "none", "stroke": b.colour, "stroke-width": str(b.line)})
        return ET.tostring(svg, encoding="utf-8", xml_declaration=True)


def _png_uri(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(img)).decode("ascii")


def _svg_image(svg: ET.Element, x: int, y: int, img: Image.Image, kind: str, name: str) -> None:
    attrs = {"class": kind, "x": str(x), "y": str(y), "width": str(img.width),
             "height": str(img.height), "xlink:href": _png_uri(img),
             "preserveAspectRatio": "none"}
    if name:
        attrs["data-name"] = name
    ET.SubElement(svg, "image", attrs)


def _svg_text(svg: ET.Element, x: float, y: float, text: str, size: int,
              anchor: str = "start") -> None:
    el = ET.SubElement(svg, "text", {
        "x": f"{x:g}", "y": f"{y + size * 0.8:g}", "font-family": _FONT_FAMILY,
        "font-size": str(size), "text-anchor": anchor, "fill": "black"})
    el.text = text


def _svg_bar(svg: ET.Element, b: Bar) -> None:
    """Gradient as an embedded raster; ticks, numbers and label as vector elements."""
    grad = np.linspace(1.0, 0.0, max(b.height, 2))[:, None].repeat(_BAR_W, 1)
    strip = Image.fromarray(lut(b.colormap)[(grad * 255 + 0.5).astype(np.uint8)])
    _svg_image(svg, b.x, b.y, strip, "colorbar", b.label or "")
    size = max(10, min(16, b.height // 25))
    text_w = 0.0
    for f, text in tick_marks(b.vmin, b.vmax, b.scale, _TICKS):
        y = b.y + round((b.height - 1) * (1 - f))
        ET.SubElement(svg, "line", {"x1": str(b.x + _BAR_W), "x2": str(b.x + _BAR_W + 4),
                                    "y1": str(y), "y2": str(y), "stroke": "black"})
        ty = min(max(y - size // 2, b.y), b.y + b.height - size - 1)
        _svg_text(svg, b.x + _BAR_W + 6, ty, text, size)
        text_w = max(text_w, load_font(size).getlength(text))
    if b.label:
        cx = b.x + _BAR_W + 6 + text_w + 6 + size / 2
        cy = b.y + b.height / 2
        el = ET.SubElement(svg, "text", {
            "x": f"{cx:g}", "y": f"{cy:g}", "font-family": _FONT_FAMILY, "font-size": str(size),
            "text-anchor": "middle", "dominant-baseline": "central", "fill": "black",
            "transform": f"rotate(-90 {cx:g} {cy:g})"})
        el.text = b.label


_BAR_W = 18  # core.render.colorbar's default gradient width


def inset_boxes(comparison: Comparison, count: int = 2) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` square boxes (x, y, side, side) at the strongest differences.

    The candidates' map magnitudes are averaged and lightly smoothed; the
    top 1% of that map is split into regions, ranked by their share of the
    total, and each becomes a box of 1/8 to 1/4 of the shorter image side.
    Boxes that overlap one already chosen are skipped.
    """
    if count <= 0:
        return []
    planes = [channel_plane(np.abs(c.map)) for c in comparison.candidates]
    combined = torch.from_numpy(np.mean(planes, axis=0, dtype=np.float32))
    h, w = combined.shape
    combined = gaussian_blur(combined, sigma=max(1.0, min(h, w) / 100)).numpy()
    found = find_regions(combined, RegionsConfig(
        threshold="percentile", percentile=99.0, min_area=1, max_regions=20))
    floor, ceiling = max(8, min(h, w) // 8), max(8, min(h, w) // 4)
    boxes: list[tuple[int, int, int, int]] = []
    for r in found:
        side = min(ceiling, max(floor, math.ceil(max(r.width, r.height) * 1.5)), h, w)
        cx, cy = r.x + r.width / 2, r.y + r.height / 2
        x = int(min(max(round(cx - side / 2), 0), w - side))
        y = int(min(max(round(cy - side / 2), 0), h - side))
        box = (x, y, side, side)
        if all(_iou(box, b) < 0.1 for b in boxes):
            boxes.append(box)
        if len(boxes) == count:
            break
    return boxes


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _score_text(key: str, value: float) -> str:
    name = key.upper() if not key.startswith("pipeline:") else key
    if math.isinf(value):
        return f"{name} inf"
    if math.isnan(value):
        return f"{name} n/a"
    return f"{name} {value:.2f} dB" if key.endswith("psnr") else f"{name} {value:.4f}"


def _wrap(parts: list[str], font: ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    for part in parts:
        if lines and font.getlength(lines[-1] + "   " + part) <= width:
            lines[-1] += "   " + part
        else:
            lines.append(part)
    return lines


def _fit(text: str, font: ImageFont.ImageFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _map_label(comparison: Comparison) -> str:
    cfg = comparison.config
    if cfg.render.label:
        return cfg.render.label
    metric, strategy = cfg.metric["name"], cfg.strategy["name"]
    return {"map": f"{metric} map", "difference": "difference",
            "gradient": f"{metric} gradient"}.get(strategy, strategy)


def layout_figure(
    comparison: Comparison, *, insets: int = 2, panel_width: int | None = None,
    colormap: str | None = None, improvement_colormap: str = IMPROVEMENT_COLORMAP,
    metrics: bool = True,
) -> Layout:
    """Lay the figure out: columns reference + candidates; rows images, insets, maps,
    improvement maps (with a baseline). ``panel_width`` defaults to the image
    width, at least 32 and at most 384 px; colours default to the pipeline's render options.
    """
    if not 0 <= insets <= len(BOX_COLOURS):
        raise ConfigError(f"insets must lie in 0..{len(BOX_COLOURS)}, got {insets}")
    if improvement_colormap not in DIVERGING:
        raise ConfigError(f"improvement maps are signed: choose a diverging colormap "
                          f"({', '.join(DIVERGING)}), not {improvement_colormap!r}")
    cmap = colormap or comparison.config.render.colormap
    lut(cmap)
    h, w = comparison.candidates[0].map.shape[-2:]
    pw = int(panel_width or max(32, min(w, 384)))  # a tiny image is drawn at least 32 wide
    if not 32 <= pw <= 4096:
        raise ConfigError(f"panel_width must lie in 32..4096, got {pw}")
    ph = max(1, round(h * pw / w))
    k = pw / w  # image pixels -> panel pixels
    gap, margin = max(6, pw // 48), max(10, pw // 32)
    fs = max(11, round(pw / 24))
    small = max(10, round(fs * 0.8))
    line = max(2, round(pw / 160))
    n = len(comparison.candidates)
    cols = [margin + j * (pw + gap) for j in range(n + 1)]
    header_font, small_font = load_font(fs), load_font(small)

    captions: list[list[str]] = [[]]
    for c in comparison.candidates:
        keys = [key for key in ("psnr", "ssim", "ms-ssim", "lpips") if key in c.metrics]
        keys += [key for key in c.metrics if key not in keys]
        captions.append(_wrap([_score_text(key, c.metrics[key]) for key in keys], small_font, pw)
                        if metrics else [])
    header = fs + 6 + max(len(cap) for cap in captions) * (small + 3) + gap
    layout = Layout(width=0, height=0)
    titles = ["reference", *comparison.labels]
    for j, title in enumerate(titles):
        cx = cols[j] + pw // 2
        layout.texts.append(Text(cx, margin, _fit(title, header_font, pw), fs, "middle"))
        for i, text in enumerate(captions[j]):
            layout.texts.append(Text(cx, margin + fs + 6 + i * (small + 3), text, small,
                                     "middle"))
    y = margin + header
    boxes = inset_boxes(comparison, insets)
    images = [comparison.reference] + [c.image for c in comparison.candidates]
    for j, img in enumerate(images):
        layout.panels.append(Panel(cols[j], y, _resized(Image.fromarray(img), pw, ph), "panel",
                                   titles[j]))
        layout.boxes += _panel_boxes(boxes, cols[j], y, k, line)
    y += ph + gap
    if boxes:
        side = (pw - (len(boxes) - 1) * gap) // len(boxes)
        for j, img in enumerate(images):
            for b, (bx, by, bs, _) in enumerate(boxes):
                crop = Image.fromarray(img[by : by + bs, bx : bx + bs])
                x = cols[j] + b * (side + gap)
                layout.panels.append(Panel(x, y, _resized(crop, side, side), "inset",
                                           f"{titles[j]} inset {b + 1}"))
                layout.boxes.append(Box(x, y, side, side, BOX_COLOURS[b], line))
        y += side + gap
    vmin, vmax = comparison.scale
    scale = comparison.config.render.scale  # sqrt for a significance map: weak spots show
    bar_x = cols[-1] + pw + gap
    layout.texts += _note(cols[0] + pw // 2, y + ph // 2, [
        "difference maps", _map_label(comparison), "one shared scale"], small)
    for j, c in enumerate(comparison.candidates, start=1):
        heat = Image.fromarray(colorize(c.map, cmap, vmin, vmax, scale))
        layout.panels.append(Panel(cols[j], y, _resized(heat, pw, ph), "panel", f"{c.label} map"))
        layout.boxes += _panel_boxes(boxes, cols[j], y, k, line)
    label = _map_label(comparison)
    layout.bars.append(Bar(bar_x, y, ph, cmap, vmin, vmax, label,
                           colorbar(ph, cmap, vmin, vmax, label, scale=scale), scale))
    right = bar_x + layout.bars[-1].raster.width
    y += ph + gap
    if comparison.baseline is not None and comparison.improvement:
        lo, hi = comparison.improvement_scale or (-1.0, 1.0)
        base_col = comparison.labels.index(comparison.baseline) + 1
        gains = {i.label: i for i in comparison.improvement}
        for j, c in enumerate(comparison.candidates, start=1):
            if j == base_col:
                layout.texts += _note(cols[j] + pw // 2, y + ph // 2, [
                    "baseline", "improvement maps:", "> 0 closer to the reference",
                    "< 0 further from it"], small)
                continue
            gain = gains[c.label]
            heat = Image.fromarray(colorize(gain.map, improvement_colormap, lo, hi))
            layout.panels.append(Panel(cols[j], y, _resized(heat, pw, ph), "panel",
                                       f"{c.label} improvement"))
            layout.texts.append(Text(cols[j] + pw // 2, y + ph + 3,
                                     f"better {gain.improved_fraction:.1%}, "
                                     f"worse {gain.worsened_fraction:.1%}", small, "middle"))
        label = f"gain over {comparison.baseline}"
        if len(label) > 40:
            label = "gain over baseline"
        layout.texts += _note(cols[0] + pw // 2, y + ph // 2, [
            "improvement", f"over {_fit(comparison.baseline, small_font, pw)}"], small)
        layout.bars.append(Bar(bar_x, y, ph, improvement_colormap, lo, hi, label,
                               colorbar(ph, improvement_colormap, lo, hi, label)))
        right = max(right, bar_x + layout.bars[-1].raster.width)
        y += ph + small + 6 + gap
    layout.width = right + margin
    layout.height = y - gap + margin
    return layout


def _note(cx: int, cy: int, lines: list[str], size: int) -> list[Text]:
    top = cy - len(lines) * (size + 3) // 2
    return [Text(cx, top + i * (size + 3), t, size, "middle") for i, t in enumerate(lines)]


def _resized(img: Image.Image, width: int, height: int) -> Image.Image:
    """Enlarge with NEAREST (pixels stay visible, as insets should); shrink with LANCZOS."""
    if img.size == (width, height):
        return img
    enlarge = width >= img.width and height >= img.height
    method = Image.Resampling.NEAREST if enlarge else Image.Resampling.LANCZOS
    return img.resize((width, height), method)


def _panel_boxes(boxes: list[tuple[int, int, int, int]], px: int, py: int, k: float,
                 line: int) -> list[Box]:
    return [Box(px + round(x * k), py + round(y * k), max(2 * line + 1, round(s * k)),
                max(2 * line + 1, round(s * k)), BOX_COLOURS[i], line)
            for i, (x, y, s, _) in enumerate(boxes)]


def figure_bytes(comparison: Comparison, fmt: str = "png", dpi: int = 300,
                 **options: object) -> bytes:
    """The figure encoded as ``fmt`` (png, svg, pdf), with ``dpi`` recorded in the file."""
    fmt = fmt.lower()
    if fmt not in FIGURE_FORMATS:
        raise ConfigError(f"unknown figure format {fmt!r}; choose one of: "
                          f"{', '.join(FIGURE_FORMATS)}")
    if not 30 <= dpi <= 2400:
        raise ConfigError(f"dpi must lie in 30..2400, got {dpi}")
    layout = layout_figure(comparison, **options)  # type: ignore[arg-type]
    if fmt == "svg":
        return layout.to_svg(dpi)
    image = layout.to_image()
    if fmt == "png":
        return to_png(image, dpi)
    buf = io.BytesIO()
    image.save(buf, format="PDF", resolution=float(dpi))
    return buf.getvalue()


def save_figure(comparison: Comparison, path: str | Path, fmt: str | None = None,
                dpi: int = 300, **options: object) -> Path:
    """Write the figure to ``path``; the format defaults to its suffix."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower() or "png"
    data = figure_bytes(comparison, fmt, dpi, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
