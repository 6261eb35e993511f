"""Difference Finder: show where two images differ.

>>> from core import Finder
>>> heatmap = Finder().run("a.png", "b.png")
"""

from .compare import compare
from .config import DEFAULT_PIPELINE, PipelineConfig
from .errors import (
    ChecksumError,
    ConfigError,
    DeviceError,
    DifferenceFinderError,
    ImageDecodeError,
    InputError,
    MetricError,
    PairingError,
    ShapeMismatchError,
    WeightsFetchError,
    WeightsMissingError,
)
from .finder import Finder
from .metrics import METRICS, MetricOutput
from .models import MODEL_CACHE
from .postprocess import POST_PROCESSORS
from .preprocess import PRE_PROCESSORS
from .regions import RegionsConfig, find_regions
from .results import CandidateResult, Comparison, Improvement, PairResult, Region
from .strategies import STRATEGIES

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PIPELINE",
    "METRICS",
    "MODEL_CACHE",
    "POST_PROCESSORS",
    "PRE_PROCESSORS",
    "STRATEGIES",
    "CandidateResult",
    "ChecksumError",
    "Comparison",
    "ConfigError",
    "DeviceError",
    "DifferenceFinderError",
    "Finder",
    "ImageDecodeError",
    "Improvement",
    "InputError",
    "MetricError",
    "MetricOutput",
    "PairResult",
    "PairingError",
    "PipelineConfig",
    "Region",
    "RegionsConfig",
    "ShapeMismatchError",
    "WeightsFetchError",
    "WeightsMissingError",
    "__version__",
    "compare",
    "find_regions",
]
