"""Typed exceptions: every failure a caller can cause or fix has its own class.

The HTTP service maps these to RFC 9457 problem responses, so each carries a
stable ``code`` (used as the problem ``type`` suffix) and an HTTP ``status``.

Our exception hierarchy (code, status):

* DifferenceFinderError ("error", 500)
  + InputError ("invalid-input", 422; also a ValueError)
  | + ImageDecodeError ("undecodable-image")
  | + ShapeMismatchError ("shape-mismatch")
  | + PairingError ("unpaired-files")
  | + MetricError ("metric-not-applicable")
  + ConfigError ("invalid-config", 422; also a ValueError)
  + WeightsMissingError ("weights-missing", 503; also a RuntimeError)
  + WeightsFetchError ("weights-fetch-failed", 502; also a RuntimeError)
  | + ChecksumError ("weights-checksum-mismatch")
  + DeviceError ("device-unavailable", 503; also a RuntimeError)
  + Cancelled ("cancelled", 503): the caller's ``cancel`` check said stop between steps
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "Cancelled",
    "ChecksumError",
    "ConfigError",
    "DeviceError",
    "DifferenceFinderError",
    "ImageDecodeError",
    "InputError",
    "MetricError",
    "PairingError",
    "ShapeMismatchError",
    "WeightsFetchError",
    "WeightsMissingError",
    "validation_message",
]


class DifferenceFinderError(Exception):
    """Base class of every error this library raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InputError(DifferenceFinderError, ValueError):
    """An input image or array cannot be used (shape, dtype, values, format)."""

    code = "invalid-input"
    status = 422


class ImageDecodeError(InputError):
    """A file or byte string is not a decodable image of a supported format."""

    code = "undecodable-image"


class ShapeMismatchError(InputError):
    """The two images differ in size and no size policy was asked for."""

    code = "shape-mismatch"


class PairingError(InputError):
    """Two directories do not hold the same set of image names."""

    code = "unpaired-files"


class ConfigError(DifferenceFinderError, ValueError):
    """A pipeline configuration is invalid (unknown name, bad parameter)."""

    code = "invalid-config"
    status = 422

    @classmethod
    def from_validation(cls, exc: Any) -> ConfigError:
        """Wrap a pydantic ValidationError; ``extra["errors"]`` keeps each JSON path."""
        errors = [{"loc": list(e["loc"]), "msg": validation_message(e), "type": e["type"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                           for e in errors)
        return cls(f"invalid pipeline: {detail}", errors=errors)


class MetricError(InputError):
    """A metric cannot be computed for these inputs (e.g. too small for MS-SSIM)."""

    code = "metric-not-applicable"


class WeightsMissingError(DifferenceFinderError, RuntimeError):
    """Pretrained backbone weights are not on disk; nothing is downloaded silently."""

    code = "weights-missing"
    status = 503


class WeightsFetchError(DifferenceFinderError, RuntimeError):
    """A weight file could not be downloaded (HTTP error, network failure, retries used up)."""

    code = "weights-fetch-failed"
    status = 502


class ChecksumError(WeightsFetchError):
    """A file's SHA-256 does not match the prefix in its name: it is corrupt or not the file."""

    code = "weights-checksum-mismatch"


class DeviceError(DifferenceFinderError, RuntimeError):
    """The requested compute device does not exist here."""

    code = "device-unavailable"
    status = 503


class Cancelled(DifferenceFinderError):
    """The caller's ``cancel()`` check returned True between two pipeline steps (its client
    left, its deadline passed): the work stopped there."""

    code = "cancelled"
    status = 503


def validation_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message without the "Value error, " that pydantic puts before the
    text of a ValueError raised in a validator (ours name what was wrong on their own)."""
    msg = str(error.get("msg", ""))
    if error.get("type") == "value_error" and msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    return msg
