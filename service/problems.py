"""RFC 9457 problem details: every error the service sends is ``application/problem+json``.

Problem ``type`` URIs are ``urn:difference-finder:problem:<code>``; ``code`` is also sent
on its own. Invalid fields are listed in ``errors`` with a JSON pointer into the request
(``#/config/post_processor/1/sigma``) and their location as a list.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from core.errors import DifferenceFinderError

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "TYPE_PREFIX",
    "FieldError",
    "Problem",
    "ServiceError",
    "field_errors",
    "install_handlers",
    "pointer",
    "problem_response",
]

log = logging.getLogger("service")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:difference-finder:problem:"

#: Titles for core's error codes (a title is the same for every problem of a type).
_TITLES = {
    "error": "Difference Finder error",
    "invalid-input": "Invalid input image",
    "undecodable-image": "Image cannot be decoded",
    "shape-mismatch": "Images differ in size or channels",
    "unpaired-files": "Unpaired files",
    "invalid-config": "Invalid pipeline configuration",
    "metric-not-applicable": "Metric not applicable to these images",
    "weights-missing": "Model weights missing",
    "device-unavailable": "Compute device unavailable",
    "validation-error": "Invalid request",
    "internal-error": "Internal server error",
}


class FieldError(BaseModel):
    """One invalid field of a request."""

    pointer: str = Field(description="JSON pointer into the request, e.g. #/config/metric")
    loc: list[str | int] = Field(description="the same location as a list")
    message: str
    type: str = Field(description="pydantic's error type, e.g. missing, greater_than")


class Problem(BaseModel):
    """An RFC 9457 problem details object (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "type": TYPE_PREFIX + "validation-error", "title": "Invalid request", "status": 422,
        "detail": "config.post_processor.1.sigma: Input should be greater than 0",
        "code": "validation-error",
        "errors": [{"pointer": "#/config/post_processor/1/sigma",
                    "loc": ["config", "post_processor", 1, "sigma"],
                    "message": "Input should be greater than 0", "type": "greater_than"}],
    }]})

    type: str = Field(description="URI naming the kind of problem")
    title: str = Field(description="short summary of the problem type")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request, and how to fix it")
    code: str = Field(description="the last part of type, for programs")
    errors: list[FieldError] | None = Field(None, description="invalid fields, if any")


class ServiceError(Exception):
    """An error the service raises on purpose; becomes a problem response."""

    def __init__(self, status: int, code: str, detail: str, *, title: str | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or _TITLES.get(code) or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        self.extra = extra


def _jsonable(value: Any) -> Any:
    """Extension members as plain JSON (no NaN/inf, no arbitrary objects)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def problem_response(status: int, code: str, detail: str, *, title: str | None = None,
                     headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """Build an ``application/problem+json`` response."""
    body = {
        "type": TYPE_PREFIX + code,
        "title": title or _TITLES.get(code) or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **{k: _jsonable(v) for k, v in extra.items() if v is not None},
    }
    return Response(json.dumps(body, allow_nan=False).encode(), status_code=status,
                    headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def pointer(loc: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer (as a URI fragment) for a location."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "#/" + "/".join(parts) if parts else "#"


def field_errors(errors: Sequence[Mapping[str, Any]], prefix: Sequence[str | int] = ()
                 ) -> list[dict[str, Any]]:
    """pydantic error dicts -> our ``errors`` entries, located under ``prefix``."""
    out = []
    for e in errors:
        loc = [*prefix, *(p for p in e.get("loc", ()) if not isinstance(p, tuple))]
        out.append({"pointer": pointer(loc), "loc": loc, "message": str(e.get("msg", "")),
                    "type": str(e.get("type", "value_error"))})
    return out


def validation_problem(errors: list[dict[str, Any]]) -> ServiceError:
    """A 422 naming every invalid field; ``detail`` spells out the first ones."""
    shown = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['message']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return ServiceError(422, "validation-error", "; ".join(shown) + more, errors=errors)


def validation_error(exc: ValidationError, prefix: Sequence[str | int] = ()) -> ServiceError:
    """A 422 problem for a pydantic ``ValidationError`` found under ``prefix``."""
    return validation_problem(field_errors(exc.errors(include_url=False), prefix))


def core_error(exc: DifferenceFinderError) -> ServiceError:
    """Map core's typed exceptions (they carry ``code`` and ``status``)."""
    return ServiceError(exc.status, exc.code, exc.message, **exc.extra)


def install_handlers(app: FastAPI) -> None:
    """Route every exception type to a problem response."""

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> Response:
        return problem_response(exc.status, exc.code, exc.detail, title=exc.title,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(DifferenceFinderError)
    async def _core(_: Request, exc: DifferenceFinderError) -> Response:
        err = core_error(exc)
        return problem_response(err.status, err.code, err.detail, **err.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            if loc[:1] == ["body"]:
                loc = loc[1:]
            errors.extend(field_errors([{**e, "loc": loc}]))
        err = validation_problem(errors)
        return problem_response(err.status, err.code, err.detail, **err.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        phrase = HTTPStatus(exc.status_code).phrase
        code = phrase.lower().replace(" ", "-").replace("'", "")
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        return problem_response(exc.status_code, code, detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal-error",
                                "the server failed on this request; it has been logged")


def parse_json_model(body: bytes, model: type[BaseModel]) -> Any:
    """A JSON body validated as ``model``: 400 when not JSON, 422 naming invalid fields."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ServiceError(400, "malformed-json", f"the body is not valid JSON ({exc})",
                           title="Malformed JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
