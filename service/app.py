"""The FastAPI application: ``create_app(settings)`` wires settings, the worker pool,
image loading, encoding, metrics, problems and middleware together. No image maths
here: requests are validated, queued to core, and encoded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from core import (
    METRICS,
    MODEL_CACHE,
    POST_PROCESSORS,
    PRE_PROCESSORS,
    STRATEGIES,
    Finder,
    PairResult,
    PipelineConfig,
    __version__,
)
from core.images import SUPPORTED_FORMATS, Limits
from core.render import COLORMAPS, DIVERGING
from core.weights import weights_status

from . import openapi as api_docs
from .compare import PAGE_PATHS
from .compare import router as compare_router
from .cvat import router as cvat_router
from .encoding import MEDIA_TYPES, encode, negotiate
from .fetch import Fetcher, UrlPolicy
from .images import ImageLoader, too_large
from .label_studio import router as label_studio_router
from .metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from .middleware import ApiKeyMiddleware, BodyLimitMiddleware
from .problems import (
    ServiceError,
    install_handlers,
    parse_json_model,
    problem_response,
    validation_error,
)
from .problems import validation_problem as _validation_problem
from .schemas import DiffRequest
from .settings import Settings
from .warmup import Warmup
from .workers import ClientDisconnected, DeadlineExceeded, WorkerPool, resolve_devices

__all__ = ["ServiceState", "create_app"]

log = logging.getLogger("service")

_CONFIG_PART_LIMIT = 1024 * 1024  # the multipart ``config`` field


@dataclass
class ServiceState:
    """What the routes share; lives on ``app.state.df``."""

    settings: Settings
    metrics: Metrics
    pool: WorkerPool
    warmup: Warmup
    executor: ThreadPoolExecutor
    fetcher: Fetcher
    loader: ImageLoader


def _config_from_json(text: str | bytes) -> PipelineConfig:
    try:
        raw = json.loads(text) if text.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _validation_problem([{"pointer": "#/config", "loc": ["config"],
                                    "message": f"not valid JSON ({exc})",
                                    "type": "json_invalid"}]) from None
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, ("config",)) from None


def _compute(config: PipelineConfig, ref: np.ndarray, cand: np.ndarray,
             device: torch.device) -> PairResult:
    """Runs in a worker thread on its device."""
    return Finder.from_config(config, device).analyze(ref, cand)[0]


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (the body is read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_multipart(request: Request, state: ServiceState
                          ) -> tuple[PipelineConfig, dict[str, bytes]]:
    """Files ``reference`` and ``candidate`` (sizes checked), optional ``config`` JSON."""
    async with request.form(max_files=4, max_fields=4,
                            max_part_size=_CONFIG_PART_LIMIT) as form:
        allowed = {"reference", "candidate", "config"}
        errors = [{"pointer": f"#/{k}", "loc": [k], "type": "extra_forbidden",
                   "message": "unexpected field; expected reference, candidate, config"}
                  for k in form if k not in allowed]
        errors += [{"pointer": f"#/{k}", "loc": [k], "type": "too_many",
                    "message": "given more than once"}
                   for k in allowed if len(form.getlist(k)) > 1]
        for k in ("reference", "candidate"):
            value = form.get(k)
            if value is None:
                errors.append({"pointer": f"#/{k}", "loc": [k], "type": "missing",
                               "message": "a file part is required"})
            elif not isinstance(value, UploadFile):
                errors.append({"pointer": f"#/{k}", "loc": [k], "type": "file_expected",
                               "message": "must be a file part (with a filename), not a "
                               "text field"})
        if errors:
            raise _validation_problem(errors)
        raw_config = form.get("config")
        if isinstance(raw_config, UploadFile):
            if (raw_config.size or 0) > _CONFIG_PART_LIMIT:
                raise too_large("config", raw_config.size or 0, _CONFIG_PART_LIMIT)
            raw_config = await raw_config.read()
        config = _config_from_json(raw_config or "")
        files: dict[str, bytes] = {}
        for k in ("reference", "candidate"):
            upload = form[k]
            assert isinstance(upload, UploadFile)
            if upload.size is not None:
                state.loader.check_size(upload.size, k)
            files[k] = await upload.read()
    return config, files


async def _prepare(request: Request, state: ServiceState
                   ) -> tuple[PipelineConfig, np.ndarray, np.ndarray]:
    """Parse the body (either form) and decode both images off the event loop."""
    kind = _media_type(request)
    loader = state.loader
    if kind == "multipart/form-data":
        config, files = await _read_multipart(request, state)
        ref, cand = await asyncio.gather(loader.decode(files["reference"], "reference"),
                                         loader.decode(files["candidate"], "candidate"))
        return config, ref, cand
    body = await request.body()
    loop = asyncio.get_running_loop()
    req = await loop.run_in_executor(state.executor, parse_json_model, body, DiffRequest)
    ref, cand = await asyncio.gather(loader.load(req.reference, "reference"),
                                     loader.load(req.candidate, "candidate"))
    return req.config, ref, cand


def _check_content_type(request: Request) -> None:
    kind = _media_type(request)
    if kind not in ("multipart/form-data", "application/json"):
        raise ServiceError(415, "unsupported-media-type",
                           f"Content-Type {kind or '(none)'!r} is not accepted; send "
                           "multipart/form-data or application/json",
                           accepted=["multipart/form-data", "application/json"])


def _server_timing(timing_ms: dict[str, float]) -> str:
    return ", ".join(f"{k};dur={v:.1f}" for k, v in timing_ms.items())


def _capabilities(state: ServiceState) -> dict[str, Any]:
    s = state.settings
    return {
        "version": __version__,
        "pre_processors": PRE_PROCESSORS.describe(),
        "strategies": STRATEGIES.describe(),
        "metrics": METRICS.describe(),
        "post_processors": POST_PROCESSORS.describe(),
        "colormaps": {"sequential": list(COLORMAPS), "diverging": list(DIVERGING)},
        "lpips_weights": weights_status(),
        "response_types": list(MEDIA_TYPES),
        "image_formats": list(SUPPORTED_FORMATS),
        "devices": [str(w.device) for w in state.pool.workers],
        "limits": {"max_upload_bytes": s.max_upload_bytes, "max_body_bytes": s.body_limit,
                   "max_pixels": s.max_pixels, "max_side": s.max_side,
                   "request_timeout_s": s.request_timeout},
        "default_config": PipelineConfig().model_dump(mode="json"),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; workers start (and warm up) in the lifespan."""
    settings = settings or Settings()
    devices = resolve_devices(settings.devices, settings.cpu_worker_count)
    metrics = Metrics()
    warmup = Warmup(settings.preload, settings.warmup_size, metrics)
    cpu_workers = sum(d.type == "cpu" for d in devices)
    pool = WorkerPool(devices, settings.queue_size, metrics=metrics,
                      request_timeout=settings.request_timeout,
                      cpu_threads=settings.cpu_threads(cpu_workers), warmup=warmup)
    executor = ThreadPoolExecutor(settings.io_pool_size, thread_name_prefix="df-io")
    fetcher = Fetcher(UrlPolicy(allow_private=settings.allow_private_urls,
                                allowlist=tuple(settings.url_allowlist)),
                      max_bytes=settings.max_upload_bytes, timeout=settings.url_timeout,
                      connect_timeout=settings.url_connect_timeout,
                      max_redirects=settings.url_max_redirects)
    loader = ImageLoader(max_bytes=settings.max_upload_bytes,
                         limits=Limits(max_pixels=settings.max_pixels,
                                       max_side=settings.max_side),
                         executor=executor, fetcher=fetcher)
    state = ServiceState(settings, metrics, pool, warmup, executor, fetcher, loader)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, pool.shutdown, settings.shutdown_timeout)
            await fetcher.aclose()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Difference Finder", version=__version__, lifespan=lifespan,
                  description=api_docs.DESCRIPTION)
    app.state.df = state
    install_handlers(app)

    @app.post("/v1/diff", tags=["diff"], summary="Compare two images",
              responses=api_docs.DIFF_RESPONSES, openapi_extra=api_docs.DIFF_REQUEST)
    async def diff(request: Request) -> Response:
        arrived, deadline = time.perf_counter(), time.monotonic() + settings.request_timeout
        media = negotiate(request.headers.get("accept"))
        _check_content_type(request)
        with pool.admit():
            try:
                config, ref, cand = await asyncio.wait_for(
                    _prepare(request, state), max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.TimeoutError):
                metrics.rejected.labels("deadline").inc()
                raise DeadlineExceeded(settings.request_timeout) from None
            decoded = time.perf_counter()
            if await request.is_disconnected():  # gone while we decoded: queue nothing
                metrics.rejected.labels("disconnected").inc()
                raise ClientDisconnected()
            result = await pool.run(lambda device: _compute(config, ref, cand, device),
                                    deadline=deadline,
                                    disconnected=lambda: _wait_disconnect(request))
            computed = time.perf_counter()
            timing = {"decode": (decoded - arrived) * 1e3,
                      "queue": max(0.0, (computed - decoded) * 1e3
                                   - sum(result.timing_ms.values())),
                      **result.timing_ms}
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(
                executor, encode, media, result, config, timing, arrived)
        return Response(body, media_type=media,
                        headers={"Server-Timing": _server_timing(timing)})

    @app.get("/v1/capabilities", tags=["info"], summary="What this server can do",
             responses=api_docs.CAPABILITIES_RESPONSES)
    async def capabilities() -> JSONResponse:
        return JSONResponse(_capabilities(state))

    @app.get("/healthz", tags=["ops"], summary="The process is alive",
             responses=api_docs.HEALTH_RESPONSES)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["ops"], summary="Workers up and preloaded models warm",
             responses=api_docs.READY_RESPONSES)
    async def readyz() -> Response:
        detail = {"workers": pool.snapshot(), **warmup.snapshot()}
        if pool.ready:
            return JSONResponse({"status": "ready", **detail})
        reason = "shutting down" if pool.closing else "workers are starting and warming up"
        return problem_response(503, "not-ready", f"not ready: {reason}", title="Not ready",
                                headers={"Retry-After": "1"}, **detail)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics",
             responses=api_docs.METRICS_RESPONSES)
    async def prometheus() -> Response:
        for (net, device), seconds in list(MODEL_CACHE.load_seconds.items()):
            metrics.model_load.labels(net, device).set(seconds)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(compare_router)  # POST /v1/compare and the web page at /
    app.include_router(label_studio_router)  # the Label Studio ML backend
    app.include_router(cvat_router)  # POST /cvat/detect

    # Middleware, innermost first: body cap, API keys, CORS, metrics (outermost).
    app.add_middleware(BodyLimitMiddleware, limit=settings.body_limit)
    open_paths = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                  "/redoc", *PAGE_PATHS}
    if not settings.metrics_auth:
        open_paths.add("/metrics")
    app.add_middleware(ApiKeyMiddleware, keys=[k.get_secret_value() for k in settings.api_keys],
                       open_paths=open_paths)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["Retry-After", "Server-Timing"], max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    api_docs.install(app)
    return app

