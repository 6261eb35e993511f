"""File-format names the CLI offers without loading the imaging stack (no torch here)."""

from __future__ import annotations

__all__ = ["FIGURE_FORMATS"]

#: the formats :func:`core.figure.figure_bytes` writes
FIGURE_FORMATS = ("png", "svg", "pdf")
