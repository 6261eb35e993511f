"""RFC 9457 problem details: every error the service sends is ``application/problem+json``.

Problem ``type`` URIs are ``urn:difference-finder:problem:<code>``; ``code`` is also sent
on its own. Invalid fields are listed in ``errors`` with a JSON pointer into the request
(``#/config/post_processor/1/sigma``) and their location as a list. The errors themselves
are :mod:`service.errors`; this module renders them and installs the handlers.
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

from core.errors import DifferenceFinderError, validation_message

from .errors import ServiceProblem, ValidationProblem, title_for

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "TYPE_PREFIX",
    "FieldError",
    "Problem",
    "field_errors",
    "install_handlers",
    "pointer",
    "problem_body",
    "problem_response",
    "render",
    "validation_error",
]

log = logging.getLogger("service")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:difference-finder:problem:"


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


def problem_body(status: int, code: str, detail: str, *, title: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """A problem details object as plain JSON (extension members without None values)."""
    return {
        "type": TYPE_PREFIX + code,
        "title": title or title_for(status, code),
        "status": status,
        "detail": detail,
        "code": code,
        **{k: _jsonable(v) for k, v in extra.items() if v is not None},
    }


def problem_response(status: int, code: str, detail: str, *, title: str | None = None,
                     headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """Build an ``application/problem+json`` response."""
    body = problem_body(status, code, detail, title=title, **extra)
    return Response(json.dumps(body, allow_nan=False).encode(), status_code=status,
                    headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def render(err: ServiceProblem, headers: Mapping[str, str] | None = None) -> Response:
    """``err`` as its problem response (``headers`` replace the error's own)."""
    return problem_response(err.status, err.code, err.detail, title=err.title,
                            headers=err.headers if headers is None else headers, **err.extra)


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
        out.append({"pointer": pointer(loc), "loc": loc, "message": validation_message(e),
                    "type": str(e.get("type", "value_error"))})
    return out


def validation_error(exc: ValidationError, prefix: Sequence[str | int] = ()
                     ) -> ValidationProblem:
    """A 422 problem for a pydantic ``ValidationError`` found under ``prefix``."""
    return ValidationProblem(field_errors(exc.errors(include_url=False), prefix))


def install_handlers(app: FastAPI) -> None:
    """Route every exception type to a problem response."""

    @app.exception_handler(ServiceProblem)
    async def _service(_: Request, exc: ServiceProblem) -> Response:
        return render(exc)

    @app.exception_handler(DifferenceFinderError)
    async def _core(_: Request, exc: DifferenceFinderError) -> Response:
        return render(ServiceProblem.from_core(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            if loc[:1] == ["body"]:
                loc = loc[1:]
            errors.extend(field_errors([{**e, "loc": loc}]))
        return render(ValidationProblem(errors))

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
