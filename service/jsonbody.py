"""JSON bodies that carry large binary fields (float maps) as base64, built without one
long hold of the GIL: a 4-MP map is 22 MB of base64, and ``json.dumps`` scanning that string
(plus one ``b64encode`` call over 16 MB) held the GIL for tens of milliseconds on an encode
thread, stalling the event loop's health checks and refusals (py-spy ``--gil`` under
benchmarks/load.py's big scenario). Here the base64 is made in ~1 ms pieces and spliced
into the serialised JSON, never scanned for escaping.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

__all__ = ["Base64", "dumps"]

_PIECE = 3 << 18  # bytes per base64 call (a multiple of 3, so pieces concatenate): ~1 ms
_MARK = "\x1fdf-base64\x1f"  # stands in for a Base64 in the first pass


class Base64:
    """Bytes (an array's buffer, not copied) that :func:`dumps` writes as a base64 string."""

    def __init__(self, data: bytes | np.ndarray) -> None:
        arr = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data
        self.view = memoryview(arr).cast("B")

    def pieces(self) -> list[bytes]:
        """The base64 text in pieces, each from one short C call."""
        v = self.view
        return [base64.b64encode(v[i:i + _PIECE]) for i in range(0, len(v), _PIECE)]

    def text(self) -> str:
        return b"".join(self.pieces()).decode("ascii")


def dumps(body: Any) -> bytes:
    """``body`` as compact JSON bytes (no NaN or infinity), each :class:`Base64` in it
    written as a string."""
    blobs: list[Base64] = []

    def placeholder(obj: Any) -> str:
        if isinstance(obj, Base64):
            blobs.append(obj)
            return _MARK
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    text = json.dumps(body, allow_nan=False, separators=(",", ":"), default=placeholder)
    mark = json.dumps(_MARK).encode()  # as the first pass wrote it, quotes included
    parts = text.encode().split(mark)
    if len(parts) != len(blobs) + 1:  # the mark also occurs in some other string
        return json.dumps(body, allow_nan=False, separators=(",", ":"),
                          default=lambda o: o.text() if isinstance(o, Base64) else
                          placeholder(o)).encode()
    out: list[bytes] = [parts[0]]
    for blob, rest in zip(blobs, parts[1:], strict=True):
        out += [b'"', *blob.pieces(), b'"', rest]
    return b"".join(out)
