"""The ``metrics`` option of ``POST /v1/diff``: which scores to compute. ``"auto"`` (the
default) gives only scores that cost little next to the map (core's ``Finder.score_names``);
``true`` the configured metric; ``false`` none; a list those metrics by name."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from core.errors import ConfigError
from core.metrics import METRICS

from .problems import validation_error

__all__ = ["METRICS_DOC", "MetricsOption", "parse_metrics"]

METRICS_DOC = (
    "which scores to compute: \"auto\" (default) only the cheap ones - the configured "
    "metric when the strategy computes it anyway or it is cheap (mse, psnr), else mse and "
    "psnr; true: the configured metric (e.g. ssim, lpips); false: none; or a list of metric "
    "names (each with its default parameters, the configured one with the pipeline's)")


def _check(value: Any) -> Any:
    """Only "auto", a boolean or a list of known metric names (422 naming the valid ones)."""
    if value == "auto" or isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for name in value:
            try:
                METRICS.get(name)
            except ConfigError as exc:
                raise PydanticCustomError("unknown_name", exc.message) from None
        return list(dict.fromkeys(value))
    raise PydanticCustomError("metrics_type", "give \"auto\", true, false or a list of metric "
                              f"names ({', '.join(METRICS.names())})")


#: the request option's type (and its JSON schema)
MetricsOption = Annotated[Literal["auto"] | bool | list[str], BeforeValidator(_check),
                          Field(description=METRICS_DOC)]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(MetricsOption)


def parse_metrics(text: str | bytes | None) -> str | bool | list[str]:
    """A form's ``metrics`` part: JSON (``["ssim", "psnr"]``, ``true``, ``"auto"``) or plain
    comma-separated names (``ssim,psnr``, ``auto``, ``none``); missing or empty is ``"auto"``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = (text or "").strip()
    if not text:
        return "auto"
    try:
        raw: Any = json.loads(text)
    except ValueError:
        plain = {"auto": "auto", "none": False}  # as the CLI's --metrics
        raw = plain.get(text.lower(), [n.strip() for n in text.split(",") if n.strip()])
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise validation_error(exc, ("metrics",)) from None
