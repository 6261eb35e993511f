"""``python -m cli`` runs the ``difference-finder`` command."""

import sys

from .main import main

sys.exit(main())
