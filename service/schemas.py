"""Request and response models of the HTTP API (the pipeline itself is core's model)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from core import PipelineConfig

__all__ = ["DiffRequest", "DiffResponse", "ImageInput", "MapPayload", "RegionOut"]

# A 2x2 RGB PNG, so examples stay short and real.
TINY_PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR42mP4z8DA8J+BkYHh"
                "////DAAe9gT9CzF8CQAAAABJRU5ErkJggg==")


class ImageInput(BaseModel):
    """An image given by URL or inline, as the base64 of the encoded file."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.org/reference.png"}, {"data": TINY_PNG_B64}]})

    url: str | None = Field(None, max_length=8192,
                            description="http(s) URL of an image file, fetched by the server")
    data: str | None = Field(None, description="base64 of the encoded image file "
                             "(PNG, JPEG, WebP, TIFF, BMP); a data: URL prefix is allowed")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageInput:
        if (self.url is None) == (self.data is None):
            raise PydanticCustomError("one_of", "give exactly one of 'url' or 'data'")
        return self


class DiffRequest(BaseModel):
    """The ``application/json`` form of ``POST /v1/diff``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "reference": {"data": TINY_PNG_B64},
        "candidate": {"url": "https://example.org/candidate.png"},
        "config": {"metric": "ssim", "post_processor": [{"name": "smooth", "sigma": 2.0}],
                   "render": {"colormap": "viridis"}},
    }]})

    reference: ImageInput
    candidate: ImageInput
    config: PipelineConfig = Field(default_factory=PipelineConfig,
                                   description="the pipeline; every field is optional")


class MapPayload(BaseModel):
    """A float32 array: base64 of its little-endian, row-major (C order) bytes."""

    dtype: str = Field("float32", description="always float32")
    shape: list[int] = Field(description="[H, W], or [C, H, W] with reduction 'none'")
    data: str = Field(description="base64 of the little-endian float32 values, row-major")


class RegionOut(BaseModel):
    """A difference region: box (top-left x, y), area, share of the total difference."""

    x: int
    y: int
    width: int
    height: int
    area: int
    score: float = Field(description="the region's share of the map's total difference, 0-1")
    peak: float | None
    mean: float | None


class DiffResponse(BaseModel):
    """The ``application/json`` answer of ``POST /v1/diff``.

    JSON has no infinity or NaN: such metric values (PSNR of identical images is +inf)
    are sent as ``null``.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "map": {"dtype": "float32", "shape": [2, 2], "data": "AAAAAAAAAAAAAIA+AACAPw=="},
        "metrics": {"ssim": 0.6123},
        "regions": [{"x": 0, "y": 1, "width": 2, "height": 1, "area": 2, "score": 1.0,
                     "peak": 1.0, "mean": 0.625}],
        "config": PipelineConfig().model_dump(),
        "timing_ms": {"decode": 0.4, "queue": 0.1, "load": 0.1, "compute": 1.9,
                      "regions": 0.2, "encode": 0.1, "total": 3.1},
    }]})

    map: MapPayload
    metrics: dict[str, float | None] = Field(
        description="the configured metric's score by name; null where not finite "
        "(e.g. PSNR of identical images)")
    regions: list[RegionOut] = Field(description="ranked by score, highest first")
    config: dict[str, Any] = Field(description="the full resolved pipeline")
    timing_ms: dict[str, float] = Field(
        description="milliseconds per stage: decode, queue, load, compute, regions, "
        "encode, total")
