"""Admission at the door: a computing request takes its place in the worker pool before
routing, so a refusal (503 with Retry-After: queue full, or the wait would outlast the
deadline) costs the event loop a few dozen microseconds, not a pass through FastAPI's
routing and dependency resolution (~3/4 of a refusal's loop time, measured with py-spy under
benchmarks/load.py's storm). The place travels in the ASGI scope to :mod:`service.lifecycle`,
which holds it exactly as before; paths not gated here are admitted there.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ServiceProblem
from .problems import render
from .workers import Admission, WorkerPool

__all__ = ["ADMISSION_KEY", "AdmissionGate", "taken_place"]

#: where the place taken at the door waits in ``scope["state"]``
ADMISSION_KEY = "df_admission"


class AdmissionGate:
    """Pure-ASGI middleware (inside the API-key and body-size checks): admit POSTs to the
    computing ``paths`` or answer their 503 at once; the place is released when the
    response is done, if the route has not released it already."""

    def __init__(self, app: ASGIApp, pool: WorkerPool, deadline_s: float,
                 paths: Iterable[str]) -> None:
        self.app = app
        self.pool = pool
        self.deadline_s = deadline_s
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] not in self.paths):
            await self.app(scope, receive, send)
            return
        try:
            place = self.pool.admit(self.deadline_s)
        except ServiceProblem as exc:  # queue full, wait too long, closing
            await render(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[ADMISSION_KEY] = place
        try:
            await self.app(scope, receive, send)
        finally:
            place.release()  # a no-op when the route released it


def taken_place(scope: Scope) -> Admission | None:
    """The place the gate took for this request (once: later calls get None)."""
    state = scope.get("state")
    return state.pop(ADMISSION_KEY, None) if isinstance(state, dict) else None
