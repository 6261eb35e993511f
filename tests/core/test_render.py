"""Rendering: colormaps come from cmap, ranges are honoured, PNGs decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from cmap import Colormap
from PIL import Image

from core import ConfigError, Finder, PipelineConfig
from core.render import (
    RenderConfig,
    colorbar,
    colorize,
    gray16_png,
    heatmap,
    heatmap_png,
    overlay,
    value_range,
)


def test_colorize_uses_cmap_table_end_points() -> None:
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[None, :]
    rgb = colorize(ramp, "viridis", 0.0, 1.0)
    expected = np.asarray(Colormap("viridis").lut(256))[:, :3] * 255
    assert rgb.shape == (1, 256, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[0].astype(float) - expected).max() <= 1.0


def test_values_outside_range_clip_to_end_colours() -> None:
    m = np.array([[-5.0, 0.0, 1.0, 7.0]])
    rgb = colorize(m, "magma", 0.0, 1.0)
    assert (rgb[0, 0] == rgb[0, 1]).all() and (rgb[0, 2] == rgb[0, 3]).all()
    assert not (rgb[0, 0] == rgb[0, 3]).all()


def test_value_range_percentile_symmetric_and_shared() -> None:
    a = np.arange(101, dtype=float)
    assert value_range(a) == (0.0, 100.0)
    assert value_range(a, percentile=90) == (0.0, 90.0)
    assert value_range(a - 50, symmetric=True) == (-50.0, 50.0)
    assert value_range([a, a * 3]) == (0.0, 300.0)  # one scale for several panels
    assert value_range(a, vmin=10, vmax=20) == (10.0, 20.0)


def test_unknown_colormap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown colormap"):
        colorize(np.zeros((2, 2)), "not-a-colormap")
    with pytest.raises(ValueError, match="unknown colormap"):
        PipelineConfig(render={"colormap": "not-a-colormap"})
    with pytest.raises(ConfigError, match=r"render\.colormap: unknown colormap") as info:
        Finder(config={"render": {"colormap": "not-a-colormap"}})
    assert "Value error" not in str(info.value)  # pydantic's prefix is dropped


def test_heatmap_png_with_colorbar_is_wider_and_decodes(astronaut: np.ndarray) -> None:
    m = astronaut[..., 0].astype(np.float32) / 255
    plain = Image.open(io.BytesIO(heatmap_png(m)))
    with_bar = Image.open(io.BytesIO(heatmap_png(m, RenderConfig(colorbar=True, label="x"))))
    assert plain.size == (512, 512)
    assert with_bar.height == 512 and with_bar.width > 512 + 20


def test_colorbar_runs_from_vmax_at_top_to_vmin_at_bottom() -> None:
    bar = np.asarray(colorbar(200, "gray", 0.0, 1.0))
    assert bar[0, 5].mean() > 250 and bar[-1, 5].mean() < 5


def test_overlay_alpha_blends() -> None:
    base = np.full((8, 8, 3), 100, np.uint8)
    m = np.ones((8, 8), np.float32)
    out0 = np.asarray(overlay(base, m, 0.0))
    out1 = np.asarray(overlay(base, m, 1.0, RenderConfig(colormap="gray", vmin=0, vmax=1)))
    assert (out0 == 100).all() and (out1 == 255).all()
    with pytest.raises(ConfigError):
        overlay(base, m, 1.5)


def test_gray16_png_is_lossless_to_16_bits() -> None:
    m = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    img = Image.open(io.BytesIO(gray16_png(m, 0.0, 1.0)))
    back = np.asarray(img).astype(np.float64) / 65535
    assert img.mode.startswith("I;16") and back.shape == (32, 48)
    assert np.abs(back - m).max() <= 1 / 65535


def test_heatmap_of_channel_map_uses_channel_max() -> None:
    m = np.zeros((3, 4, 4), np.float32)
    m[1, 2, 2] = 1
    img = np.asarray(heatmap(m, RenderConfig(colormap="gray")))
    assert img[2, 2].mean() == 255 and img[0, 0].mean() == 0


def test_a_reversed_range_is_refused_naming_both_ends() -> None:
    from pydantic import ValidationError

    from core import PipelineConfig
    from core.render import RenderConfig

    for bad in ({"vmin": 5, "vmax": 1}, {"vmin": 2, "vmax": 2}):
        with pytest.raises(ValidationError, match=r"vmin \(\d\) must be below vmax \(\d\)"):
            RenderConfig(**bad)
        with pytest.raises(ValidationError, match="must be below vmax"):
            PipelineConfig(render=bad)
    assert RenderConfig(vmin=1, vmax=5).vmax == 5
