"""The Label Studio ML backend: difference regions as pre-annotations for tasks holding a
reference and a candidate image. The routes are :mod:`service.routes.label_studio`; here
are the protocol's bodies, the label-config parsing, the brush RLE, the task URLs, Label
Studio's tokens and the fetching of its files."""

from .auth import LabelStudioAuth, jwt_claims
from .config import DEFAULT_LABEL, Target, parse_label_config
from .files import LabelStudioFiles
from .protocol import (
    MAX_TASKS,
    PredictRequest,
    SetupRequest,
    failed_prediction,
    model_version,
    prediction,
)
from .rle import encode_rle, mask_to_rle
from .urls import presign_url, resolve_task_url, task_url

__all__ = [
    "DEFAULT_LABEL",
    "MAX_TASKS",
    "LabelStudioAuth",
    "LabelStudioFiles",
    "PredictRequest",
    "SetupRequest",
    "Target",
    "encode_rle",
    "failed_prediction",
    "jwt_claims",
    "mask_to_rle",
    "model_version",
    "parse_label_config",
    "prediction",
    "presign_url",
    "resolve_task_url",
    "task_url",
]
