"""Prometheus metrics of one app instance (its own registry, so apps in tests don't mix)
and the pure-ASGI middleware that counts requests by route and status."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """All service metrics, registered in a private :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they only add noise to scrapes
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("df_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("df_http_request_duration_seconds",
                                 "HTTP request latency by route", ["method", "route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("df_queue_depth",
                                 "jobs decoded and waiting for a worker", registry=r)
        self.admitted = Gauge("df_requests_admitted",
                              "diff requests admitted (decoding, queued or computing)",
                              registry=r)
        self.queue_wait = Histogram("df_queue_wait_seconds",
                                    "time jobs wait in the queue before a worker starts them",
                                    buckets=_WAIT_BUCKETS, registry=r)
        self.loop_lag = Histogram("df_event_loop_lag_seconds",
                                  "how late the event loop wakes a task that slept 50 ms: "
                                  "what any request waits before it is even looked at",
                                  buckets=_WAIT_BUCKETS, registry=r)
        self.rejected = Counter("df_requests_rejected",
                                "diff requests refused or dropped, by reason "
                                "(queue_full, memory_full, wait_too_long, deadline, disconnected)",
                                ["reason"], registry=r)
        self.busy = Counter("df_worker_busy_seconds", "seconds each worker spent computing",
                            ["device", "worker"], registry=r)
        self.jobs = Counter("df_worker_jobs", "jobs run by each worker, by outcome",
                            ["device", "worker", "outcome"], registry=r)
        self.model_load = Gauge("df_model_load_seconds",
                                "seconds it took to build each resident model",
                                ["net", "device"], registry=r)
        self.memory_budget = Gauge("df_memory_budget_bytes", "working memory requests may "
                                   "reserve, per device", ["device"], registry=r)
        self.memory_reserved = Gauge("df_memory_reserved_bytes", "working memory reserved "
                                     "by admitted requests now, per device", ["device"],
                                     registry=r)
        self.ready = Gauge("df_ready", "1 once workers are up and preloaded models warm",
                           registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), else 'unmatched'."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP response (problems included) and times it, by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_of(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
