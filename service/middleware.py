"""Pure-ASGI middleware checked before any body is read: API keys and the body size cap.

(Pure ASGI rather than ``BaseHTTPMiddleware`` so streaming and disconnect detection
keep working.)
"""

from __future__ import annotations

import base64
import binascii
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
    """``Authorization: Bearer <key>`` on every path but ``open_paths``; constant-time.
    Under ``basic_prefix`` (``/label-studio/``) Basic auth with a key as the password (any
    user name) is accepted too: Label Studio's ML backend settings offer only Basic auth."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], open_paths: Iterable[str],
                 basic_prefix: str = "/label-studio/") -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.open_paths = frozenset(open_paths)
        self.basic_prefix = basic_prefix

    @staticmethod
    def basic_password(token: str) -> str | None:
        """The password of HTTP Basic credentials (``base64(user:password)``), else None."""
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep else None

    def _allowed(self, authorization: str | None, path: str = "") -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "basic" and path.startswith(self.basic_prefix):
            token = self.basic_password(token) or ""
        elif scheme.lower() != "bearer":
            return False
        if not token.strip():
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
        path = scope["path"]
        authorization = Headers(scope=scope).get("authorization")
        if self._allowed(authorization, path):
            await self.app(scope, receive, send)
            return
        await render(Unauthorized(basic=path.startswith(self.basic_prefix),
                                  given=bool(authorization and authorization.strip())))(
            scope, receive, send)
