"""The Label Studio ML backend: difference regions as pre-annotations for tasks holding a
reference and a candidate image. The routes are :mod:`service.routes.label_studio`; here
are the protocol's bodies, the label-config parsing, the brush RLE and the task URLs."""

from .config import DEFAULT_LABEL, Target, parse_label_config
from .protocol import MAX_TASKS, PredictRequest, SetupRequest, model_version, prediction
from .rle import encode_rle, mask_to_rle
from .urls import resolve_task_url

__all__ = [
    "DEFAULT_LABEL",
    "MAX_TASKS",
    "PredictRequest",
    "SetupRequest",
    "Target",
    "encode_rle",
    "mask_to_rle",
    "model_version",
    "parse_label_config",
    "prediction",
    "resolve_task_url",
]
