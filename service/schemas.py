"""Request and response models of the HTTP API, and the multipart forms of ``/v1/diff`` and
``/v1/compare`` (the pipeline itself is core's model)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from core import PipelineConfig

from .forms import FileField, MultipartForm, TextField
from .scores import METRICS_DOC, MetricsOption

__all__ = [
    "COMPARE_FORM",
    "DIFF_FORM",
    "EXAMPLE_CONFIG",
    "MAX_CANDIDATES",
    "TINY_PNG_B64",
    "CandidateOut",
    "CompareRequest",
    "CompareResponse",
    "DiffRequest",
    "DiffResponse",
    "ImageInput",
    "ImprovementOut",
    "Label",
    "MapPayload",
    "RegionOut",
    "Scale",
]

#: candidates per request (each is an image the size of the reference, decoded in memory)
MAX_CANDIDATES = 8

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
        "config": {"metric": "ssim", "render": {"colormap": "viridis"}},
        "metrics": ["ssim", "psnr"],
    }]})

    reference: ImageInput
    candidate: ImageInput
    config: PipelineConfig = Field(default_factory=PipelineConfig,
                                   description="the pipeline; every field is optional")
    metrics: MetricsOption = "auto"


class MapPayload(BaseModel):
    """A float32 array: base64 of its little-endian, row-major (C order) bytes."""

    dtype: str = Field("float32", description="always float32")
    shape: list[int] = Field(description="[H, W], or [C, H, W] with reduction 'none'")
    data: str = Field(description="base64 of the little-endian float32 values, row-major")


class RegionOut(BaseModel):
    """A difference region: box (top-left x, y), area, share of the total difference, and
    (for the default significance map) how far it stands out."""

    x: int
    y: int
    width: int
    height: int
    area: int
    score: float = Field(description="the region's share of the map's total difference, 0-1")
    peak: float | None = Field(description="the map's highest value in the region, in its units")
    mean: float | None = Field(description="the map's mean over the region's pixels")
    significance: float | None = Field(
        None, description="the region's peak in calibrated units (robust sigmas of the pair's "
        "own image-wide residual) for hysteresis regions of a calibrated map (the default "
        "'significance' strategy); null for percentile, Otsu and top-k regions")


_SUMMARY_DOC = ("one plain sentence about the regions: \"no significant difference found\" "
                "when none is reported (\"no local difference stands out, but the images "
                "differ image-wide (PSNR 8.5 dB)\" when their PSNR is under 20 dB), else "
                "their count (\"2 significant regions\"; \"3 regions\" for percentile, Otsu "
                "or top-k regions)")


class DiffResponse(BaseModel):
    """The ``application/json`` answer of ``POST /v1/diff``.

    JSON has no infinity or NaN: such metric values (PSNR of identical images is +inf)
    are sent as ``null``.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "map": {"dtype": "float32", "shape": [2, 2], "data": "AAAAAAAAAAAAAIA+AACAPw=="},
        "metrics": {"ssim": 0.6123},
        "regions": [{"x": 0, "y": 1, "width": 2, "height": 1, "area": 2, "score": 1.0,
                     "peak": 14.2, "mean": 7.5, "significance": 14.2}],
        "summary": "1 significant region",
        "config": PipelineConfig().resolved(),
        "timing_ms": {"decode": 0.4, "queue": 0.1, "load": 0.1, "compute": 1.9,
                      "regions": 0.2, "encode": 0.1, "total": 3.1},
    }]})

    map: MapPayload
    metrics: dict[str, float | None] = Field(
        description="scores by metric name, as chosen by the request's metrics option (by "
        "default only cheap ones: see DiffRequest.metrics); null where not finite (e.g. "
        "PSNR of identical images)")
    regions: list[RegionOut] = Field(description="ranked by score, highest first; empty "
                                     "when no significant difference was found")
    summary: str = Field(description=_SUMMARY_DOC)
    config: dict[str, Any] = Field(description="the full resolved pipeline, without a "
                                   "metric nothing used: posted back, the same answer")
    timing_ms: dict[str, float] = Field(
        description="milliseconds per stage: decode, queue, load, compute, regions, "
        "encode, total")


# --- POST /v1/compare -------------------------------------------------------------------

Label = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class CompareRequest(BaseModel):
    """The ``application/json`` form of ``POST /v1/compare``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "reference": {"data": TINY_PNG_B64},
        "candidates": [{"data": TINY_PNG_B64}, {"url": "https://example.org/ours.png"}],
        "labels": ["baseline", "ours"], "baseline": "baseline",
        "config": {"metric": "ssim", "render": {"colormap": "magma"}},
    }]})

    reference: ImageInput
    candidates: list[ImageInput] = Field(min_length=1, max_length=MAX_CANDIDATES,
                                         description="compared with the reference, in order")
    labels: list[Label] | None = Field(None, description="one per candidate, unique "
                                       "(default: the URL's file name, else candidate i)")
    baseline: Label | None = Field(None, description="the label every other candidate's "
                                   "improvement map is measured against")
    config: PipelineConfig = Field(default_factory=PipelineConfig,
                                   description="the pipeline; every field is optional")


class Scale(BaseModel):
    """The value range every map of a kind is drawn with."""

    vmin: float
    vmax: float


class CandidateOut(BaseModel):
    """One candidate: its map on the shared scale, scores and regions."""

    label: str
    map: MapPayload
    metrics: dict[str, float | None] = Field(
        description="psnr, ssim, ms-ssim, lpips (alex, when its weights are present) and "
        "the pipeline's metric; null where not finite (PSNR of identical images)")
    skipped: dict[str, str] = Field(description="metrics left out, with the reason")
    regions: list[RegionOut] = Field(description="ranked by score, highest first; empty "
                                     "when no significant difference was found")
    summary: str = Field(description=_SUMMARY_DOC)
    heatmap: str | None = Field(None, description="with ?heatmaps=true: the map drawn on the "
                                "shared scale, as a data: URL of a PNG")


class ImprovementOut(BaseModel):
    """|baseline map| - |candidate map|: positive where the candidate is closer."""

    label: str
    map: MapPayload
    improved_fraction: float = Field(description="share of pixels better by more than "
                                     "the tolerance")
    worsened_fraction: float = Field(description="share of pixels worse by more than it")
    heatmap: str | None = Field(None, description="with ?heatmaps=true: drawn with a "
                                "diverging colormap on the symmetric improvement scale")


_MAP_EXAMPLE = {"dtype": "float32", "shape": [2, 2], "data": "AAAAAAAAAAAAAIA+AACAPw=="}


class CompareResponse(BaseModel):
    """The ``application/json`` answer of ``POST /v1/compare``; candidates in request order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "scale": {"vmin": 0.0, "vmax": 1.0}, "metric": "ssim",
        "higher_is_better": {"psnr": True, "ssim": True, "ms-ssim": True},
        "candidates": [{
            "label": label, "map": _MAP_EXAMPLE,
            "metrics": {"psnr": psnr, "ssim": ssim, "ms-ssim": ms},
            "skipped": {"lpips": "LPIPS alex weights are not present (...); run "
                        "`difference-finder weights fetch --nets alex`"},
            "regions": [{"x": 0, "y": 1, "width": 2, "height": 1, "area": 2, "score": 1.0,
                         "peak": 14.2, "mean": 7.5, "significance": 14.2}],
            "summary": "1 significant region"}
            for label, psnr, ssim, ms in (("baseline", 24.1, 0.71, 0.93),
                                          ("ours", 27.9, 0.84, 0.97))],
        "baseline": "baseline",
        "improvement": [{"label": "ours", "map": _MAP_EXAMPLE, "improved_fraction": 0.62,
                         "worsened_fraction": 0.05}],
        "improvement_scale": {"vmin": -0.5, "vmax": 0.5}, "tolerance": 0.008,
        "config": PipelineConfig().model_dump(mode="json"),
        "timing_ms": {"decode": 3.1, "queue": 0.2, "compute": 41.0, "encode": 1.2,
                      "total": 45.5},
    }]})

    scale: Scale = Field(description="the one range every candidate map is drawn with")
    metric: str = Field(description="which metrics key is the pipeline's own metric")
    higher_is_better: dict[str, bool]
    candidates: list[CandidateOut]
    baseline: str | None
    improvement: list[ImprovementOut] = Field(description="one per candidate other than "
                                              "the baseline; empty without a baseline")
    improvement_scale: Scale | None
    tolerance: float | None = Field(description="absolute map difference a pixel must "
                                    "exceed to count as improved or worsened: 1% of the "
                                    "99th percentile of all candidate maps' magnitudes")
    config: dict[str, Any] = Field(description="the full resolved pipeline")
    timing_ms: dict[str, float]
    colorbar: str | None = Field(None, description="with ?heatmaps=true: the shared "
                                 "scale's colorbar, a data: URL of a PNG")
    improvement_colorbar: str | None = None


# --- the multipart forms (the reader and the OpenAPI schema both follow them) -------------

_CONFIG_PART = TextField("config", "the pipeline as a JSON string (a PipelineConfig "
                         "object); every field is optional", media_type="application/json",
                         schema_ref="PipelineConfig")

#: an example pipeline for the documentation
EXAMPLE_CONFIG = {"metric": "ssim", "render": {"colormap": "viridis", "colorbar": True}}

DIFF_FORM = MultipartForm(
    files=(FileField("reference", "the reference image file"),
           FileField("candidate", "the candidate image file, compared against the "
                     "reference")),
    texts=(_CONFIG_PART, TextField(
        "metrics", METRICS_DOC + ". As JSON (\"auto\", true, false, [\"ssim\", \"psnr\"]) "
        "or comma-separated names (ssim,psnr)")), max_files=4, max_fields=5,
    example_summary="two files, a pipeline and the scores wanted",
    example={"reference": "<reference.png>", "candidate": "<candidate.png>",
             "config": json.dumps(EXAMPLE_CONFIG), "metrics": "ssim,psnr"})

COMPARE_FORM = MultipartForm(
    files=(FileField("reference", "the reference image file"),
           FileField("candidates", "candidate image files: repeat the field, in order",
                     max_count=MAX_CANDIDATES)),
    texts=(TextField("labels", "one label per candidate: a JSON list of strings, or plain "
                     "comma-separated (ours,baseline); default: the files' names",
                     media_type="application/json"),
           TextField("baseline", "one of the labels"), _CONFIG_PART),
    max_files=MAX_CANDIDATES + 4, max_fields=8,
    example_summary="a reference, two candidates, a baseline",
    example={"reference": "<reference.png>", "candidates": ["<baseline.png>", "<ours.png>"],
             "labels": '["baseline", "ours"]', "baseline": "baseline",
             "config": json.dumps({"metric": "ssim", "render": {"colormap": "magma"}})})
