"""``POST /v1/compare``: one reference against several candidates, every map on one scale,
improvement maps over a baseline, or the paper figure. The work is
:func:`core.compare.compare`; this module only parses, queues and encodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from core import PipelineConfig
from core.compare import Comparison, compare

from .. import apidocs
from ..budget import use_pipeline
from ..deps import StateDep
from ..encoding import COMPARE_MEDIA_TYPES, FIGURE_FORMAT, JSON, comparison_bytes
from ..forms import MULTIPART, media_type, parse_config, read_json, read_multipart
from ..lifecycle import Work, respond
from ..problems import validation_error
from ..schemas import COMPARE_FORM, CompareRequest, Label
from ..state import ServiceState
from ..workers import cancel_check

__all__ = ["CompareJob", "default_labels", "router"]

router = APIRouter()


@dataclass
class CompareJob:
    """A parsed /v1/compare request, its images decoded."""

    reference: np.ndarray
    candidates: list[np.ndarray]
    labels: list[str] | None
    baseline: str | None
    config: PipelineConfig


def default_labels(names: Sequence[str | None]) -> list[str]:
    """Labels from upload file names or URL paths (their stems), else ``candidate i``."""
    labels = []
    for i, name in enumerate(names):
        tail = (name or "").split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        labels.append((Path(tail).stem.strip() or f"candidate {i + 1}")[:80])
    if len(set(labels)) != len(labels):
        labels = [f"{lab[:74]} ({i + 1})" for i, lab in enumerate(labels)]
    return labels


def _labels(text: str | bytes) -> list[str]:
    """A JSON list of labels, or plain comma-separated ones (``ours,baseline``, as the
    CLI's ``--labels``)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    plain = not text.lstrip().startswith("[")
    try:
        adapter = TypeAdapter(list[Label])
        if plain:
            return adapter.validate_python([t.strip() for t in text.split(",")])
        return adapter.validate_json(text)
    except ValidationError as exc:
        raise validation_error(exc, ("labels",)) from None


def _form_texts(texts: dict[str, str | bytes | None]
                ) -> tuple[PipelineConfig, list[str] | None, str | None]:
    """config, labels and baseline of the multipart form."""
    config = parse_config(texts["config"] or "")
    raw_labels = texts["labels"]
    labels = _labels(raw_labels) if raw_labels and raw_labels.strip() else None
    baseline = texts["baseline"] or ""
    if isinstance(baseline, bytes):
        baseline = baseline.decode("utf-8", errors="replace")
    return config, labels, baseline.strip() or None


async def prepare(request: Request, state: ServiceState) -> CompareJob:
    """Parse either request form, reserve every image's memory (the reference and all
    candidates) from their headers, then decode them off the event loop."""
    loader = state.loader
    if media_type(request) == MULTIPART:
        (config, labels, baseline), files = await read_multipart(
            request, COMPARE_FORM, _form_texts, loader.check_size)
        use_pipeline(config, "compare")
        parts = [*files["reference"], *files["candidates"]]
        images = await loader.decode_all([(p.where, p.data) for p in parts])
        if labels is None:
            labels = default_labels([p.filename for p in files["candidates"]])
        return CompareJob(images[0], list(images[1:]), labels, baseline, config)
    req = await read_json(request, CompareRequest, state.executor)
    use_pipeline(req.config, "compare")
    images = await loader.load_all([
        ("reference", req.reference),
        *((f"candidates/{i}", c) for i, c in enumerate(req.candidates))])
    labels = req.labels if req.labels is not None else default_labels(
        [c.url for c in req.candidates])
    return CompareJob(images[0], list(images[1:]), labels, req.baseline, req.config)


def compute(job: CompareJob, device: torch.device) -> Comparison:
    """Runs in a worker thread on its device."""
    return compare(job.reference, job.candidates, job.labels, job.baseline, job.config,
                   device=device, cancel=cancel_check())


def _headers(media: str) -> dict[str, str]:
    if media == JSON:
        return {}
    return {"Content-Disposition": f'inline; filename="comparison.{FIGURE_FORMAT[media]}"'}


@router.post("/v1/compare", tags=["compare"], summary="Compare candidates with one reference",
             responses=apidocs.COMPARE_RESPONSES, openapi_extra=apidocs.COMPARE_REQUEST)
async def compare_route(
    request: Request,
    state: StateDep,
    dpi: Annotated[int, Query(ge=30, le=2400, description="figure resolution, recorded in "
                              "the file")] = 300,
    insets: Annotated[int, Query(ge=0, le=6, description="zoomed insets in the figure")] = 2,
    heatmaps: Annotated[bool, Query(description="JSON only: add each map drawn as a PNG "
                                    "data: URL, and the colorbars")] = False,
) -> Response:
    """Every candidate against the reference under one pipeline; all maps share a scale."""
    return await respond(request, state, Work(
        prepare=lambda: prepare(request, state), compute=compute,
        encode=lambda media, _, result, timing, arrived: comparison_bytes(
            media, result, timing, arrived, dpi, insets, heatmaps),
        offered=COMPARE_MEDIA_TYPES, accepted=(MULTIPART, JSON), headers=_headers))
