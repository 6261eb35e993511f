"""``difference_finder.finder``: the seed's module path for :class:`core.Finder`."""

from core.finder import Finder, PairResult

__all__ = ["Finder", "PairResult"]
