"""Response bodies for a computed pair: JSON (map as base64 little-endian float32),
``.npy``, or a PNG heatmap drawn by :mod:`core.render`; and Accept negotiation."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from typing import Any

import numpy as np

from core import PairResult, PipelineConfig
from core.metrics import finite_or_none
from core.render import heatmap_png

from .problems import ServiceError

__all__ = ["JSON", "MEDIA_TYPES", "NPY", "PNG", "encode", "map_payload", "negotiate"]

JSON = "application/json"
PNG = "image/png"
NPY = "application/x-npy"
#: what POST /v1/diff can answer, the default first
MEDIA_TYPES = (JSON, PNG, NPY)


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
        raise ServiceError(406, "not-acceptable", f"cannot answer with {accept!r}; "
                           f"available: {', '.join(offered)}", available=list(offered))
    return choice


def map_payload(m: np.ndarray) -> dict[str, Any]:
    """A float map as ``{"dtype", "shape", "data"}`` (base64 little-endian row-major)."""
    le = np.ascontiguousarray(m, dtype="<f4")
    return {"dtype": "float32", "shape": list(le.shape),
            "data": base64.b64encode(le.tobytes()).decode("ascii")}


def npy_bytes(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(m, dtype="<f4"), allow_pickle=False)
    return buf.getvalue()


def json_bytes(result: PairResult, config: PipelineConfig, timing_ms: dict[str, float],
               arrived: float) -> bytes:
    """The JSON response body; ``timing_ms`` gets ``encode`` and ``total`` filled in."""
    start = time.perf_counter()
    payload = map_payload(result.map)
    regions = sorted((r.to_dict() for r in result.regions), key=lambda r: -r["score"])
    for r in regions:
        for key in ("score", "peak", "mean"):
            r[key] = finite_or_none(r[key])
    end = time.perf_counter()
    timing_ms["encode"] = (end - start) * 1e3
    timing_ms["total"] = (end - arrived) * 1e3
    body = {
        "map": payload,
        "metrics": {name: finite_or_none(v) for name, v in result.metrics.items()},
        "regions": regions,
        "config": config.model_dump(mode="json"),
        "timing_ms": {k: round(v, 3) for k, v in timing_ms.items()},
    }
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def encode(media: str, result: PairResult, config: PipelineConfig,
           timing_ms: dict[str, float], arrived: float) -> bytes:
    """Encode ``result`` as ``media`` (one of :data:`MEDIA_TYPES`); ``arrived`` is the
    request's ``time.perf_counter()`` at arrival, for ``timing_ms["total"]``."""
    if media == JSON:
        return json_bytes(result, config, timing_ms, arrived)
    start = time.perf_counter()
    body = npy_bytes(result.map) if media == NPY else heatmap_png(result.map, config.render)
    end = time.perf_counter()
    timing_ms["encode"] = (end - start) * 1e3
    timing_ms["total"] = (end - arrived) * 1e3
    return body
