"""Run the service with uvicorn, programmatically: ``serve(host, port)``.

One process holds the models and one worker thread per device (so no uvicorn
``--workers``). On SIGTERM/SIGINT ``/readyz`` turns 503 at once; the server goes on
accepting and serving for ``DF_SHUTDOWN_DELAY`` seconds (0 by default), so a load balancer
polling ``/readyz`` stops routing here first; then uvicorn stops accepting connections,
lets in-flight requests finish for up to ``DF_SHUTDOWN_TIMEOUT`` seconds, and the app's
lifespan stops the worker threads. A second signal during the delay shuts down at once.
"""

from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn

from .app import create_app
from .settings import Settings
from .state import ServiceState

__all__ = ["DrainingServer", "serve"]

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the service of SIGTERM before it stops accepting."""

    def __init__(self, config: uvicorn.Config, state: ServiceState, delay: float) -> None:
        super().__init__(config)
        self.state = state
        self.delay = delay
        self.exit_at: float | None = None  # when the delay after the first signal ends
        self.signal: int | None = None  # that signal, handed to uvicorn then

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.drain()
        if self.delay > 0 and self.exit_at is None and not self.should_exit:
            self.exit_at = time.monotonic() + self.delay
            self.signal = sig
            log.info("signal %d: /readyz answers 503; shutting down in %g s", sig,
                     self.delay)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.signal is not None and time.monotonic() >= (self.exit_at or 0.0):
            signal, self.signal = self.signal, None
            super().handle_exit(signal, None)  # uvicorn's shutdown (it re-raises the signal)
        return await super().on_tick(counter)


def serve(host: str = "127.0.0.1", port: int = 8000, *, settings: Settings | None = None
          ) -> None:
    """Serve the API on ``host:port`` until SIGTERM/SIGINT (blocks)."""
    settings = settings or Settings()
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout,
        log_level=settings.log_level.lower(), access_log=settings.access_log,
        server_header=False,
    )
    DrainingServer(config, app.state.df, settings.shutdown_delay).run()
