"""Difference Finder: show where two images differ.

>>> from core import Finder
>>> heatmap = Finder().run("a.png", "b.png")

Names load on first use (PEP 562), so ``import core.weights`` or the CLI's ``--help``
never pays for torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "compare": "compare",
    "DEFAULT_PIPELINE": "config",
    "PipelineConfig": "config",
    "ChecksumError": "errors",
    "ConfigError": "errors",
    "DeviceError": "errors",
    "DifferenceFinderError": "errors",
    "ImageDecodeError": "errors",
    "InputError": "errors",
    "MetricError": "errors",
    "PairingError": "errors",
    "ShapeMismatchError": "errors",
    "WeightsFetchError": "errors",
    "WeightsMissingError": "errors",
    "Finder": "finder",
    "METRICS": "metrics",
    "MetricOutput": "metrics",
    "MODEL_CACHE": "models",
    "POST_PROCESSORS": "postprocess",
    "PRE_PROCESSORS": "preprocess",
    "RegionsConfig": "regions",
    "find_regions": "regions",
    "CandidateResult": "results",
    "Comparison": "results",
    "Improvement": "results",
    "PairResult": "results",
    "Region": "results",
    "STRATEGIES": "strategies",
}

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


def __getattr__(name: str) -> Any:
    """Import the submodule holding ``name`` when it is first asked for."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``core.compare`` stays the function when the submodule of that name is imported
    (the import system would set the attribute to the module, as it did not when this
    package imported everything eagerly)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "compare" and isinstance(value, types.ModuleType):
            value = value.compare
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
