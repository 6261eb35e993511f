"""The pieces of the OpenAPI document the routes attach: request bodies (the multipart
ones generated from their form descriptions in :mod:`service.schemas`), every response
type with examples, problem+json errors, and :func:`install` adding the shared schemas.
:mod:`service.openapi` prints the whole document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from core import PipelineConfig

from .errors import (
    MemoryFull,
    OutOfMemory,
    OverMemoryBudget,
    PayloadTooLarge,
    QueueFull,
    ServiceProblem,
    WaitTooLong,
)
from .problems import TYPE_PREFIX, FieldError, Problem, problem_body
from .schemas import (
    COMPARE_FORM,
    DIFF_FORM,
    EXAMPLE_CONFIG,
    TINY_PNG_B64,
    CompareRequest,
    CompareResponse,
    DiffRequest,
    DiffResponse,
    ImageInput,
    MapPayload,
    RegionOut,
)

__all__ = [
    "CAPABILITIES_RESPONSES",
    "COMPARE_REQUEST",
    "COMPARE_RESPONSES",
    "DESCRIPTION",
    "DIFF_REQUEST",
    "DIFF_RESPONSES",
    "HEALTH_RESPONSES",
    "METRICS_RESPONSES",
    "READY_RESPONSES",
    "install",
    "problem_responses",
    "request_schema",
]

DESCRIPTION = """Show where two images differ: a difference map, metric scores and ranked
regions, from a pipeline (pre-processor, strategy, metric, post-processors) described by
one configuration model.

Errors are RFC 9457 `application/problem+json` objects; invalid fields are listed in
`errors` with a JSON pointer into the request. Non-finite metric values (PSNR of
identical images is +infinity) are sent as `null`. When the server has API keys
configured, send `Authorization: Bearer <key>`.
"""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": TYPE_PREFIX + code, "title": title, "status": status, "detail": detail,
            "code": code, **extra}


def _problem_response(description: str, example: dict[str, Any],
                      headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {
        "application/problem+json": {"schema": _ref("Problem"), "example": example}}}
    if headers:
        out["headers"] = headers
    return out


def _problem_examples(description: str, examples: dict[str, tuple[str, ServiceProblem]],
                      headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A problem response with several named examples, each the body the service sends
    for that error (built from the error itself, so the document cannot drift)."""
    out: dict[str, Any] = {"description": description, "content": {
        "application/problem+json": {"schema": _ref("Problem"), "examples": {
            name: {"summary": summary, "value": problem_body(
                exc.status, exc.code, exc.detail, title=exc.title, **exc.extra)}
            for name, (summary, exc) in examples.items()}}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}
_SERVER_TIMING = {"Server-Timing": {
    "description": "milliseconds per stage (decode, queue, load, compute, regions, encode, "
    "total)", "schema": {"type": "string"}}}

def request_schema(model: type[BaseModel], inline: tuple[str, ...] = ()) -> dict[str, Any]:
    """``model``'s JSON schema for OpenAPI: the models named in ``inline`` written in
    place, every other reference pointing into the shared components."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.rsplit("/", 1)[1]
                if name in inline:
                    return walk(defs[name])
                return {**node, "$ref": f"#/components/schemas/{name}"}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


DIFF_REQUEST: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": DIFF_FORM.openapi(),
    "application/json": {
        "schema": _ref("DiffRequest"),
        "examples": {
            "inline": {"summary": "both images inline as base64", "value": {
                "reference": {"data": TINY_PNG_B64}, "candidate": {"data": TINY_PNG_B64}}},
            "url": {"summary": "an image by URL, a pipeline, the scores wanted", "value": {
                "reference": {"data": TINY_PNG_B64},
                "candidate": {"url": "https://example.org/candidate.png"},
                "config": EXAMPLE_CONFIG, "metrics": ["ssim", "psnr"]}},
        },
    },
}}}

_DIFF_EXAMPLE = DiffResponse.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]

DIFF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The result, in the type the Accept header asks for: JSON (the "
        "default), a PNG heatmap drawn as config.render says, or the float32 map as .npy.",
        "headers": _SERVER_TIMING,
        "content": {
            "application/json": {"schema": _ref("DiffResponse"), "example": _DIFF_EXAMPLE},
            "image/png": {"schema": {"type": "string", "format": "binary"}, "examples": {
                "heatmap": {"summary": "the map drawn as config.render says: for the "
                            "default significance map its fixed range in robust sigmas "
                            "(render.vmin/vmax, sqrt scale), so a pair without difference "
                            "looks empty; same "
                            "size as the map (wider with render.colorbar)",
                            "value": "<PNG file>"}}},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"},
                                  "examples": {"map": {
                                      "summary": "numpy .npy of the little-endian float32 "
                                      "map, shape (H, W)", "value": "<.npy file>"}}},
        },
    },
    400: _problem_response("Malformed body (not JSON, broken multipart)", _problem(
        400, "malformed-json", "Malformed JSON",
        "the body is not valid JSON (Expecting value: line 1 column 1 (char 0))")),
    401: _problem_response("An API key is needed or was wrong", _problem(
        401, "unauthorized", "Unauthorized",
        "this server needs an API key: send 'Authorization: Bearer <key>'"),
        {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    406: _problem_response("The Accept header asks for a type the server cannot send",
                           _problem(406, "not-acceptable", "Not Acceptable",
                                    "cannot answer with 'text/html'; available: "
                                    "application/json, image/png, application/x-npy")),
    413: _problem_examples(
        "Too large: the body or an image file is over its limit (payload-too-large), or "
        "the request's images need more working memory than the whole memory budget "
        "(over-memory-budget: its estimate and the budget, in bytes); send less, do not "
        "retry", {
            "payload-too-large": ("an image file over DF_MAX_UPLOAD_BYTES",
                                  PayloadTooLarge(26214400, "reference", size=31457280)),
            "over-memory-budget": ("the images' estimate over the whole memory budget",
                                   OverMemoryBudget(4320000000, 2000000000, "host"))}),
    415: _problem_response("The body is neither multipart/form-data nor JSON", _problem(
        415, "unsupported-media-type", "Unsupported Media Type",
        "Content-Type 'text/plain' is not accepted; send multipart/form-data or "
        "application/json")),
    422: _problem_response("Invalid config, undecodable or mismatched images, refused URL",
                           Problem.model_config["json_schema_extra"]["examples"][0]),  # type: ignore[index]
    503: _problem_examples(
        "Server busy, answered at once: the queue is full (queue-full), the queue ahead "
        "would outlast the request's deadline (wait-too-long), the memory budget is taken "
        "by other requests (memory-full), or the device ran out of memory (out-of-memory); "
        "retry after Retry-After seconds. Also: model weights missing (weights-missing)", {
            "queue-full": ("every worker busy and the queue full", QueueFull(2)),
            "wait-too-long": ("the wait would outlast the deadline",
                              WaitTooLong(75.0, 60.0, 3)),
            "memory-full": ("the memory budget is taken by other requests",
                            MemoryFull(1200000000, 2000000000, "host", 2)),
            "out-of-memory": ("the device ran out of memory", OutOfMemory("cuda:0"))},
        _RETRY_AFTER),
    504: _problem_response("The request was not done within its deadline", _problem(
        504, "deadline-exceeded", "Request deadline exceeded",
        "the request was not done within its deadline of 60 s")),
}



def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented problem answers of these statuses (in status order)."""
    return {k: v for k, v in DIFF_RESPONSES.items() if k in statuses}


COMPARE_REQUEST: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": COMPARE_FORM.openapi(),
    "application/json": {
        "schema": request_schema(CompareRequest),
        "examples": {"mixed": {"summary": "inline images and a URL, with a baseline",
                               "value": CompareRequest.model_config["json_schema_extra"][
                                   "examples"][0]}},  # type: ignore[index]
    },
}}}

_FIGURE_EXAMPLE = {"schema": {"type": "string", "format": "binary"}}
COMPARE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (the default): every map on one scale, scores, regions and "
        "improvement maps. image/png, image/svg+xml or application/pdf: the paper figure "
        "(reference, candidates, zoomed insets, maps with one colorbar, improvement maps).",
        "model": CompareResponse,
        "headers": DIFF_RESPONSES[200]["headers"],
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
    **{k: v for k, v in DIFF_RESPONSES.items() if k != 200},
}

_JSON_OBJECT = {"type": "object", "additionalProperties": True}

CAPABILITIES_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "Processors, strategies and metrics with their parameters and defaults, "
    "colormaps, which LPIPS nets have weights, limits",
    "content": {"application/json": {"schema": _JSON_OBJECT, "example": {
        "metrics": [{"name": "psnr", "description": "Peak signal-to-noise ratio in dB.",
                     "parameters": {}, "higher_is_better": True, "has_map": True}],
        "colormaps": {"sequential": ["magma", "viridis"], "diverging": ["RdBu_r"]},
        "lpips_weights": {"alex": True, "vgg": False, "squeeze": False}}}}}}

HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The process is alive",
    "content": {"application/json": {"schema": _JSON_OBJECT, "example": {"status": "ok"}}}}}

READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Workers are up and preloaded models are loaded and warm",
          "content": {"application/json": {"schema": _JSON_OBJECT, "example": {
              "status": "ready",
              "workers": [{"device": "cpu", "ready": True, "busy": False, "queued": 0,
                           "warmup_error": None}],
              "models": {"alex@cpu": "loaded"}, "missing_weights": {}}}}},
    503: _problem_response("Still starting (or shutting down)", _problem(
        503, "not-ready", "Not ready", "not ready: workers are starting and warming up"),
        _RETRY_AFTER),
}

METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "Prometheus text exposition",
    "content": {"text/plain": {"schema": {"type": "string"}, "example":
                               'df_http_requests_total{method="POST",route="/v1/diff",'
                               'status="200"} 12.0\n'}}}}

_MODELS = (DiffRequest, ImageInput, PipelineConfig, DiffResponse, MapPayload, RegionOut,
           Problem, FieldError)


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a generator that adds our shared schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version,
                           description=app.description, routes=app.routes)
        components = spec.setdefault("components", {})
        _, defs = models_json_schema([(m, "validation") for m in _MODELS],
                                     ref_template="#/components/schemas/{model}")
        components.setdefault("schemas", {}).update(defs.get("$defs", {}))
        components["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "only when the server is configured with API keys"}}
        for path, item in spec.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in item.values():
                    op["security"] = [{}, {"bearer": []}]
                    op.setdefault("responses", {}).setdefault("401", DIFF_RESPONSES[401])
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


