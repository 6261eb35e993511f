"""The FastAPI application: ``create_app(settings)`` assembles the service's state, its
routers, middleware and exception handlers. No image maths here, and no route logic:
the routes are :mod:`service.routes`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from core import __version__

from . import apidocs
from .drain import DrainMiddleware
from .gate import AdmissionGate
from .looplag import watch_loop_lag
from .middleware import ApiKeyMiddleware, BodyLimitMiddleware
from .problems import install_handlers
from .prometheus import MetricsMiddleware
from .routes import compare, cvat, diff, label_studio, operations, page
from .settings import Settings
from .state import ServiceState

__all__ = ["COMPUTING_PATHS", "ServiceState", "create_app"]

#: always open, even when API keys are set
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs",
                         "/docs/oauth2-redirect", "/redoc", "/label-studio/webhook",
                         *page.PAGE_PATHS})
#: the routes that compute (every one goes through service.lifecycle): admitted at the door
COMPUTING_PATHS = frozenset({"/v1/diff", "/v1/compare", "/label-studio/predict",
                             "/cvat/detect"})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; workers start (and warm up) in the lifespan."""
    settings = settings or Settings()
    state = ServiceState.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        gc.collect()  # then the loaded modules and models leave the collector's full passes:
        gc.freeze()  # a full pass over them stalled the loop ~100 ms (benchmarks/load.py storm)
        lag = asyncio.create_task(watch_loop_lag(state.metrics.loop_lag))
        try:
            yield
        finally:
            lag.cancel()
            await state.aclose()

    app = FastAPI(title="Difference Finder", version=__version__, lifespan=lifespan,
                  description=apidocs.DESCRIPTION)
    app.state.df = state
    install_handlers(app)
    for module in (diff, operations, compare, page, label_studio, cvat):
        app.include_router(module.router)
    app.mount("/static", page.PageFiles(), name="static")
    _add_middleware(app, state)
    apidocs.install(app)
    return app


def _add_middleware(app: FastAPI, state: ServiceState) -> None:
    """Innermost first: admission, body cap, API keys, CORS, metrics, body drain
    (outermost)."""
    s = state.settings
    app.add_middleware(AdmissionGate, pool=state.pool, deadline_s=s.request_timeout,
                       paths=COMPUTING_PATHS)
    app.add_middleware(BodyLimitMiddleware, limit=s.body_limit)
    open_paths = set(_OPEN_PATHS) if s.metrics_auth else {*_OPEN_PATHS, "/metrics"}
    app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in s.api_keys],
                       open_paths=open_paths)
    if s.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=s.cors_origins,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["Retry-After", "Server-Timing"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(DrainMiddleware, max_bytes=s.drain_bytes, seconds=s.drain_seconds)
