"""``POST /cvat/detect``: CVAT's detector call (a frame and the reference, base64) ->
difference regions as CVAT shapes (see :mod:`service.cvat`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from starlette.responses import Response

from core import Finder, PairResult, PipelineConfig

from .. import apidocs
from ..budget import use_pipeline
from ..cvat import DETECT_EXAMPLE, DetectRequest, detections
from ..deps import StateDep
from ..errors import ValidationProblem
from ..forms import JSON, read_json
from ..lifecycle import Work, respond
from ..state import ServiceState
from ..workers import cancel_check

__all__ = ["compute", "router"]

router = APIRouter(prefix="/cvat", tags=["cvat"])

Prepared = tuple[DetectRequest, PipelineConfig, np.ndarray, np.ndarray]


def compute(config: PipelineConfig, ref: np.ndarray, cand: np.ndarray,
            device: torch.device) -> PairResult:
    """Runs in a worker thread on its device."""
    return Finder.from_config(config, device).analyze(ref, cand, metrics=False,
                                                      cancel=cancel_check())[0]


async def _unbase64(state: ServiceState, text: str, field: str) -> bytes:
    """Base64 field -> bytes, off the event loop; errors point at ``#/field``."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(state.executor, state.loader.unbase64, text, field)
    except ValidationProblem as exc:
        raise ValidationProblem.at([field], exc.errors[0]["message"], "base64_decode") from None


async def prepare(request: Request, state: ServiceState) -> Prepared:
    """Parse the body, reserve both images' memory from their headers, decode them."""
    req = await read_json(request, DetectRequest, state.executor)
    config = req.config or state.settings.annotation_config
    use_pipeline(config, metrics=False)  # regions only: no score
    ref, cand = await state.loader.decode_all([
        ("reference", _unbase64(state, req.reference, "reference")),
        ("image", _unbase64(state, req.image, "image"))])
    return req, config, ref, cand


def _encode(_: str, prepared: Prepared, result: PairResult, *__: Any) -> bytes:
    """As Starlette's JSONResponse renders it."""
    shapes = detections(result, prepared[0].threshold, prepared[1].regions)
    return json.dumps(shapes, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


@router.post("/detect", summary="CVAT detector: difference regions as rectangles",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": apidocs.request_schema(DetectRequest),
                 "example": DetectRequest.model_config["json_schema_extra"][
                     "examples"][0]}}}},  # type: ignore[index]
             responses={200: {"description": "The regions, strongest first, as CVAT "
                              "serverless detectors return shapes; confidence is the region's "
                              "share of the total difference",
                              "content": {"application/json": {"schema": {
                                  "type": "array", "items": {"type": "object"}},
                                  "example": DETECT_EXAMPLE}}},
                        **apidocs.problem_responses(400, 401, 413, 415, 422, 503, 504)})
async def detect(request: Request, state: StateDep) -> Response:
    """The frame (``image``) against the ``reference``, under the pipeline."""
    return await respond(request, state, Work(
        prepare=lambda: prepare(request, state),
        compute=lambda p, device: compute(p[1], p[2], p[3], device), encode=_encode,
        accepted=(JSON,), server_timing=False,
        unsupported_detail="send application/json (the body CVAT sends a detector)"))
