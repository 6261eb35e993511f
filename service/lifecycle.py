"""The one path of a computing request: admitted (or 503 at once: queue full, or its
predictable wait past its deadline), prepared (body parsed, each image's working memory
reserved from its header, then decoded) within its deadline, computed on the worker pool
while the client is watched (abandoned work stops at its next step), encoded off the
event loop, answered with Server-Timing; its memory is released once it is encoded.

Routes describe their work as a :class:`Work` and call :func:`respond`; a route that
computes several steps under one admission (Label Studio's tasks) uses :class:`Exchange`,
each step with a memory reservation of its own (:meth:`Exchange.step`), released when
the step is done, so a batch holds one step's memory at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from starlette.requests import Request
from starlette.responses import Response

from .budget import Reservation
from .encoding import JSON, negotiate
from .errors import ClientDisconnected, DeadlineExceeded
from .forms import require_media
from .gate import taken_place
from .state import ServiceState

__all__ = ["Exchange", "Work", "respond", "server_timing"]

P = TypeVar("P")
R = TypeVar("R")


def server_timing(timing_ms: Mapping[str, float]) -> str:
    """The ``Server-Timing`` header value: ``stage;dur=ms`` for each stage."""
    return ", ".join(f"{k};dur={v:.1f}" for k, v in timing_ms.items())


async def wait_disconnect(request: Request) -> None:
    """Returns when the client has gone away (the body is read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Exchange:
    """One request's place in the service, and the steps it takes there."""

    def __init__(self, request: Request, state: ServiceState) -> None:
        self.request = request
        self.state = state
        self.arrived = time.perf_counter()
        self.deadline = self.new_deadline()
        self.reservation = Reservation(state.budget)

    def new_deadline(self) -> float:
        """``time.monotonic()`` value a step started now must be done by."""
        return time.monotonic() + self.state.settings.request_timeout

    def admit(self) -> ExitStack:
        """A place in the pool (503 at once when there is none, or when the wait would
        outlast the deadline), held with this request's memory until the block ends."""
        stack = ExitStack()
        place = taken_place(self.request.scope)  # at the door (service.gate), else here
        stack.enter_context(place if place is not None
                            else self.state.pool.admit(self.state.settings.request_timeout))
        self.reservation.retry_after = self.state.pool.retry_after()
        stack.callback(self.reservation.release)
        return stack

    @contextmanager
    def step(self) -> Iterator[Reservation]:
        """A memory reservation of its own for one step of the request (a Label Studio
        task): give it to :meth:`prepare` and :meth:`compute`; released when the block
        ends."""
        reservation = Reservation(self.state.budget, self.reservation.retry_after)
        try:
            yield reservation
        finally:
            reservation.release()

    async def offload(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on the I/O thread pool (parsing, encoding: never on the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.state.executor, fn, *args)

    async def prepare(self, work: Awaitable[P], deadline: float | None = None,
                      reservation: Reservation | None = None) -> P:
        """Await ``work`` (reading and decoding, its images reserved in ``reservation``, by
        default the request's) within the deadline; 504 past it."""
        deadline = self.deadline if deadline is None else deadline
        reservation = self.reservation if reservation is None else reservation
        token = reservation.enter()  # the task wait_for makes copies this context
        try:
            return await asyncio.wait_for(work, max(0.0, deadline - time.monotonic()))
        except (TimeoutError, asyncio.TimeoutError):
            self.state.metrics.rejected.labels("deadline").inc()
            raise DeadlineExceeded(self.state.settings.request_timeout) from None
        finally:
            Reservation.leave(token)

    async def ensure_connected(self) -> None:
        """499 when the client is gone already: queue nothing for it."""
        if await self.request.is_disconnected():
            self.state.metrics.rejected.labels("disconnected").inc()
            raise ClientDisconnected()

    async def compute(self, fn: Callable[[torch.device], R], deadline: float | None = None,
                      reservation: Reservation | None = None) -> tuple[R, float]:
        """``fn(device)`` on a worker, dropped if the client leaves or the deadline passes;
        returns the result and the milliseconds the worker spent on it. A CUDA worker's
        budget is charged what ``reservation`` (by default the request's) holds."""
        reservation = self.reservation if reservation is None else reservation
        def timed(device: torch.device) -> tuple[R, float]:
            start = time.perf_counter()
            result = fn(device)
            return result, (time.perf_counter() - start) * 1e3

        await self.ensure_connected()
        return await self.state.pool.run(
            timed, deadline=self.deadline if deadline is None else deadline,
            disconnected=lambda: wait_disconnect(self.request),
            memory=reservation.nbytes)


@dataclass
class Work(Generic[P, R]):
    """What a computing route does: ``prepare`` the inputs, ``compute`` on a device,
    ``encode`` the answer as the negotiated media type (filling ``timing`` with
    ``encode`` and ``total``; ``arrived`` is the request's ``perf_counter()``)."""

    prepare: Callable[[], Awaitable[P]]
    compute: Callable[[P, torch.device], R]
    encode: Callable[[str, P, R, dict[str, float], float], bytes]
    #: the stages of the worker's time, from the result and its milliseconds
    stages: Callable[[R, float], Mapping[str, float]] = lambda _, ms: {"compute": ms}
    offered: tuple[str, ...] | None = None  # answer types; None: JSON, Accept ignored
    accepted: tuple[str, ...] = (JSON,)  # request body types
    unsupported_detail: str | None = None  # the 415's detail, if not the generic one
    server_timing: bool = True
    headers: Callable[[str], dict[str, str]] = field(default=lambda _: {})


async def respond(request: Request, state: ServiceState, work: Work[P, R]) -> Response:
    """Run ``work`` through the service's one request lifecycle."""
    exchange = Exchange(request, state)
    media = negotiate(request.headers.get("accept"), work.offered) if work.offered else JSON
    require_media(request, work.accepted, work.unsupported_detail)
    with exchange.admit():
        prepared = await exchange.prepare(work.prepare())
        decoded = time.perf_counter()
        result, worker_ms = await exchange.compute(lambda d: work.compute(prepared, d))
        stages = work.stages(result, worker_ms)
        timing = {"decode": (decoded - exchange.arrived) * 1e3,
                  "queue": max(0.0, (time.perf_counter() - decoded) * 1e3
                               - sum(stages.values())),
                  **stages}
        body = await exchange.offload(work.encode, media, prepared, result, timing,
                                      exchange.arrived)
    headers = {"Server-Timing": server_timing(timing)} if work.server_timing else {}
    headers.update(work.headers(media))
    return Response(body, media_type=media, headers=headers)
