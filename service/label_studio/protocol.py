"""The Label Studio ML backend protocol's bodies: what ``/predict`` and ``/setup`` receive,
the model version, and a task's prediction (regions as ``rectanglelabels`` in percent,
the mask as ``brushlabels``), shaped as label-studio-ml-backend's ``label_studio_ml/api.py``,
or why the task failed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core import PairResult, PipelineConfig, __version__
from core.regions import RegionsConfig, confidence

from ..errors import ServiceProblem
from ..problems import problem_body
from .config import Target
from .rle import mask_to_rle

__all__ = ["MAX_TASKS", "REQUEST_FAILURES", "LabelStudioTask", "PredictRequest", "SetupRequest",
           "failed_prediction", "model_version", "prediction"]

#: tasks in one /predict request (each is computed in turn)
MAX_TASKS = 100
_CONFIG_LIMIT = 1_000_000  # characters of label_config
#: statuses that fail the whole /predict request; any other problem fails only its task
REQUEST_FAILURES = (499, 503, 504)


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


def model_version(config: PipelineConfig) -> str:
    """Names the code and the pipeline: a new pipeline is a new model version."""
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True)
                            .encode()).hexdigest()[:8]
    return f"difference-finder-{__version__}-{digest}"


def prediction(result: PairResult, mask: np.ndarray | None, targets: list[Target],
               version: str, regions_config: RegionsConfig | None = None) -> dict[str, Any]:
    """One task's prediction: each region as a rectangle in percent of the image, strongest
    first, and the mask as one brush result. Each result's ``score`` is the region's
    :func:`core.regions.confidence` (0-1, from its significance for the default regions);
    the mask's and the prediction's ``score`` the highest of them (0 without a region)."""
    h, w = result.map.shape[-2:]
    regions = result.regions  # ranked by core, strongest first
    conf = [confidence(r, regions_config) for r in regions]
    best = float(max(conf, default=0.0))
    out: list[dict[str, Any]] = []
    for t in targets:
        base = {"from_name": t.from_name, "to_name": t.to_name, "type": t.type,
                "original_width": int(w), "original_height": int(h), "image_rotation": 0}
        if t.type == "rectanglelabels":
            out += [{**base, "id": f"diff{k + 1}", "score": float(conf[k]), "value": {
                "x": 100.0 * r.x / w, "y": 100.0 * r.y / h, "width": 100.0 * r.width / w,
                "height": 100.0 * r.height / h, "rotation": 0, "rectanglelabels": [t.label]}}
                for k, r in enumerate(regions)]
        elif mask is not None and mask.any():
            out.append({**base, "id": "diffmask", "score": best,
                        "value": {"format": "rle", "rle": mask_to_rle(mask),
                                  "brushlabels": [t.label]}})
    return {"model_version": version, "score": best, "result": out}


def failed_prediction(exc: ServiceProblem, task: LabelStudioTask, i: int, version: str
                      ) -> dict[str, Any]:
    """Task ``i``'s entry when it failed: no ``result`` (Label Studio then stores no
    prediction, so the task can be retried, and logs the entry: ``ML backend returns an
    incorrect prediction ... {'error': ...}``), the reason as ``error`` and the problem."""
    detail = exc.detail if exc.detail.startswith("tasks/") else f"tasks/{i}: {exc.detail}"
    error = f"task {task.id}: {detail}"
    problem = problem_body(exc.status, exc.code, error, title=exc.title,
                           **{"task": i, "task_id": task.id, **exc.extra})
    return {"model_version": version, "task": task.id, "error": error, "problem": problem}
