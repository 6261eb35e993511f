"""The Label Studio ML backend protocol under ``/label-studio``: difference regions as
pre-annotations (``rectanglelabels``, and the mask as ``brushlabels`` in Label Studio's
RLE) for tasks that hold a reference and a candidate image.

Give Label Studio ``http://HOST:PORT/label-studio`` as the ML backend URL. The shapes follow
label-studio-ml-backend's ``label_studio_ml/api.py`` (``/health``, ``/setup``, ``/predict``);
task images are resolved like label-studio-sdk's ``get_local_path`` (``/data/...`` and
``upload/...`` paths against ``LABEL_STUDIO_URL``, cloud URIs through the task's presign
endpoint) and fetched by the service's URL fetcher, under its URL policy. The RLE is
label-studio-converter's ``brush.encode_rle``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from core import Finder, PairResult, PipelineConfig, __version__
from core.errors import DifferenceFinderError
from core.regions import region_mask

from . import openapi as api_docs
from .problems import ServiceError, core_error, parse_json_model, validation_problem

__all__ = [
    "MAX_TASKS",
    "PredictRequest",
    "Target",
    "encode_rle",
    "mask_to_rle",
    "parse_label_config",
    "resolve_task_url",
    "router",
]

#: tasks in one /predict request (each is computed in turn)
MAX_TASKS = 100
_CONFIG_LIMIT = 1_000_000  # characters of label_config
_CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://")
_KINDS = ("rectanglelabels", "brushlabels")
DEFAULT_LABEL = "difference"

router = APIRouter(prefix="/label-studio", tags=["label-studio"])


# --- request bodies --------------------------------------------------------------------------


class LabelStudioTask(BaseModel):
    """A task as Label Studio sends it; only ``id`` and ``data`` are read."""

    model_config = ConfigDict(extra="allow")

    id: int | str | None = None
    data: dict[str, Any] = Field(description="the task's data: the reference and candidate "
                                 "image fields (names set by DF_LABEL_STUDIO_*_FIELD)")


class PredictRequest(BaseModel):
    """``POST /label-studio/predict`` as Label Studio sends it (other fields are ignored)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "tasks": [{"id": 7, "data": {"reference": "/data/upload/1/ref.png",
                                     "candidate": "/data/upload/1/cand.png"}}],
        "label_config": '<View><Image name="candidate" value="$candidate"/>'
                        '<RectangleLabels name="diff" toName="candidate">'
                        '<Label value="difference"/></RectangleLabels></View>',
        "project": "1.1718000000",
        "params": {"login": None, "password": None, "context": None},
    }]})

    tasks: list[LabelStudioTask] = Field(min_length=1, max_length=MAX_TASKS)
    label_config: str = Field(min_length=1, max_length=_CONFIG_LIMIT,
                              description="the project's labeling config (XML)")
    project: str | int | None = None
    model_version: str | None = None
    params: dict[str, Any] | None = None


class SetupRequest(BaseModel):
    """``POST /label-studio/setup``; a ``schema`` (label config) is checked when given."""

    model_config = ConfigDict(extra="allow")

    project: str | int | None = None
    schema_: str | None = Field(None, alias="schema", max_length=_CONFIG_LIMIT)


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


# --- the label config ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where predictions go: a labels control, the Image it points at, and the label."""

    type: str  # "rectanglelabels" | "brushlabels"
    from_name: str
    to_name: str
    label: str
    field: str | None  # the task data field the Image shows ($candidate -> candidate)


def _config_problem(message: str, where: str = "label_config") -> ServiceError:
    return validation_problem([{"pointer": f"#/{where}", "loc": [where], "message": message,
                                "type": "label_config"}])


def parse_label_config(xml: str, reference_field: str = "reference",
                       candidate_field: str = "candidate", where: str = "label_config"
                       ) -> list[Target]:
    """The RectangleLabels and BrushLabels controls to fill, one of each kind at most.

    Of several controls of a kind, the one on the Image showing the candidate wins, then
    the reference's, then the first in the document. The label is the control's first
    ``<Label value>``, else ``difference``. No usable control is a 422.
    """
    if "<!doctype" in xml.lower() or "<!entity" in xml.lower():
        raise _config_problem("DOCTYPE and entity declarations are not allowed", where)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _config_problem(f"not well-formed XML ({exc})", where) from None
    images: dict[str, str | None] = {}
    controls: list[ET.Element] = []
    for el in root.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag == "image" and el.get("name"):
            value = el.get("value") or ""
            images[el.get("name", "")] = value[1:] if value.startswith("$") else None
        elif tag in _KINDS and el.get("name"):
            controls.append(el)
    rank = {candidate_field: 0, reference_field: 1}
    best: dict[str, tuple[int, Target]] = {}
    for el in controls:
        kind = el.tag.lower()
        to_names = [n.strip() for n in (el.get("toName") or el.get("toname") or "").split(",")]
        to_name = next((n for n in to_names if n in images), None)
        if to_name is None:
            continue
        labels = [c.get("value") for c in el.iter()
                  if isinstance(c.tag, str) and c.tag.lower() == "label" and c.get("value")]
        target = Target(kind, el.get("name", ""), to_name, labels[0] if labels else DEFAULT_LABEL,
                        images[to_name])
        score = rank.get(target.field or "", 2)
        if kind not in best or score < best[kind][0]:
            best[kind] = (score, target)
    if not best:
        found = sorted({el.tag for el in controls}) or ["none"]
        raise _config_problem(
            "no RectangleLabels or BrushLabels control pointing at an Image (controls with "
            f"toName found: {', '.join(found)}); add for example <RectangleLabels "
            f'name="difference" toName="{candidate_field}"><Label value="difference"/>'
            "</RectangleLabels>", where)
    return [best[k][1] for k in _KINDS if k in best]


# --- brush RLE (label-studio-converter's brush.encode_rle / decode_rle) ----------------------

_RLE_SIZES = (3, 4, 8, 16)  # bits of a run length, selected by a 2-bit index
_WORD = 8  # bits per value


def _runs(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of the maximal runs of a flat array."""
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(arr[1:] != arr[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [arr.size])))
    return lengths.astype(np.int64), arr[starts].astype(np.int64)


def _rle(n: int, lengths: np.ndarray, values: np.ndarray, chunk: int = 1 << 16) -> list[int]:
    """Pack ``n`` values given as runs; bounded memory (runs go out ``chunk`` at a time)."""
    header = f"{n:032b}{_WORD - 1:05b}" + "".join(f"{s - 1:04b}" for s in _RLE_SIZES)
    carry = np.frombuffer(header.encode(), dtype=np.uint8) - ord("0")
    sizes = np.asarray(_RLE_SIZES, dtype=np.int64)
    pieces = (lengths - 1) // 2**16 + 1  # a run over 2**16 goes out in pieces of 2**16
    values = np.repeat(values, pieces)
    runs = np.full(int(pieces.sum()), 2**16, dtype=np.int64)
    runs[np.cumsum(pieces) - 1] = lengths - 2**16 * (pieces - 1)
    packed: list[np.ndarray] = []
    for lo in range(0, runs.size, chunk):
        run, val = runs[lo:lo + chunk], values[lo:lo + chunk]
        idx = np.searchsorted([8, 16, 256], run, side="left")  # run-length size index
        width = sizes[idx]
        total = 1 + 2 + width + _WORD
        code = ((run > 1).astype(np.int64) << (total - 1)) | (idx << (width + _WORD)) \
            | ((run - 1) << _WORD) | val
        shift = total[:, None] - 1 - np.arange(int(total.max()))[None, :]
        bits = ((code[:, None] >> np.maximum(shift, 0)) & 1)[shift >= 0].astype(np.uint8)
        bits = np.concatenate((carry, bits))
        whole = bits.size - bits.size % 8
        packed.append(np.packbits(bits[:whole]))
        carry = bits[whole:]
    pad = 8 - carry.size % 8  # 1..8 zero bits, as the converter pads
    packed.append(np.packbits(np.concatenate((carry, np.zeros(pad, dtype=np.uint8)))))
    return np.concatenate(packed).tolist()


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio's RLE of a flat uint8 array (thi.ng rle-pack, word size 8, run-length
    sizes 3/4/8/16 bits), bit for bit as label-studio-converter's ``encode_rle``.

    Header: 32-bit count, word size - 1 (5 bits), each run-length size - 1 (4 bits). Then
    per run: 1 bit repeat flag, 2 bits size index, length - 1, the 8-bit value (single
    values are literal runs of length 1). Runs longer than 2**16 are split; the bits are
    padded with 1 to 8 zero bits, as the converter does.
    """
    arr = np.asarray(values, dtype=np.uint8).ravel()
    return _rle(arr.size, *_runs(arr))


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A boolean (H, W) mask as Label Studio's brush RLE: RGBA values, 255 where set
    (the converter's ``mask2rle``, without building the 4x array)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    lengths, values = _runs(flat.view(np.uint8))
    return _rle(4 * flat.size, 4 * lengths, values * 255)


# --- images ----------------------------------------------------------------------------------


def _is_jwt(token: str) -> bool:
    """Label Studio's personal access tokens are JWTs (sent as Bearer), legacy ones not."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        head = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(head, dict) and "alg" in head


def _same_origin(a: str, b: str) -> bool:
    try:
        pa, pb = urlsplit(a), urlsplit(b)
        return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)
    except ValueError:
        return False


def resolve_task_url(value: str, task_id: int | str | None, base: str | None,
                     api_key: str | None, what: str) -> tuple[str, dict[str, str]]:
    """A task's image reference -> (absolute URL, headers), as label-studio-sdk resolves it:
    ``/data/...`` and other absolute paths against ``base``, ``upload/...`` as
    ``/data/upload/...``, ``s3://``/``gs://``/``azure-blob://`` through
    ``/tasks/<id>/presign/``. The token goes only to ``base``'s origin."""
    text = value.strip()
    if text.startswith("upload/"):
        text = "/data/" + text
    elif text.startswith("/upload/"):
        text = "/data" + text
    if text.startswith(_CLOUD_SCHEMES):
        if task_id is None:
            raise _field_problem(what, "a cloud storage URI needs the task's id (Label "
                                 "Studio presigns it per task)")
        uri = base64.urlsafe_b64encode(text.encode()).decode("ascii")
        text = f"/tasks/{task_id}/presign/?fileuri={uri}"
    if text.startswith("/"):
        if base is None:
            raise _field_problem(what, f"{value[:200]!r} is a Label Studio path; set "
                                 "DF_LABEL_STUDIO_URL (or LABEL_STUDIO_URL) so it can be "
                                 "fetched")
        text = base + text
    elif not text.lower().startswith(("http://", "https://")):
        raise _field_problem(what, f"{value[:200]!r} is neither an http(s) URL, a Label "
                             "Studio path (/data/..., upload/...), a cloud URI nor a data: URL")
    headers: dict[str, str] = {}
    if api_key and base and _same_origin(text, base):
        scheme = "Bearer" if _is_jwt(api_key) else "Token"
        headers["Authorization"] = f"{scheme} {api_key}"
    return text, headers


def _field_problem(what: str, message: str) -> ServiceError:
    loc: list[str | int] = [int(p) if p.isdigit() else p for p in what.split("/")]
    return validation_problem([{"pointer": "#/" + what, "loc": loc, "message": message,
                                "type": "image_reference"}])


async def _task_image(state: Any, task: LabelStudioTask, i: int, field: str) -> np.ndarray:
    """Fetch (or unbase64) and decode one image field of task ``i``."""
    what = f"tasks/{i}/data/{field}"
    value = task.data.get(field)
    if value is None:
        have = ", ".join(sorted(map(str, task.data))[:10]) or "nothing"
        raise _field_problem(what, f"the task has no {field!r} field (it has: {have}); "
                             "the field names are set by DF_LABEL_STUDIO_REFERENCE_FIELD and "
                             "DF_LABEL_STUDIO_CANDIDATE_FIELD")
    if not isinstance(value, str) or not value.strip():
        raise _field_problem(what, "must be a non-empty string (a URL or Label Studio path)")
    if value.startswith("data:"):
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(state.executor, state.loader.unbase64, value, what)
        return await state.loader.decode(data, what)
    s = state.settings
    key = s.label_studio_api_key.get_secret_value() if s.label_studio_api_key else None
    url, headers = resolve_task_url(value, task.id, s.label_studio_url, key, what)
    return await state.loader.decode(await state.fetcher.fetch(url, what, headers), what)


# --- predictions -----------------------------------------------------------------------------


def model_version(config: PipelineConfig) -> str:
    """Names the code and the pipeline: a new pipeline is a new model version."""
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True)
                            .encode()).hexdigest()[:8]
    return f"difference-finder-{__version__}-{digest}"


def _compute(config: PipelineConfig, ref: np.ndarray, cand: np.ndarray, mask: bool,
             device: torch.device) -> tuple[PairResult, np.ndarray | None]:
    """Runs in a worker thread: the pair's result, and its region mask when asked."""
    result = Finder.from_config(config, device).analyze(ref, cand, metrics=False)[0]
    return result, (region_mask(result.map, config.regions) if mask else None)


def prediction(result: PairResult, mask: np.ndarray | None, targets: list[Target],
               version: str) -> dict[str, Any]:
    """One task's prediction: each region as a rectangle in percent of the image, strongest
    first, and the mask as one brush result."""
    h, w = result.map.shape[-2:]
    regions = sorted(result.regions, key=lambda r: -r.score)
    out: list[dict[str, Any]] = []
    for t in targets:
        base = {"from_name": t.from_name, "to_name": t.to_name, "type": t.type,
                "original_width": int(w), "original_height": int(h), "image_rotation": 0}
        if t.type == "rectanglelabels":
            out += [{**base, "id": f"diff{k + 1}", "score": float(r.score), "value": {
                "x": 100.0 * r.x / w, "y": 100.0 * r.y / h, "width": 100.0 * r.width / w,
                "height": 100.0 * r.height / h, "rotation": 0, "rectanglelabels": [t.label]}}
                for k, r in enumerate(regions)]
        elif mask is not None and mask.any():
            out.append({**base, "id": "diffmask", "score": float(sum(r.score for r in regions)),
                        "value": {"format": "rle", "rle": mask_to_rle(mask),
                                  "brushlabels": [t.label]}})
    score = float(min(1.0, sum(r.score for r in regions)))
    return {"model_version": version, "score": score, "result": out}


async def _predict_task(request: Request, state: Any, task: LabelStudioTask, i: int,
                        targets: list[Target], config: PipelineConfig, version: str
                        ) -> dict[str, Any]:
    from .app import _wait_disconnect
    from .workers import DeadlineExceeded

    s = state.settings
    deadline = time.monotonic() + s.request_timeout
    try:
        ref, cand = await asyncio.wait_for(asyncio.gather(
            _task_image(state, task, i, s.label_studio_reference_field),
            _task_image(state, task, i, s.label_studio_candidate_field)),
            max(0.0, deadline - time.monotonic()))
    except (TimeoutError, asyncio.TimeoutError):
        state.metrics.rejected.labels("deadline").inc()
        raise DeadlineExceeded(s.request_timeout) from None
    want_mask = any(t.type == "brushlabels" for t in targets)
    try:
        result, mask = await state.pool.run(
            lambda device: _compute(config, ref, cand, want_mask, device), deadline=deadline,
            disconnected=lambda: _wait_disconnect(request))
    except DifferenceFinderError as exc:  # name the task: a batch has many
        err = core_error(exc)
        raise ServiceError(err.status, err.code, f"tasks/{i} (task {task.id}): {err.detail}",
                           task=i, task_id=task.id, **err.extra) from None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.executor, prediction, result, mask, targets,
                                      version)


# --- routes ----------------------------------------------------------------------------------

_EXAMPLE_RESULT = {
    "model_version": "difference-finder-0.1.0-3f2a9c1d", "score": 0.93,
    "result": [{"id": "diff1", "from_name": "diff", "to_name": "candidate",
                "type": "rectanglelabels", "original_width": 512, "original_height": 512,
                "image_rotation": 0, "score": 0.81,
                "value": {"x": 25.0, "y": 12.5, "width": 6.25, "height": 9.375, "rotation": 0,
                          "rectanglelabels": ["difference"]}}],
}
_OBJECT = {"type": "object", "additionalProperties": True}
_ERRORS = {k: v for k, v in api_docs.DIFF_RESPONSES.items()
           if k in (400, 401, 413, 422, 503, 504)}


@router.get("/health", summary="Label Studio ML backend health",
            responses={200: {"description": "The backend is up", "content": {
                "application/json": {"schema": _OBJECT, "example": {
                    "status": "UP", "model_class": "DifferenceFinder",
                    "model_version": "difference-finder-0.1.0-3f2a9c1d"}}}}})
@router.get("/", include_in_schema=False)
async def health(request: Request) -> JSONResponse:
    """What Label Studio checks when the backend is connected."""
    config = request.app.state.df.settings.annotation_config
    return JSONResponse({"status": "UP", "model_class": "DifferenceFinder",
                         "model_version": model_version(config)})


@router.post("/setup", summary="Label Studio ML backend setup",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": request_schema(SetupRequest)}}}},
             responses={200: {"description": "The model version", "content": {
                 "application/json": {"schema": _OBJECT, "example": {
                     "model_version": "difference-finder-0.1.0-3f2a9c1d"}}}},
                 **{k: v for k, v in _ERRORS.items() if k in (400, 401, 422)}})
async def setup(request: Request) -> JSONResponse:
    """Label Studio calls this when the backend is added; a label config (``schema``)
    without a usable RectangleLabels/BrushLabels control is refused here already."""
    state = request.app.state.df
    s = state.settings
    req: SetupRequest = parse_json_model(await request.body(), SetupRequest)
    if req.schema_:
        parse_label_config(req.schema_, s.label_studio_reference_field,
                           s.label_studio_candidate_field, where="schema")
    return JSONResponse({"model_version": model_version(s.annotation_config)})


@router.post("/predict", summary="Label Studio ML backend predictions",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": request_schema(PredictRequest, inline=("LabelStudioTask",)),
                 "example": PredictRequest.model_config["json_schema_extra"][
                     "examples"][0]}}}},  # type: ignore[index]
             responses={200: {"description": "One prediction per task, in task order: the "
                              "regions (strongest first) as rectanglelabels in percent of the "
                              "image, and the mask as brushlabels (RLE) when the label config "
                              "has a BrushLabels control",
                              "content": {"application/json": {"schema": _OBJECT, "example": {
                                  "results": [_EXAMPLE_RESULT],
                                  "model_version": _EXAMPLE_RESULT["model_version"]}}}},
                        **_ERRORS})
async def predict(request: Request) -> Response:
    """Pre-annotations for each task: its reference and candidate images are fetched, their
    difference computed on the worker pool, its regions returned on the candidate."""
    from .workers import ClientDisconnected

    state = request.app.state.df
    s = state.settings
    with state.pool.admit():
        body = await request.body()
        loop = asyncio.get_running_loop()
        req: PredictRequest = await loop.run_in_executor(
            state.executor, parse_json_model, body, PredictRequest)
        targets = await loop.run_in_executor(
            state.executor, parse_label_config, req.label_config,
            s.label_studio_reference_field, s.label_studio_candidate_field)
        config = s.annotation_config
        version = model_version(config)
        results = []
        for i, task in enumerate(req.tasks):
            if await request.is_disconnected():
                state.metrics.rejected.labels("disconnected").inc()
                raise ClientDisconnected()
            results.append(await _predict_task(request, state, task, i, targets, config,
                                               version))
        body = await loop.run_in_executor(state.executor, _json_bytes,
                                          {"results": results, "model_version": version})
    return Response(body, media_type="application/json")


def _json_bytes(obj: Any) -> bytes:
    """Compact JSON, built off the event loop (brush RLE lists can be long)."""
    return json.dumps(obj, separators=(",", ":")).encode()
