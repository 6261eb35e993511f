"""A CVAT detector: ``POST /cvat/detect`` (:mod:`service.routes.cvat`) answers like CVAT's
serverless functions, with difference regions as rectangles; ``init_context``/``handler``
run the same thing as a Nuclio function (``docker/function.yaml``), where the reference
comes from ``DF_CVAT_REFERENCE``.

CVAT sends a detector ``{"image": <base64>, "threshold": <number>}`` (threshold only when
set) and reads back ``[{"confidence", "label", "points": [xtl, ytl, xbr, ybr], "type"}]``,
the shape of CVAT's own functions (serverless/*/nuclio/main.py). ``confidence`` is
:func:`core.regions.confidence`, a string as those functions send it: for the default
(hysteresis) regions ``significance / (significance + regions.high)``, 0.5 at the detection
threshold and rising with how far the spot stands out; for percentile, Otsu or top-k regions
their share of the map's total difference. ``threshold`` keeps regions whose confidence is at
least the threshold (default 0: every region the pipeline reports, strongest first).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from core import Finder, PairResult, PipelineConfig
from core.errors import DifferenceFinderError
from core.images import Limits, decode_image
from core.regions import RegionsConfig, confidence

from .errors import MalformedJson, ServiceProblem, ValidationProblem
from .forms import decode_json, validate
from .images import ImageLoader
from .problems import PROBLEM_MEDIA_TYPE, render
from .schemas import TINY_PNG_B64
from .settings import Settings
from .workers import resolve_devices

__all__ = ["DETECT_EXAMPLE", "LABEL", "DetectRequest", "detections", "handler",
           "init_context"]

#: the one label this detector gives (function.yaml's spec lists it for CVAT's mapping)
LABEL = "difference"

class DetectRequest(BaseModel):
    """What CVAT sends a detector, plus the reference; unknown fields are ignored (CVAT
    may add some)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "image": TINY_PNG_B64, "reference": TINY_PNG_B64, "threshold": 0.1}]})

    image: str = Field(min_length=1, description="base64 of the frame (the candidate)")
    reference: str = Field(min_length=1, description="base64 of the reference image")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="keep regions whose "
                                    "confidence is at least this (default 0); for the "
                                    "default significance regions 0.5 is the detection "
                                    "threshold and 0.75 three times it")
    config: PipelineConfig | None = Field(None, description="the pipeline; default: the "
                                          "server's DF_ANNOTATION_CONFIG")


def detections(result: PairResult, threshold: float | None = None,
               regions: RegionsConfig | None = None) -> list[dict[str, Any]]:
    """CVAT shapes for a pair's regions, strongest first (core's ranking); ``points`` are
    the box's corners in pixels (xbr/ybr are the far edges: a box over pixels 0..9 ends at
    10); ``regions`` is the pipeline's regions config (its ``high`` scales confidence)."""
    scored = [(r, confidence(r, regions)) for r in result.regions]
    return [{"confidence": str(round(c, 4)), "label": LABEL,
             "points": [float(r.x), float(r.y), float(r.x + r.width), float(r.y + r.height)],
             "type": "rectangle"} for r, c in scored if c >= (threshold or 0.0)]


#: what :func:`detections` gives, for the documentation
DETECT_EXAMPLE = [{"confidence": "0.91", "label": LABEL, "points": [120.0, 64.0, 152.0, 112.0],
                   "type": "rectangle"}]


# --- as a Nuclio function (docker/function.yaml) ---------------------------------------------


class _FunctionRequest(DetectRequest):
    """As a Nuclio function the reference may come from DF_CVAT_REFERENCE instead."""

    reference: str | None = Field(None, min_length=1)  # type: ignore[assignment]


def init_context(context: Any) -> None:
    """Nuclio start-up: the Finder built once on the first device of DF_DEVICES, and the
    fixed reference image read from the file DF_CVAT_REFERENCE (if set)."""
    settings = Settings()
    device = resolve_devices(settings.devices)[0]
    if device.type == "cpu":
        torch.set_num_threads(settings.cpu_threads(1))
    limits = Limits(max_pixels=settings.max_pixels, max_side=settings.max_side)
    path = os.environ.get("DF_CVAT_REFERENCE", "").strip()
    user = context.user_data
    user.reference = (decode_image(Path(path).read_bytes(), limits=limits, what="reference")
                      if path else None)
    user.loader = ImageLoader(max_bytes=settings.max_upload_bytes, limits=limits,
                              executor=None, fetcher=None)  # type: ignore[arg-type]
    user.finder = Finder.from_config(settings.annotation_config, device)


def _problem(context: Any, err: ServiceProblem) -> Any:
    """The service's problem+json body, as a Nuclio response."""
    resp = render(err)
    return context.Response(body=bytes(resp.body).decode(), headers={},
                            content_type=PROBLEM_MEDIA_TYPE, status_code=err.status)


def handler(context: Any, event: Any) -> Any:
    """Nuclio entry: CVAT's detector call -> its shapes. A ``reference`` in the body wins
    over the file from DF_CVAT_REFERENCE; errors are problem+json with their status."""
    user = context.user_data
    try:
        raw = event.body
        if isinstance(raw, (bytes, bytearray, str)):
            raw = decode_json(raw)
        if not isinstance(raw, dict):
            raise MalformedJson("the body must be a JSON object")
        req = validate(_FunctionRequest, raw)
        loader = user.loader

        def image(text: str, what: str) -> np.ndarray:
            data = loader.unbase64(text, what)
            return decode_image(data, limits=loader.limits, what=what)

        if req.reference is not None:
            reference = image(req.reference, "reference")
        elif user.reference is not None:
            reference = user.reference
        else:
            raise ValidationProblem([{"pointer": "#/reference", "loc": ["reference"],
                                      "type": "missing", "message": "no reference: send "
                                      "one, or set DF_CVAT_REFERENCE to an image file in "
                                      "the function"}])
        cand = image(req.image, "image")
        finder = user.finder if req.config is None else Finder.from_config(
            req.config, user.finder.device)
        result = finder.analyze(reference, cand, metrics=False)[0]
        return context.Response(body=json.dumps(detections(result, req.threshold,
                                                                finder.config.regions)),
                                headers={}, content_type="application/json", status_code=200)
    except DifferenceFinderError as exc:
        return _problem(context, ServiceProblem.from_core(exc))
    except ServiceProblem as exc:
        return _problem(context, exc)
