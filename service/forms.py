"""Request bodies, read one way for every route: the Content-Type check, a JSON body
validated as a model, and a multipart form checked against its description (fields,
counts, sizes); the same description generates the form's OpenAPI schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from core import PipelineConfig

from .errors import MalformedJson, PayloadTooLarge, UnsupportedMediaType, ValidationProblem
from .problems import validation_error

__all__ = [
    "JSON",
    "MULTIPART",
    "PART_LIMIT",
    "FileField",
    "MultipartForm",
    "TextField",
    "Upload",
    "media_type",
    "parse_config",
    "parse_json_model",
    "read_json",
    "read_multipart",
    "require_media",
]

JSON = "application/json"
MULTIPART = "multipart/form-data"
PART_LIMIT = 1024 * 1024  #: bytes of one text part (config, labels, baseline)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media(request: Request, accepted: Sequence[str], detail: str | None = None) -> str:
    """The request's media type, or 415 when it is not one of ``accepted``."""
    kind = media_type(request)
    if kind not in accepted:
        raise UnsupportedMediaType(detail or f"Content-Type {kind or '(none)'!r} is not "
                                   f"accepted; send {' or '.join(accepted)}", accepted)
    return kind


def decode_json(raw: bytes | str) -> Any:
    """JSON text -> Python value; 400 when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedJson(f"the body is not valid JSON ({exc})") from None


def validate(model: type[M], raw: Any) -> M:
    """``raw`` as ``model``; 422 naming the invalid fields."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_json_model(body: bytes, model: type[M]) -> M:
    """A JSON body validated as ``model``: 400 when not JSON, 422 naming invalid fields."""
    return validate(model, decode_json(body))


async def read_json(request: Request, model: type[M], executor: Executor) -> M:
    """The request's JSON body as ``model``, parsed off the event loop."""
    body = await request.body()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, parse_json_model, body, model)


def parse_config(text: str | bytes) -> PipelineConfig:
    """A form's ``config`` part (JSON text; empty is the default pipeline)."""
    try:
        raw = json.loads(text) if text.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationProblem.at(["config"], f"not valid JSON ({exc})",
                                   "json_invalid") from None
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, ("config",)) from None


# --- the multipart form -----------------------------------------------------------------


@dataclass(frozen=True)
class FileField:
    """A required image file part; ``max_count`` over 1: repeat the field, in order."""

    name: str
    description: str
    max_count: int = 1

    @property
    def many(self) -> bool:
        return self.max_count > 1

    def schema(self) -> dict[str, Any]:
        binary = {"type": "string", "format": "binary"}
        if not self.many:
            return {**binary, "description": self.description}
        return {"type": "array", "minItems": 1, "maxItems": self.max_count, "items": binary,
                "description": self.description}


@dataclass(frozen=True)
class TextField:
    """An optional text part (JSON when ``media_type`` says so)."""

    name: str
    description: str
    media_type: str | None = None
    schema_ref: str | None = None  # the component its JSON follows

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "description": self.description}
        if self.media_type:
            out["contentMediaType"] = self.media_type
        if self.schema_ref:
            out["contentSchema"] = {"$ref": f"#/components/schemas/{self.schema_ref}"}
        return out


@dataclass(frozen=True)
class Upload:
    """One file part as read: where it sits in the form (``candidates/1``) and its bytes."""

    where: str
    data: bytes
    filename: str | None


@dataclass(frozen=True)
class MultipartForm:
    """One ``multipart/form-data`` body: its parts, the parser's limits, an example."""

    files: tuple[FileField, ...]
    texts: tuple[TextField, ...]
    max_files: int
    max_fields: int
    example_summary: str
    example: dict[str, Any]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files) + tuple(t.name for t in self.texts)

    def openapi(self) -> dict[str, Any]:
        """The form's OpenAPI media type object."""
        return {
            "schema": {"type": "object", "required": [f.name for f in self.files],
                       "properties": {**{f.name: f.schema() for f in self.files},
                                      **{t.name: t.schema() for t in self.texts}}},
            "encoding": {f.name: {"contentType": "image/*"} for f in self.files},
            "examples": {"default": {"summary": self.example_summary, "value": self.example}},
        }

    def errors(self, form: FormData) -> list[dict[str, Any]]:
        """What is wrong with the form's shape: unknown, repeated, missing, text for file."""
        names = self.names
        errors = [_error([k], "extra_forbidden", f"unexpected field; expected {', '.join(names)}")
                  for k in dict.fromkeys(form.keys()) if k not in names]
        many = {f.name for f in self.files if f.many}
        errors += [_error([k], "too_many", "given more than once")
                   for k in names if k not in many and len(form.getlist(k)) > 1]
        for f in self.files:
            errors += _file_errors(f, form)
        return errors


def _error(loc: list[str], type: str, message: str) -> dict[str, Any]:
    return {"pointer": "#/" + "/".join(loc), "loc": loc, "type": type, "message": message}


def _parts(f: FileField, form: FormData) -> list[tuple[str, Any]]:
    """(where, value) of a file field's parts; a single field's last value."""
    if f.many:
        return [(f"{f.name}/{i}", v) for i, v in enumerate(form.getlist(f.name))]
    value = form.get(f.name)
    return [] if value is None else [(f.name, value)]


def _file_errors(f: FileField, form: FormData) -> list[dict[str, Any]]:
    parts = _parts(f, form)
    errors = []
    if not parts:
        errors.append(_error([f.name], "missing", "at least one file part is required "
                             "(repeat the field for more)" if f.many
                             else "a file part is required"))
    if len(parts) > f.max_count:
        errors.append(_error([f.name], "too_long",
                             f"at most {f.max_count} {f.name}, got {len(parts)}"))
    errors += [_error(where.split("/"), "file_expected", "must be a file part (with a "
                      "filename), not a text field")
               for where, part in parts if not isinstance(part, UploadFile)]
    return errors


async def _text(form: FormData, name: str) -> str | bytes | None:
    """A text part: a field's string, a file part's bytes (size checked), or None."""
    value = form.get(name)
    if isinstance(value, UploadFile):
        if (value.size or 0) > PART_LIMIT:
            raise PayloadTooLarge(PART_LIMIT, name, part=True)
        return await value.read()
    return value


async def read_multipart(request: Request, form: MultipartForm,
                         parse: Callable[[dict[str, str | bytes | None]], T],
                         check_size: Callable[[int, str], None]
                         ) -> tuple[T, dict[str, list[Upload]]]:
    """The form's text parts given to ``parse`` (422 first for a malformed form), then its
    file parts read, each size checked by ``check_size(size, where)`` before reading."""
    async with request.form(max_files=form.max_files, max_fields=form.max_fields,
                            max_part_size=PART_LIMIT) as data:
        errors = form.errors(data)
        if errors:
            raise ValidationProblem(errors)
        parsed = parse({t.name: await _text(data, t.name) for t in form.texts})
        files: dict[str, list[Upload]] = {}
        for f in form.files:
            files[f.name] = []
            for where, part in _parts(f, data):
                if part.size is not None:
                    check_size(part.size, where)
                files[f.name].append(Upload(where, await part.read(), part.filename))
    return parsed, files
