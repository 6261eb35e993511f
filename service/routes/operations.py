"""Operations: ``/healthz`` (alive), ``/readyz`` (workers up, models warm), ``/metrics``
(Prometheus) and ``/v1/capabilities`` (what this server can do)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from core import (
    METRICS,
    MODEL_CACHE,
    POST_PROCESSORS,
    PRE_PROCESSORS,
    STRATEGIES,
    PipelineConfig,
    __version__,
)
from core.images import SUPPORTED_FORMATS
from core.render import COLORMAPS, DIVERGING
from core.weights import weights_status

from .. import apidocs
from ..deps import StateDep
from ..encoding import MEDIA_TYPES
from ..errors import NotReady
from ..prometheus import CONTENT_TYPE_LATEST
from ..state import ServiceState

__all__ = ["describe", "memory", "router"]

router = APIRouter()


def describe(state: ServiceState) -> dict[str, Any]:
    """Processors, strategies, metrics, colormaps, weights, devices and limits."""
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
        "memory": memory(state),
        "default_config": PipelineConfig().model_dump(mode="json"),
    }


def memory(state: ServiceState) -> list[dict[str, Any]]:
    """Each memory budget (host, then CUDA devices): its size and what is reserved now."""
    return [state.budget.snapshot(), *(b.snapshot() for b in state.pool.device_budgets.values())]


@router.get("/v1/capabilities", tags=["info"], summary="What this server can do",
            responses=apidocs.CAPABILITIES_RESPONSES)
@router.head("/v1/capabilities", include_in_schema=False)
async def capabilities(state: StateDep) -> JSONResponse:
    return JSONResponse(describe(state))


@router.get("/healthz", tags=["ops"], summary="The process is alive",
            responses=apidocs.HEALTH_RESPONSES)
@router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD too
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", tags=["ops"], summary="Workers up and preloaded models warm",
            responses=apidocs.READY_RESPONSES)
@router.head("/readyz", include_in_schema=False)
async def readyz(state: StateDep) -> Response:
    detail = {"workers": state.pool.snapshot(), "memory": memory(state),
              **state.warmup.snapshot()}
    if state.pool.ready and not state.draining:
        return JSONResponse({"status": "ready", **detail})
    raise NotReady("shutting down" if state.pool.closing or state.draining
                   else "workers are starting and warming up", **detail)


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics",
            responses=apidocs.METRICS_RESPONSES)
@router.head("/metrics", include_in_schema=False)
async def prometheus(state: StateDep) -> Response:
    for (net, device), seconds in list(MODEL_CACHE.load_seconds.items()):
        state.metrics.model_load.labels(net, device).set(seconds)
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
