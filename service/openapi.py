"""The OpenAPI document: both request forms of ``POST /v1/diff`` and ``/v1/compare``
(multipart and JSON), every response type with examples, and problem+json errors.

``python -m service.openapi`` prints it; ``make openapi`` writes openapi/openapi.json.
"""

from __future__ import annotations

import json
import sys

from .app import create_app
from .settings import Settings

__all__ = ["main", "render"]


def render() -> str:
    """The spec as committed: indented JSON with a final newline."""
    app = create_app(Settings(devices=["cpu"], preload=[]))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
