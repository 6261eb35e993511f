"""Difference Finder: show where two images differ.

>>> from core import Finder
>>> heatmap = Finder().run("a.png", "b.png")
"""

from .compare import CandidateResult, Comparison, Improvement, compare
from .config import DEFAULT_PIPELINE, PipelineConfig
from .errors import (
    ConfigError,
    DeviceError,
    DifferenceFinderError,
    ImageDecodeError,
    InputError,
    MetricError,
    PairingError,
    ShapeMismatchError,
    WeightsMissingError,
)
from .finder import Finder, PairResult
from .metrics import METRICS, MetricOutput
from .models import MODEL_CACHE
from .postprocess import POST_PROCESSORS
from .preprocess import PRE_PROCESSORS
from .regions import Region, RegionsConfig, find_regions
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
    "WeightsMissingError",
    "__version__",
    "compare",
    "find_regions",
]
