"""``POST /v1/diff``: two images, by multipart upload or JSON (inline or by URL), compared
under one pipeline; answered as JSON, a PNG heatmap or the .npy map."""

from __future__ import annotations

import numpy as np
import torch
from fastapi import APIRouter, Request
from starlette.responses import Response

from core import Finder, PairResult, PipelineConfig
from core.finder import Scores

from .. import apidocs
from ..budget import use_pipeline
from ..deps import StateDep
from ..encoding import MEDIA_TYPES, encode
from ..forms import JSON, MULTIPART, media_type, parse_config, read_json, read_multipart
from ..lifecycle import Work, respond
from ..schemas import DIFF_FORM, DiffRequest
from ..scores import parse_metrics
from ..state import ServiceState
from ..workers import cancel_check

__all__ = ["compute", "router"]

router = APIRouter()

#: the pipeline, the two decoded images and the request's metrics option
Pair = tuple[PipelineConfig, np.ndarray, np.ndarray, Scores]


def compute(config: PipelineConfig, ref: np.ndarray, cand: np.ndarray, device: torch.device,
            metrics: Scores = "auto") -> PairResult:
    """Runs in a worker thread on its device."""
    return Finder.from_config(config, device).analyze(ref, cand, metrics=metrics,
                                                      cancel=cancel_check())[0]


def _form(texts: dict[str, str | bytes | None]) -> tuple[PipelineConfig, Scores]:
    return parse_config(texts["config"] or ""), parse_metrics(texts["metrics"])


async def prepare(request: Request, state: ServiceState) -> Pair:
    """Parse the body (either form), reserve both images' memory from their headers, then
    decode them off the event loop."""
    loader = state.loader
    if media_type(request) == MULTIPART:
        (config, metrics), files = await read_multipart(request, DIFF_FORM, _form,
                                                        loader.check_size)
        use_pipeline(config, metrics=metrics)
        ref, cand = await loader.decode_all([(f.where, f.data)
                                             for k in ("reference", "candidate")
                                             for f in files[k]])
        return config, ref, cand, metrics
    req = await read_json(request, DiffRequest, state.executor)
    use_pipeline(req.config, metrics=req.metrics)
    ref, cand = await loader.load_all([("reference", req.reference),
                                       ("candidate", req.candidate)])
    return req.config, ref, cand, req.metrics


@router.post("/v1/diff", tags=["diff"], summary="Compare two images",
             responses=apidocs.DIFF_RESPONSES, openapi_extra=apidocs.DIFF_REQUEST)
async def diff(request: Request, state: StateDep) -> Response:
    return await respond(request, state, Work(
        prepare=lambda: prepare(request, state),
        compute=lambda pair, device: compute(*pair[:3], device, pair[3]),
        encode=lambda media, pair, result, timing, arrived: encode(
            media, result, pair[0], timing, arrived),
        stages=lambda result, _: result.timing_ms,
        offered=MEDIA_TYPES, accepted=(MULTIPART, JSON)))
