"""Pure-ASGI middleware checked before any body is read: API keys and the body size cap.

(Pure ASGI rather than ``BaseHTTPMiddleware`` so streaming and disconnect detection
keep working.)
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, Unauthorized
from .problems import render

__all__ = ["ApiKeyMiddleware", "BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """413 for bodies over ``limit``: from Content-Length at once, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.limit:
            response = render(PayloadTooLarge(self.limit), headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every path but ``open_paths``; constant-time."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_paths: Iterable[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = frozenset(open_paths)

    def _allowed(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode()
        ok = False
        for key in self.keys:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.keys or scope["path"] in self.open_paths
                or scope.get("method") == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if self._allowed(Headers(scope=scope).get("authorization")):
            await self.app(scope, receive, send)
            return
        await render(Unauthorized())(scope, receive, send)
