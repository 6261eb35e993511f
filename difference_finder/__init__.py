"""The seed's import name (difference-finder 0.0.4) kept working: a thin alias over
:mod:`core`, so ``from difference_finder.finder import Finder`` runs unchanged.
New code imports :mod:`core`."""

from core import *  # noqa: F403
from core import __all__, __version__  # noqa: F401
