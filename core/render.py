"""Turn difference maps into pictures: heatmaps, colorbars, overlays, 16-bit PNG.

Colormaps come from the maintained ``cmap`` package (no hand-typed tables).
Any name ``cmap`` knows works; :data:`COLORMAPS` and :data:`DIVERGING` are the
recommended perceptual sequential and diverging ones.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError
from .numeric import channel_plane

__all__ = [
    "COLORMAPS",
    "DIVERGING",
    "RenderConfig",
    "colorbar",
    "colorize",
    "gray16_png",
    "heatmap",
    "heatmap_png",
    "load_font",
    "lut",
    "nice_ticks",
    "overlay",
    "tick_marks",
    "to_png",
    "value_range",
]

#: perceptually uniform sequential maps, for unsigned difference maps
COLORMAPS = ("magma", "viridis", "inferno", "plasma", "cividis", "gray", "turbo")
#: diverging maps, for signed maps (improvement maps, signed gradients)
DIVERGING = ("RdBu_r", "coolwarm", "PiYG", "PuOr", "BrBG")
_ALIASES = {"RdBu_r": "colorbrewer:RdBu_r", "PiYG": "colorbrewer:PiYG",
            "PuOr": "colorbrewer:PuOr", "BrBG": "colorbrewer:BrBG", "gray": "gray",
            "coolwarm": "coolwarm"}


@lru_cache(maxsize=64)
def lut(name: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colour table of colormap ``name``; ConfigError if unknown."""
    from cmap import Colormap

    try:
        table = Colormap(_ALIASES.get(name, name)).lut(n)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"unknown colormap {name!r}; try one of: {', '.join(COLORMAPS + DIVERGING)}"
        ) from None
    return np.clip(np.asarray(table)[:, :3] * 255 + 0.5, 0, 255).astype(np.uint8)


def _check_colormap(name: str) -> str:
    lut(name)
    return name


class RenderConfig(BaseModel):
    """How a map is drawn: colormap, value range, colorbar."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    colormap: str = "magma"
    vmin: float | None = Field(None, description="value drawn as the colormap's first colour")
    vmax: float | None = Field(None, description="value drawn as its last colour")
    percentile: Annotated[float, Field(gt=0.0, le=100.0)] | None = Field(
        None, description="if set (and vmax is not), vmax is this percentile of the map")
    colorbar: bool = False
    label: str | None = Field(None, max_length=80, description="colorbar label")
    symmetric: bool = Field(False, description="range +-max|map|, for signed maps")
    scale: Literal["linear", "sqrt"] = Field(
        "linear", description="how values map to colours; sqrt shows weak spots brighter")

    @field_validator("colormap")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            return _check_colormap(v)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _ordered(self) -> RenderConfig:
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            raise ValueError(f"vmin ({self.vmin:g}) must be below vmax ({self.vmax:g})")
        return self

    def with_range(self, vmin: float, vmax: float, colormap: str | None = None) -> RenderConfig:
        """The same drawing (scale, label, colorbar) on a fixed range, e.g. one shared by
        several maps; ``colormap`` replaces the colormap when given."""
        update: dict[str, object] = {"vmin": vmin, "vmax": vmax, "percentile": None,
                                     "symmetric": False}
        if colormap is not None:
            update["colormap"] = colormap
        return self.model_copy(update=update)


def value_range(
    maps: np.ndarray | list[np.ndarray], vmin: float | None = None, vmax: float | None = None,
    percentile: float | None = None, symmetric: bool = False,
) -> tuple[float, float]:
    """One (vmin, vmax) for one or several maps, so panels share a scale."""
    values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in (
        maps if isinstance(maps, list) else [maps])])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    if symmetric:
        span = np.percentile(np.abs(values), percentile) if percentile else np.abs(values).max()
        lo, hi = -float(span), float(span)
    else:
        lo = float(values.min())
        hi = float(np.percentile(values, percentile)) if percentile else float(values.max())
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1e-12 if hi == lo else lo
    return lo, hi


def _position(v: np.ndarray, lo: float, hi: float, scale: str) -> np.ndarray:
    """Values -> 0..1 along the colormap (clipped), linearly or by square root."""
    f = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return np.sqrt(f) if scale == "sqrt" else f


def colorize(m: np.ndarray, colormap: str = "magma", vmin: float | None = None,
             vmax: float | None = None, scale: str = "linear") -> np.ndarray:
    """(H, W) map -> (H, W, 3) uint8 colours; values outside the range clip."""
    m = channel_plane(np.asarray(m, dtype=np.float32))
    lo, hi = value_range(m, vmin, vmax)
    idx = _position(m, lo, hi, scale) * 255 + 0.5
    idx = np.nan_to_num(idx, nan=0).astype(np.uint8)
    return lut(colormap)[idx]


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (a fixed size on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values (1, 2 or 5 times a power of ten apart) from lo to hi."""
    span = hi - lo
    if not np.isfinite(span) or span <= 0:
        return [lo]
    raw = span / max(1, n - 1)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(f * mag for f in (1, 2, 2.5, 5, 10) if f * mag >= raw * 0.999)
    first = np.ceil(lo / step - 1e-9) * step
    out = [float(round(v, 12)) + 0.0 for v in np.arange(first, hi + step * 1e-9, step)]
    return ([lo] if out[0] - lo > step / 2 else []) + out  # the scale's start, when far


def tick_marks(vmin: float, vmax: float, scale: str = "linear",
               ticks: int = 5) -> list[tuple[float, str]]:
    """A colorbar's ticks as (position 0-1 from its start, text): ``ticks`` evenly spaced
    on a linear scale; round values at their colour positions on a sqrt scale."""
    if scale != "linear":
        values = nice_ticks(vmin, vmax, ticks)
        return [(float(_position(np.float64(v), vmin, vmax, scale)), f"{v:g}") for v in values]
    where = [i / (ticks - 1) for i in range(ticks)]
    return [(f, _fmt(vmin + (vmax - vmin) * f)) for f in where]


def colorbar(height: int, colormap: str, vmin: float, vmax: float, label: str | None = None,
             ticks: int = 5, width: int = 18, scale: str = "linear") -> Image.Image:
    """A vertical colorbar with ``ticks`` labelled ticks, as an RGB image.

    ``scale="sqrt"`` draws the square-root colour scale with ticks at round values."""
    font_size = max(10, min(16, height // 25))
    font = load_font(font_size)
    grad = np.linspace(1.0, 0.0, max(height, 2))[:, None].repeat(width, 1)
    bar = Image.fromarray(lut(colormap)[(grad * 255 + 0.5).astype(np.uint8)])
    marks = tick_marks(vmin, vmax, scale, ticks)
    where = [f for f, _ in marks]
    texts = [t for _, t in marks]
    text_w = max(int(font.getlength(t)) for t in texts) + 6
    label_w = font_size + 8 if label else 0
    out = Image.new("RGB", (width + 6 + text_w + label_w, height), "white")
    out.paste(bar, (0, 0))
    draw = ImageDraw.Draw(out)
    for f, t in zip(where, texts, strict=True):
        y = round((height - 1) * (1 - f))
        draw.line([(width, y), (width + 4, y)], fill="black")
        ty = min(max(y - font_size // 2, 0), height - font_size - 1)
        draw.text((width + 6, ty), t, fill="black", font=font)
    if label:
        tw = int(font.getlength(label)) + 4
        strip = Image.new("RGB", (tw, font_size + 6), "white")
        ImageDraw.Draw(strip).text((2, 0), label, fill="black", font=font)
        strip = strip.rotate(90, expand=True)
        out.paste(strip, (out.width - label_w + 2, max(0, (height - strip.height) // 2)))
    return out


def heatmap(m: np.ndarray, cfg: RenderConfig | None = None) -> Image.Image:
    """A map drawn with a colormap, with a colorbar to its right if asked."""
    cfg = cfg or RenderConfig()
    lo, hi = value_range(m, cfg.vmin, cfg.vmax, cfg.percentile, cfg.symmetric)
    img = Image.fromarray(colorize(m, cfg.colormap, lo, hi, cfg.scale))
    if not cfg.colorbar:
        return img
    bar = colorbar(img.height, cfg.colormap, lo, hi, cfg.label, scale=cfg.scale)
    out = Image.new("RGB", (img.width + 8 + bar.width, img.height), "white")
    out.paste(img, (0, 0))
    out.paste(bar, (img.width + 8, 0))
    return out


def to_png(img: Image.Image, dpi: int | None = None) -> bytes:
    """Encode as PNG, recording ``dpi`` in the file when given."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    return buf.getvalue()


def heatmap_png(m: np.ndarray, cfg: RenderConfig | None = None) -> bytes:
    """:func:`heatmap` encoded as PNG bytes."""
    return to_png(heatmap(m, cfg))


def overlay(image: np.ndarray | Image.Image, m: np.ndarray, alpha: float = 0.5,
            cfg: RenderConfig | None = None) -> Image.Image:
    """The map's colours blended over ``image`` with opacity ``alpha`` (0-1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must lie in [0, 1], got {alpha}")
    cfg = cfg or RenderConfig()
    base = image if isinstance(image, Image.Image) else _as_image(image)
    base = base.convert("RGB")
    lo, hi = value_range(m, cfg.vmin, cfg.vmax, cfg.percentile, cfg.symmetric)
    colours = Image.fromarray(colorize(m, cfg.colormap, lo, hi, cfg.scale))
    if colours.size != base.size:
        colours = colours.resize(base.size, Image.Resampling.NEAREST)
    return Image.blend(base, colours, alpha)


def _as_image(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        scale = 65535.0 if a.dtype == np.uint16 else 1.0
        a = np.clip(a.astype(np.float32) / scale * 255 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def gray16_png(m: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> bytes:
    """The map as a 16-bit grayscale PNG (lossless to 1/65535 of the range)."""
    m = channel_plane(np.asarray(m, dtype=np.float64))
    lo, hi = value_range(m, vmin, vmax)
    q = np.clip((m - lo) / (hi - lo) * 65535 + 0.5, 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(q).save(buf, format="PNG")  # uint16 -> mode I;16
    return buf.getvalue()
