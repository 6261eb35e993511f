"""Run the service with uvicorn, programmatically: ``serve(host, port)``.

One process holds the models and one worker thread per device (so no uvicorn
``--workers``). On SIGTERM/SIGINT uvicorn stops accepting connections, lets
in-flight requests finish for up to ``DF_SHUTDOWN_TIMEOUT`` seconds, then the app's
lifespan stops the worker threads.
"""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import Settings

__all__ = ["serve"]


def serve(host: str = "127.0.0.1", port: int = 8000, *, settings: Settings | None = None
          ) -> None:
    """Serve the API on ``host:port`` until SIGTERM/SIGINT (blocks)."""
    settings = settings or Settings()
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout,
        log_level=settings.log_level.lower(), access_log=settings.access_log,
        server_header=False,
    )
    uvicorn.Server(config).run()
