"""The ``difference-finder`` command line: ``diff``, ``compare``, ``weights``, ``serve``
and ``diff --server URL`` (remote mode). It may import :mod:`core` and :mod:`service`;
nothing imports it. Every pipeline option maps onto :class:`core.PipelineConfig`.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
