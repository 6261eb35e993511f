"""Readable refusals: a response sent while the request body is still unread (an early 503,
413 or 401) first reads and discards the rest of the body, bounded in bytes and seconds, as
a web server's lingering close does; otherwise clients that are still sending (urllib,
requests, httpx) see a broken pipe instead of the answer and its Retry-After.

``Expect: 100-continue`` with nothing read yet: the client has sent no body, so nothing is
drained and the answer says ``Connection: close``. A body above the bound is not drained
to its end: the answer says ``Connection: close`` and the connection closes after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DrainMiddleware"]


class DrainMiddleware:
    """Outermost pure-ASGI middleware: drain an unread body before an early response."""

    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float = 10.0,
                 idle_seconds: float = 2.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds  # in all
        self.idle_seconds = idle_seconds  # between two reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "").strip()
        has_body = (declared.isdigit() and int(declared) > 0) or "chunked" in headers.get(
            "transfer-encoding", "").lower()
        expects_continue = headers.get("expect", "").lower() == "100-continue"
        done = not has_body
        started = False  # the app asked for the body: uvicorn has sent 100 Continue

        async def tracked_receive() -> Message:
            nonlocal done, started
            started = True
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                if expects_continue and not started:
                    message = _closing(message)  # the client has not sent it: don't ask
                elif not await self._drain(tracked_receive, lambda: done):
                    message = _closing(message)
            await send(message)

        await self.app(scope, tracked_receive, draining_send)

    async def _drain(self, receive: Receive, finished: Callable[[], bool]) -> bool:
        """Read and discard the body; True if it ended within the bounds (bytes, seconds in
        all, seconds between two reads, as nginx's lingering_time/lingering_timeout)."""
        seen = 0
        end = time.monotonic() + self.seconds
        try:
            while not finished():
                if seen > self.max_bytes:
                    return False
                left = min(self.idle_seconds, end - time.monotonic())
                message = await asyncio.wait_for(receive(), max(0.0, left))
                seen += len(message.get("body", b""))
        except (TimeoutError, asyncio.TimeoutError):
            return False
        return True


def _closing(message: Message) -> Message:
    """The response start with ``Connection: close`` (the rest of the body stays unread)."""
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}
