"""The Label Studio ML backend under ``/label-studio`` (``/health``, ``/setup``,
``/predict``, ``/webhook``): give Label Studio ``http://HOST:PORT/label-studio`` as the
backend URL. Task images are fetched through :class:`service.label_studio.files.LabelStudioFiles`
(the URL fetcher, under its URL policy); each task is computed in turn on the worker pool,
under one admission, with a memory reservation of its own that is released once its
prediction is encoded (a batch holds one task's memory at a time); a task that fails does
so alone, in its entry of the answer."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from core import Finder, PairResult, PipelineConfig
from core.errors import DifferenceFinderError
from core.regions import region_mask

from .. import apidocs
from ..deps import SettingsDep, StateDep
from ..errors import ServiceProblem
from ..forms import read_json
from ..label_studio.config import Target, parse_label_config
from ..label_studio.protocol import (
    REQUEST_FAILURES,
    LabelStudioTask,
    PredictRequest,
    SetupRequest,
    failed_prediction,
    model_version,
    prediction,
)
from ..label_studio.urls import task_field_problem
from ..lifecycle import Exchange
from ..state import ServiceState
from ..workers import cancel_check

__all__ = ["compute", "router"]

router = APIRouter(prefix="/label-studio", tags=["label-studio"])
log = logging.getLogger("service")


def compute(config: PipelineConfig, ref: np.ndarray, cand: np.ndarray, mask: bool,
            device: torch.device) -> tuple[PairResult, np.ndarray | None]:
    """Runs in a worker thread: the pair's result, and its region mask when asked."""
    result = Finder.from_config(config, device).analyze(ref, cand, metrics=False,
                                                        cancel=cancel_check())[0]
    return result, (region_mask(result.map, config.regions) if mask else None)


def task_image(task: LabelStudioTask, i: int, field: str) -> tuple[str, str]:
    """Where one image field of task ``i`` is, and its value (a URL, path or data URL)."""
    what = f"tasks/{i}/data/{field}"
    value = task.data.get(field)
    if value is None:
        have = ", ".join(sorted(map(str, task.data))[:10]) or "nothing"
        raise task_field_problem(what, f"the task has no {field!r} field (it has: {have}); "
                                 "the field names are set by DF_LABEL_STUDIO_REFERENCE_FIELD "
                                 "and DF_LABEL_STUDIO_CANDIDATE_FIELD")
    if not isinstance(value, str) or not value.strip():
        raise task_field_problem(what, "must be a non-empty string (a URL or Label Studio "
                                 "path)")
    return what, value


def task_bytes(state: ServiceState, task: LabelStudioTask, what: str, value: str
               ) -> Awaitable[bytes]:
    """What fetches (or unbase64s, off the event loop) one image of the task."""
    if value.startswith("data:"):
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(state.executor, state.loader.unbase64, value, what)
    return state.ls_files.fetch(value, task.id, what)


async def task_images(state: ServiceState, task: LabelStudioTask, i: int
                      ) -> list[np.ndarray]:
    """Task ``i``'s reference and candidate: both reserved from their headers, decoded."""
    s = state.settings
    fields = [task_image(task, i, s.label_studio_reference_field),
              task_image(task, i, s.label_studio_candidate_field)]
    return await state.loader.decode_all([(what, task_bytes(state, task, what, value))
                                          for what, value in fields])


async def predict_task(exchange: Exchange, task: LabelStudioTask, i: int,
                       targets: list[Target], config: PipelineConfig, version: str
                       ) -> dict[str, Any]:
    """One task through the lifecycle's steps, with a deadline and a memory reservation
    of its own (released once its prediction is encoded)."""
    deadline = exchange.new_deadline()
    want_mask = any(t.type == "brushlabels" for t in targets)
    with exchange.step() as reservation:
        reservation.use(config, metrics=False)  # regions only: no score
        ref, cand = await exchange.prepare(task_images(exchange.state, task, i), deadline,
                                           reservation)
        try:
            (result, mask), _ = await exchange.compute(
                lambda device: compute(config, ref, cand, want_mask, device), deadline,
                reservation)
        except DifferenceFinderError as exc:  # name the task: a batch has many
            err = ServiceProblem.from_core(exc)
            raise ServiceProblem(err.status, err.code, f"tasks/{i} (task {task.id}): "
                                 f"{err.detail}", task=i, task_id=task.id,
                                 **err.extra) from None
        return await exchange.offload(prediction, result, mask, targets, version,
                                      config.regions)


_EXAMPLE_RESULT = {
    "model_version": "difference-finder-0.1.0-3f2a9c1d", "score": 0.93,
    "result": [{"id": "diff1", "from_name": "diff", "to_name": "candidate",
                "type": "rectanglelabels", "original_width": 512, "original_height": 512,
                "image_rotation": 0, "score": 0.81,
                "value": {"x": 25.0, "y": 12.5, "width": 6.25, "height": 9.375, "rotation": 0,
                          "rectanglelabels": ["difference"]}}],
}
_OBJECT = {"type": "object", "additionalProperties": True}


@router.get("/health", summary="Label Studio ML backend health",
            responses={200: {"description": "The backend is up", "content": {
                "application/json": {"schema": _OBJECT, "example": {
                    "status": "UP", "model_class": "DifferenceFinder",
                    "model_version": "difference-finder-0.1.0-3f2a9c1d"}}}}})
@router.get("/", include_in_schema=False)
async def health(settings: SettingsDep) -> JSONResponse:
    """What Label Studio checks when the backend is connected."""
    return JSONResponse({"status": "UP", "model_class": "DifferenceFinder",
                         "model_version": model_version(settings.annotation_config)})


@router.post("/setup", summary="Label Studio ML backend setup",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": apidocs.request_schema(SetupRequest)}}}},
             responses={200: {"description": "The model version", "content": {
                 "application/json": {"schema": _OBJECT, "example": {
                     "model_version": "difference-finder-0.1.0-3f2a9c1d"}}}},
                 **apidocs.problem_responses(400, 401, 422)})
async def setup(request: Request, state: StateDep) -> JSONResponse:
    """Label Studio calls this when the backend is added; a label config (``schema``)
    without a usable RectangleLabels/BrushLabels control is refused here already."""
    s = state.settings
    req = await read_json(request, SetupRequest, state.executor)
    if req.schema_:
        parse_label_config(req.schema_, s.label_studio_reference_field,
                           s.label_studio_candidate_field, where="schema")
    return JSONResponse({"model_version": model_version(s.annotation_config)})


@router.post("/predict", summary="Label Studio ML backend predictions",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": apidocs.request_schema(PredictRequest, inline=("LabelStudioTask",)),
                 "example": PredictRequest.model_config["json_schema_extra"][
                     "examples"][0]}}}},  # type: ignore[index]
             responses={200: {"description": "One prediction per task, in task order: the "
                              "regions (strongest first) as rectanglelabels in percent of the "
                              "image, and the mask as brushlabels (RLE) when the label config "
                              "has a BrushLabels control",
                              "content": {"application/json": {"schema": _OBJECT, "example": {
                                  "results": [_EXAMPLE_RESULT],
                                  "model_version": _EXAMPLE_RESULT["model_version"]}}}},
                        **apidocs.problem_responses(400, 401, 413, 422, 503, 504)})
async def predict(request: Request, state: StateDep) -> Response:
    """Pre-annotations for each task: its reference and candidate images are fetched, their
    difference computed on the worker pool, its regions returned on the candidate."""
    s = state.settings
    exchange = Exchange(request, state)
    with exchange.admit():
        req = await read_json(request, PredictRequest, state.executor)
        targets = await exchange.offload(parse_label_config, req.label_config,
                                         s.label_studio_reference_field,
                                         s.label_studio_candidate_field)
        config = s.annotation_config
        version = model_version(config)
        results = []
        for i, task in enumerate(req.tasks):
            await exchange.ensure_connected()
            try:
                results.append(await predict_task(exchange, task, i, targets, config,
                                                  version))
            except ServiceProblem as exc:
                if exc.status in REQUEST_FAILURES:
                    raise
                failed = failed_prediction(exc, task, i, version)
                log.warning("label-studio predict: %s [%s, %s]", failed["error"], exc.status,
                            exc.code)
                results.append(failed)
        body = await exchange.offload(_json_bytes, {"results": results,
                                                    "model_version": version})
    return Response(body, media_type="application/json")


@router.post("/webhook", summary="Label Studio webhook events (ignored)",
             responses={200: {"description": "The event was received; it is ignored (the "
                              "backend does not train)", "content": {"application/json": {
                                  "schema": _OBJECT, "example": {"status": "ignored"}}}}})
async def webhook(request: Request) -> JSONResponse:
    """Label Studio posts project events to ``<backend URL>/webhook`` (it creates that
    webhook when the backend is connected, without the backend's credentials); they are
    answered 200 and logged at debug level."""
    if log.isEnabledFor(logging.DEBUG):
        body = await request.body()
        try:
            action = json.loads(body).get("action")
        except (ValueError, AttributeError, RecursionError):
            action = None
        log.debug("label-studio webhook event %r ignored (%d bytes)", action, len(body))
    return JSONResponse({"status": "ignored"})


def _json_bytes(obj: Any) -> bytes:
    """Compact JSON, built off the event loop (brush RLE lists can be long)."""
    return json.dumps(obj, separators=(",", ":")).encode()
