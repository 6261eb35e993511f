"""Response bodies: for a computed pair JSON (map as base64 little-endian float32),
``.npy`` or a PNG heatmap drawn by :mod:`core.render`; for a comparison JSON or the
figure; and Accept negotiation."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from core import PairResult, PipelineConfig
from core.compare import Comparison
from core.figure import IMPROVEMENT_COLORMAP, figure_bytes
from core.figure import MEDIA_TYPES as FIGURE_MEDIA_TYPES
from core.regions import Region
from core.render import RenderConfig, colorbar, heatmap, heatmap_png, to_png
from core.results import finite_values, regions_to_dicts

from .errors import NotAcceptable
from .jsonbody import Base64, dumps

__all__ = [
    "COMPARE_MEDIA_TYPES",
    "FIGURE_FORMAT",
    "JSON",
    "MEDIA_TYPES",
    "NPY",
    "PNG",
    "comparison_bytes",
    "encode",
    "map_payload",
    "negotiate",
    "regions_json",
]

JSON = "application/json"
PNG = "image/png"
NPY = "application/x-npy"
#: what POST /v1/diff can answer, the default first
MEDIA_TYPES = (JSON, PNG, NPY)
#: what POST /v1/compare can answer, the default first
COMPARE_MEDIA_TYPES = (JSON, FIGURE_MEDIA_TYPES["png"], FIGURE_MEDIA_TYPES["svg"],
                       FIGURE_MEDIA_TYPES["pdf"])
#: figure media type -> its format name (and file extension)
FIGURE_FORMAT = {media: fmt for fmt, media in FIGURE_MEDIA_TYPES.items()}


def _parse_accept(header: str) -> list[tuple[str, float, int]]:
    """``Accept`` -> [(media range, q, position)]; malformed q counts as 1."""
    out = []
    for pos, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 1.0
                q = min(1.0, max(0.0, q)) if math.isfinite(q) else 1.0
        out.append((media, q, pos))
    return out


def _specificity(media_range: str, offered: str) -> int:
    """How well ``media_range`` matches ``offered``: 2 exact, 1 type/*, 0 */*, -1 none."""
    if media_range == offered:
        return 2
    if media_range.endswith("/*") and offered.startswith(media_range[:-1]):
        return 1
    return 0 if media_range == "*/*" else -1


def negotiate(accept: str | None, offered: tuple[str, ...] = MEDIA_TYPES) -> str:
    """The media type to answer with (of ``offered``, the default first); 406 when
    nothing offered is acceptable."""
    if not accept or not accept.strip():
        return offered[0]
    ranges = _parse_accept(accept)
    best: tuple[float, int, int] | None = None
    choice = None
    for i, media_type in enumerate(offered):
        # the most specific range that matches decides this type's q (RFC 9110 12.5.1)
        matches = [(s, q) for media, q, _ in ranges
                   if (s := _specificity(media, media_type)) >= 0]
        if not matches:
            continue
        q = max(matches)[1]
        if q <= 0:
            continue
        key = (q, max(matches)[0], -i)
        if best is None or key > best:
            best, choice = key, media_type
    if choice is None:
        raise NotAcceptable(accept, offered)
    return choice


def map_payload(m: np.ndarray) -> dict[str, Any]:
    """A float map as ``{"dtype", "shape", "data"}`` for :func:`~service.jsonbody.dumps`
    (data: base64 of little-endian row-major float32)."""
    le = np.ascontiguousarray(m, dtype="<f4")
    return {"dtype": "float32", "shape": list(le.shape), "data": Base64(le)}


def _stamp(timing_ms: dict[str, float], start: float, arrived: float) -> None:
    """Fill in ``encode`` (since ``start``) and ``total`` (since ``arrived``)."""
    end = time.perf_counter()
    timing_ms["encode"] = (end - start) * 1e3
    timing_ms["total"] = (end - arrived) * 1e3


def regions_json(regions: Sequence[Region]) -> list[dict[str, Any]]:
    """Regions as JSON objects in core's ranked order (strongest first), non-finite
    scores as null."""
    return regions_to_dicts(list(regions))


def npy_bytes(m: np.ndarray) -> bytes:
    """The map as a ``.npy`` file (float32 little-endian), built with one copy of the map
    (``np.save`` into a ``BytesIO`` copies it as the buffer grows, then again on
    ``getvalue``: 1-2 s for a 36-MP map while the heap kept its blocks)."""
    arr = np.ascontiguousarray(m, dtype="<f4")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
    return b"".join([header.getvalue(), memoryview(arr.reshape(-1)).cast("B")])


def json_bytes(result: PairResult, config: PipelineConfig, timing_ms: dict[str, float],
               arrived: float) -> bytes:
    """The JSON response body; ``timing_ms`` gets ``encode`` and ``total`` filled in."""
    start = time.perf_counter()
    payload = map_payload(result.map)
    regions = regions_json(result.regions)
    _stamp(timing_ms, start, arrived)
    body = {
        "map": payload,
        "metrics": finite_values(result.metrics),
        "regions": regions,
        "summary": result.summary,
        "config": config.resolved(mode="json"),
        "timing_ms": {k: round(v, 3) for k, v in timing_ms.items()},
    }
    return dumps(body)


def encode(media: str, result: PairResult, config: PipelineConfig,
           timing_ms: dict[str, float], arrived: float) -> bytes:
    """Encode ``result`` as ``media`` (one of :data:`MEDIA_TYPES`); ``arrived`` is the
    request's ``time.perf_counter()`` at arrival, for ``timing_ms["total"]``."""
    if media == JSON:
        return json_bytes(result, config, timing_ms, arrived)
    start = time.perf_counter()
    body = npy_bytes(result.map) if media == NPY else heatmap_png(result.map, config.render)
    _stamp(timing_ms, start, arrived)
    return body


# --- POST /v1/compare ---------------------------------------------------------------


def _data_url(img: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(img)).decode("ascii")


def _json_body(c: Comparison, heatmaps: bool) -> dict[str, Any]:
    render = c.config.render
    cmap = render.colormap
    vmin, vmax = c.scale
    shared = render.with_range(vmin, vmax).model_copy(update={"colorbar": False})
    body: dict[str, Any] = {
        "scale": {"vmin": vmin, "vmax": vmax},
        "metric": c.metric_key,
        "higher_is_better": c.higher_is_better,
        "candidates": [{
            "label": cand.label, "map": map_payload(cand.map),
            "metrics": finite_values(cand.metrics),
            "skipped": cand.skipped, "regions": regions_json(cand.regions),
            "summary": cand.summary,
            **({"heatmap": _data_url(heatmap(cand.map, shared))} if heatmaps else {}),
        } for cand in c.candidates],
        "baseline": c.baseline,
        "improvement": [],
        "improvement_scale": None,
        "tolerance": c.tolerance,
        "config": c.config.model_dump(mode="json"),
    }
    if heatmaps:
        body["colorbar"] = _data_url(colorbar(256, cmap, vmin, vmax, render.label,
                                              scale=render.scale))
    if c.improvement_scale is not None:
        lo, hi = c.improvement_scale
        body["improvement_scale"] = {"vmin": lo, "vmax": hi}
        diverging = RenderConfig(colormap=IMPROVEMENT_COLORMAP, vmin=lo, vmax=hi)
        for gain in c.improvement:
            body["improvement"].append({
                "label": gain.label, "map": map_payload(gain.map),
                "improved_fraction": gain.improved_fraction,
                "worsened_fraction": gain.worsened_fraction,
                **({"heatmap": _data_url(heatmap(gain.map, diverging))} if heatmaps else {}),
            })
        if heatmaps:
            body["improvement_colorbar"] = _data_url(colorbar(
                256, IMPROVEMENT_COLORMAP, lo, hi, f"gain over {c.baseline}"[:80]))
    return body


def comparison_bytes(media: str, c: Comparison, timing: dict[str, float], arrived: float,
                     dpi: int, insets: int, heatmaps: bool) -> bytes:
    """The answer of /v1/compare as ``media``: JSON, or the figure (PNG, SVG, PDF);
    ``timing`` gets ``encode`` and ``total`` filled in."""
    start = time.perf_counter()
    if media != JSON:
        out = figure_bytes(c, FIGURE_FORMAT[media], dpi, insets=insets)
        _stamp(timing, start, arrived)
        return out
    body = _json_body(c, heatmaps)
    _stamp(timing, start, arrived)
    body["timing_ms"] = {k: round(v, 3) for k, v in timing.items()}
    return dumps(body)
