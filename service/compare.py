"""``POST /v1/compare`` (one reference against several candidates, every map on one
scale, improvement maps over a baseline, or the paper figure) and the web page at
``GET /``. The work is :func:`core.compare.compare`; this module only parses,
queues and encodes, reusing the service's loader, worker pool and problems.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import Response

from core import PipelineConfig
from core.compare import Comparison, compare
from core.figure import IMPROVEMENT_COLORMAP, MEDIA_TYPES, figure_bytes
from core.metrics import finite_or_none
from core.render import RenderConfig, colorbar, heatmap, to_png

from . import openapi as api_docs
from .encoding import JSON, map_payload, negotiate
from .problems import ServiceError, parse_json_model, validation_error, validation_problem
from .schemas import TINY_PNG_B64, ImageInput, MapPayload, RegionOut

__all__ = ["MAX_CANDIDATES", "PAGE_PATHS", "CompareRequest", "CompareResponse", "router"]

#: candidates per request (each is an image the size of the reference, decoded in memory)
MAX_CANDIDATES = 8
#: what POST /v1/compare can answer, the default first
OFFERED = (JSON, MEDIA_TYPES["png"], MEDIA_TYPES["svg"], MEDIA_TYPES["pdf"])
_FIGURE_FORMAT = {media: fmt for fmt, media in MEDIA_TYPES.items()}
_PART_LIMIT = 1024 * 1024  # text fields: config, labels, baseline

STATIC = Path(__file__).resolve().parent / "static"
_PAGE_FILES = {"index.html": "text/html; charset=utf-8",
               "app.js": "text/javascript; charset=utf-8",
               "style.css": "text/css; charset=utf-8"}
#: the page's paths: open even when API keys are set (the page asks for a key itself)
PAGE_PATHS = frozenset({"/", *(f"/static/{name}" for name in _PAGE_FILES)})

Label = Annotated[str, StringConstraints(min_length=1, max_length=80)]

router = APIRouter()


class CompareRequest(BaseModel):
    """The ``application/json`` form of ``POST /v1/compare``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "reference": {"data": TINY_PNG_B64},
        "candidates": [{"data": TINY_PNG_B64}, {"url": "https://example.org/ours.png"}],
        "labels": ["baseline", "ours"], "baseline": "baseline",
        "config": {"metric": "ssim", "render": {"colormap": "magma"}},
    }]})

    reference: ImageInput
    candidates: list[ImageInput] = Field(min_length=1, max_length=MAX_CANDIDATES,
                                         description="compared with the reference, in order")
    labels: list[Label] | None = Field(None, description="one per candidate, unique "
                                       "(default: the URL's file name, else candidate i)")
    baseline: Label | None = Field(None, description="the label every other candidate's "
                                   "improvement map is measured against")
    config: PipelineConfig = Field(default_factory=PipelineConfig,
                                   description="the pipeline; every field is optional")


class Scale(BaseModel):
    """The value range every map of a kind is drawn with."""

    vmin: float
    vmax: float


class CandidateOut(BaseModel):
    """One candidate: its map on the shared scale, scores and regions."""

    label: str
    map: MapPayload
    metrics: dict[str, float | None] = Field(
        description="psnr, ssim, ms-ssim, lpips (alex, when its weights are present) and "
        "the pipeline's metric; null where not finite (PSNR of identical images)")
    skipped: dict[str, str] = Field(description="metrics left out, with the reason")
    regions: list[RegionOut] = Field(description="ranked by score, highest first")
    heatmap: str | None = Field(None, description="with ?heatmaps=true: the map drawn on the "
                                "shared scale, as a data: URL of a PNG")


class ImprovementOut(BaseModel):
    """|baseline map| - |candidate map|: positive where the candidate is closer."""

    label: str
    map: MapPayload
    improved_fraction: float = Field(description="share of pixels better by more than "
                                     "the tolerance")
    worsened_fraction: float = Field(description="share of pixels worse by more than it")
    heatmap: str | None = Field(None, description="with ?heatmaps=true: drawn with a "
                                "diverging colormap on the symmetric improvement scale")


_MAP_EXAMPLE = {"dtype": "float32", "shape": [2, 2], "data": "AAAAAAAAAAAAAIA+AACAPw=="}


class CompareResponse(BaseModel):
    """The ``application/json`` answer of ``POST /v1/compare``; candidates in request order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "scale": {"vmin": 0.0, "vmax": 1.0}, "metric": "ssim",
        "higher_is_better": {"psnr": True, "ssim": True, "ms-ssim": True},
        "candidates": [{
            "label": label, "map": _MAP_EXAMPLE,
            "metrics": {"psnr": psnr, "ssim": ssim, "ms-ssim": ms},
            "skipped": {"lpips": "LPIPS alex weights are not present (...); run "
                        "`difference-finder weights fetch --nets alex`"},
            "regions": [{"x": 0, "y": 1, "width": 2, "height": 1, "area": 2, "score": 1.0,
                         "peak": 1.0, "mean": 0.625}]}
            for label, psnr, ssim, ms in (("baseline", 24.1, 0.71, 0.93),
                                          ("ours", 27.9, 0.84, 0.97))],
        "baseline": "baseline",
        "improvement": [{"label": "ours", "map": _MAP_EXAMPLE, "improved_fraction": 0.62,
                         "worsened_fraction": 0.05}],
        "improvement_scale": {"vmin": -0.5, "vmax": 0.5}, "tolerance": 0.008,
        "config": PipelineConfig().model_dump(mode="json"),
        "timing_ms": {"decode": 3.1, "queue": 0.2, "compute": 41.0, "encode": 1.2,
                      "total": 45.5},
    }]})

    scale: Scale = Field(description="the one range every candidate map is drawn with")
    metric: str = Field(description="which metrics key is the pipeline's own metric")
    higher_is_better: dict[str, bool]
    candidates: list[CandidateOut]
    baseline: str | None
    improvement: list[ImprovementOut] = Field(description="one per candidate other than "
                                              "the baseline; empty without a baseline")
    improvement_scale: Scale | None
    tolerance: float | None = Field(description="absolute map difference a pixel must "
                                    "exceed to count as improved or worsened: 1% of the "
                                    "99th percentile of all candidate maps' magnitudes")
    config: dict[str, Any] = Field(description="the full resolved pipeline")
    timing_ms: dict[str, float]
    colorbar: str | None = Field(None, description="with ?heatmaps=true: the shared "
                                 "scale's colorbar, a data: URL of a PNG")
    improvement_colorbar: str | None = None


@dataclass
class _Job:
    reference: np.ndarray
    candidates: list[np.ndarray]
    labels: list[str] | None
    baseline: str | None
    config: PipelineConfig


def _default_labels(names: Sequence[str | None]) -> list[str]:
    """Labels from upload file names or URL paths (their stems), else ``candidate i``."""
    labels = []
    for i, name in enumerate(names):
        tail = (name or "").split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        labels.append((Path(tail).stem.strip() or f"candidate {i + 1}")[:80])
    if len(set(labels)) != len(labels):
        labels = [f"{lab[:74]} ({i + 1})" for i, lab in enumerate(labels)]
    return labels


def _labels(text: str) -> list[str]:
    try:
        return TypeAdapter(list[Label]).validate_json(text)
    except ValidationError as exc:
        raise validation_error(exc, ("labels",)) from None


async def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        if (value.size or 0) > _PART_LIMIT:
            raise ServiceError(413, "payload-too-large", f"{name}: more than {_PART_LIMIT} "
                               "bytes", field=name, limit=_PART_LIMIT)
        return (await value.read()).decode("utf-8", errors="replace")
    return value


async def _read_multipart(request: Request, state: Any) -> _Job:
    from .app import _config_from_json  # the app includes this router: import late

    allowed = ("reference", "candidates", "labels", "baseline", "config")
    async with request.form(max_files=MAX_CANDIDATES + 4, max_fields=8,
                            max_part_size=_PART_LIMIT) as form:
        errors = [{"pointer": f"#/{k}", "loc": [k], "type": "extra_forbidden",
                   "message": f"unexpected field; expected {', '.join(allowed)}"}
                  for k in dict.fromkeys(form.keys()) if k not in allowed]
        errors += [{"pointer": f"#/{k}", "loc": [k], "type": "too_many",
                    "message": "given more than once"}
                   for k in allowed if k != "candidates" and len(form.getlist(k)) > 1]
        ref = form.get("reference")
        cands = form.getlist("candidates")
        if ref is None:
            errors.append({"pointer": "#/reference", "loc": ["reference"], "type": "missing",
                           "message": "a file part is required"})
        if not cands:
            errors.append({"pointer": "#/candidates", "loc": ["candidates"],
                           "type": "missing", "message": "at least one file part is "
                           "required (repeat the field for more)"})
        if len(cands) > MAX_CANDIDATES:
            errors.append({"pointer": "#/candidates", "loc": ["candidates"],
                           "type": "too_long", "message": f"at most {MAX_CANDIDATES} "
                           f"candidates, got {len(cands)}"})
        parts = [("reference", ref), *((f"candidates/{i}", c) for i, c in enumerate(cands))]
        for where, part in parts:
            if part is not None and not isinstance(part, UploadFile):
                errors.append({"pointer": f"#/{where}", "loc": where.split("/"),
                               "type": "file_expected", "message": "must be a file part "
                               "(with a filename), not a text field"})
        if errors:
            raise validation_problem(errors)
        config = _config_from_json(await _text(form, "config") or "")
        raw_labels = await _text(form, "labels")
        labels = _labels(raw_labels) if raw_labels and raw_labels.strip() else None
        baseline = (await _text(form, "baseline") or "").strip() or None
        files: list[bytes] = []
        for where, part in parts:
            assert isinstance(part, UploadFile)
            if part.size is not None:
                state.loader.check_size(part.size, where)
            files.append(await part.read())
    loader = state.loader
    images = await asyncio.gather(*(loader.decode(data, where)
                                    for (where, _), data in zip(parts, files, strict=True)))
    if labels is None:
        labels = _default_labels([c.filename for c in cands])
    return _Job(images[0], list(images[1:]), labels, baseline, config)


async def _prepare(request: Request, state: Any) -> _Job:
    """Parse either request form and decode every image off the event loop."""
    from .app import _media_type

    if _media_type(request) == "multipart/form-data":
        return await _read_multipart(request, state)
    body = await request.body()
    loop = asyncio.get_running_loop()
    req = await loop.run_in_executor(state.executor, parse_json_model, body, CompareRequest)
    images = await asyncio.gather(
        state.loader.load(req.reference, "reference"),
        *(state.loader.load(c, f"candidates/{i}") for i, c in enumerate(req.candidates)))
    labels = req.labels if req.labels is not None else _default_labels(
        [c.url for c in req.candidates])
    return _Job(images[0], list(images[1:]), labels, req.baseline, req.config)


def _compute(job: _Job, device: torch.device) -> tuple[Comparison, float]:
    """Runs in a worker thread on its device."""
    start = time.perf_counter()
    result = compare(job.reference, job.candidates, job.labels, job.baseline, job.config,
                     device=device)
    return result, (time.perf_counter() - start) * 1e3


def _data_url(img: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(img)).decode("ascii")


def _regions(regions: Sequence[Any]) -> list[dict[str, Any]]:
    out = sorted((r.to_dict() for r in regions), key=lambda r: -r["score"])
    for r in out:
        for key in ("score", "peak", "mean"):
            r[key] = finite_or_none(float(r[key]))
    return out


def _json_body(c: Comparison, heatmaps: bool) -> dict[str, Any]:
    cmap = c.config.render.colormap
    vmin, vmax = c.scale
    shared = RenderConfig(colormap=cmap, vmin=vmin, vmax=vmax)
    body: dict[str, Any] = {
        "scale": {"vmin": vmin, "vmax": vmax},
        "metric": c.metric_key,
        "higher_is_better": c.higher_is_better,
        "candidates": [{
            "label": cand.label, "map": map_payload(cand.map),
            "metrics": {k: finite_or_none(v) for k, v in cand.metrics.items()},
            "skipped": cand.skipped, "regions": _regions(cand.regions),
            **({"heatmap": _data_url(heatmap(cand.map, shared))} if heatmaps else {}),
        } for cand in c.candidates],
        "baseline": c.baseline,
        "improvement": [],
        "improvement_scale": None,
        "tolerance": c.tolerance,
        "config": c.config.model_dump(mode="json"),
    }
    if heatmaps:
        body["colorbar"] = _data_url(colorbar(256, cmap, vmin, vmax, c.config.render.label))
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


def _encode(media: str, c: Comparison, timing: dict[str, float], arrived: float, dpi: int,
            insets: int, heatmaps: bool) -> bytes:
    start = time.perf_counter()
    if media != JSON:
        out = figure_bytes(c, _FIGURE_FORMAT[media], dpi, insets=insets)
        timing["encode"] = (time.perf_counter() - start) * 1e3
        timing["total"] = (time.perf_counter() - arrived) * 1e3
        return out
    body = _json_body(c, heatmaps)
    end = time.perf_counter()
    timing["encode"] = (end - start) * 1e3
    timing["total"] = (end - arrived) * 1e3
    body["timing_ms"] = {k: round(v, 3) for k, v in timing.items()}
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def _request_schema() -> dict[str, Any]:
    """CompareRequest inline, its nested models referenced from the shared components."""
    schema = CompareRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


_EXAMPLE_CONFIG = {"metric": "ssim", "render": {"colormap": "magma"}}
_REQUEST: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {
        "schema": {
            "type": "object", "required": ["reference", "candidates"],
            "properties": {
                "reference": {"type": "string", "format": "binary",
                              "description": "the reference image file"},
                "candidates": {"type": "array", "minItems": 1, "maxItems": MAX_CANDIDATES,
                               "items": {"type": "string", "format": "binary"},
                               "description": "candidate image files: repeat the field, "
                               "in order"},
                "labels": {"type": "string", "description": "a JSON list of strings, one "
                           "label per candidate (default: the files' names)",
                           "contentMediaType": "application/json"},
                "baseline": {"type": "string", "description": "one of the labels"},
                "config": {"type": "string", "description": "the pipeline as a JSON string "
                           "(a PipelineConfig object); every field is optional",
                           "contentMediaType": "application/json",
                           "contentSchema": {"$ref": "#/components/schemas/PipelineConfig"}},
            },
        },
        "encoding": {"reference": {"contentType": "image/*"},
                     "candidates": {"contentType": "image/*"}},
        "examples": {"default": {"summary": "a reference, two candidates, a baseline",
                                 "value": {"reference": "<reference.png>",
                                           "candidates": ["<baseline.png>", "<ours.png>"],
                                           "labels": '["baseline", "ours"]',
                                           "baseline": "baseline",
                                           "config": json.dumps(_EXAMPLE_CONFIG)}}},
    },
    "application/json": {
        "schema": _request_schema(),
        "examples": {"mixed": {"summary": "inline images and a URL, with a baseline",
                               "value": CompareRequest.model_config["json_schema_extra"][
                                   "examples"][0]}},  # type: ignore[index]
    },
}}}

_FIGURE_EXAMPLE = {"schema": {"type": "string", "format": "binary"}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (the default): every map on one scale, scores, regions and "
        "improvement maps. image/png, image/svg+xml or application/pdf: the paper figure "
        "(reference, candidates, zoomed insets, maps with one colorbar, improvement maps).",
        "model": CompareResponse,
        "headers": api_docs.DIFF_RESPONSES[200]["headers"],
        "content": {
            "image/png": {**_FIGURE_EXAMPLE, "examples": {"figure": {
                "summary": "the figure, with ?dpi recorded in the file", "value": "<PNG>"}}},
            "image/svg+xml": {**_FIGURE_EXAMPLE, "examples": {"figure": {
                "summary": "vector text and boxes, raster panels embedded",
                "value": "<SVG>"}}},
            "application/pdf": {**_FIGURE_EXAMPLE, "examples": {"figure": {
                "summary": "one page at ?dpi", "value": "<PDF>"}}},
        },
    },
    **{k: v for k, v in api_docs.DIFF_RESPONSES.items() if k != 200},
}


@router.post("/v1/compare", tags=["compare"], summary="Compare candidates with one reference",
             responses=_RESPONSES, openapi_extra=_REQUEST)
async def compare_route(
    request: Request,
    dpi: Annotated[int, Query(ge=30, le=2400, description="figure resolution, recorded in "
                              "the file")] = 300,
    insets: Annotated[int, Query(ge=0, le=6, description="zoomed insets in the figure")] = 2,
    heatmaps: Annotated[bool, Query(description="JSON only: add each map drawn as a PNG "
                                    "data: URL, and the colorbars")] = False,
) -> Response:
    """Every candidate against the reference under one pipeline; all maps share a scale."""
    from .app import _check_content_type, _server_timing, _wait_disconnect
    from .workers import DeadlineExceeded

    state = request.app.state.df
    arrived, deadline = time.perf_counter(), time.monotonic() + state.settings.request_timeout
    media = negotiate(request.headers.get("accept"), OFFERED)
    _check_content_type(request)
    with state.pool.admit():
        try:
            job = await asyncio.wait_for(_prepare(request, state),
                                         max(0.0, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            state.metrics.rejected.labels("deadline").inc()
            raise DeadlineExceeded(state.settings.request_timeout) from None
        decoded = time.perf_counter()
        result, compute_ms = await state.pool.run(
            lambda device: _compute(job, device), deadline=deadline,
            disconnected=lambda: _wait_disconnect(request))
        done = time.perf_counter()
        timing = {"decode": (decoded - arrived) * 1e3,
                  "queue": max(0.0, (done - decoded) * 1e3 - compute_ms),
                  "compute": compute_ms}
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(state.executor, _encode, media, result, timing,
                                          arrived, dpi, insets, heatmaps)
    headers = {"Server-Timing": _server_timing(timing)}
    if media != JSON:
        ext = _FIGURE_FORMAT[media]
        headers["Content-Disposition"] = f'inline; filename="comparison.{ext}"'
    return Response(body, media_type=media, headers=headers)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The web page: upload or link images, choose the pipeline, see maps and scores."""
    return FileResponse(STATIC / "index.html", media_type=_PAGE_FILES["index.html"],
                        headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in _PAGE_FILES:
        raise ServiceError(404, "not-found", f"no such file: /static/{name}")
    return FileResponse(STATIC / name, media_type=_PAGE_FILES[name],
                        headers={"Cache-Control": "no-cache"})
