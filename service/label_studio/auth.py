"""The Authorization header for Label Studio: legacy tokens as ``Token <t>``; personal access
tokens (JWT refresh tokens) exchanged for short-lived access tokens sent as ``Bearer``.

Followed: label-studio-sdk ``tokens/client_ext.py`` (``TokensClientExt``: a JWT API key is
exchanged with ``POST <base>/api/token/refresh/`` ``{"refresh": <PAT>}`` for ``{"access": ...}``,
the access token is cached until its ``exp`` and refreshed under a lock) and
``_extensions/label_studio_tools/core/utils/io.py`` (``_build_headers``: ``Bearer`` for a
well-formed JWT, else ``Token``; only to Label Studio's own host). A refused exchange is
:class:`service.errors.LabelStudioAuthFailed` (502). Verified against Label
Studio 1.23.2: PATs carry ``token_type: refresh``, access tokens live 300 s, a PAT sent as
``Bearer`` itself is refused with 401, and legacy tokens are off in new organisations.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from typing import Any

import httpx

from ..errors import LabelStudioAuthFailed

__all__ = ["LabelStudioAuth", "jwt_claims"]

log = logging.getLogger("service")

#: an access token is renewed this many seconds before it expires (at most half its life)
RENEW_MARGIN = 30.0


def jwt_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, decoded without verifying it (only Label Studio can); None if
    ``token`` is not a JWT (a legacy token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        head, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                        for p in parts[:2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not (isinstance(head, dict) and "alg" in head and isinstance(claims, dict)):
        return None
    return claims


class LabelStudioAuth:
    """One configured token for ``base``; ``await header()`` gives the header to send."""

    def __init__(self, base: str, token: str, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        claims = jwt_claims(token)
        #: "legacy", "refresh" (a PAT: exchanged) or "access" (sent as it is)
        self.kind = "legacy" if claims is None else (
            "refresh" if claims.get("token_type") == "refresh" else "access")
        self._access: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> dict[str, str]:
        if self.kind == "legacy":
            return {"Authorization": f"Token {self.token}"}
        if self.kind == "access":
            return {"Authorization": f"Bearer {self.token}"}
        if self._access is None or time.time() >= self._renew_at:
            async with self._lock:  # one exchange at a time; others reuse its result
                if self._access is None or time.time() >= self._renew_at:
                    await self._exchange()
        return {"Authorization": f"Bearer {self._access}"}

    @property
    def renewable(self) -> bool:
        """Whether a 401 may be cured by exchanging the PAT again."""
        return self.kind == "refresh"

    def invalidate(self) -> None:
        """Forget the access token (Label Studio answered 401 to it): the next ``header()``
        exchanges the PAT again."""
        self._access = None

    async def _exchange(self) -> None:
        url = f"{self.base}/api/token/refresh/"
        started = time.time()
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False,
                                         follow_redirects=False) as client:
                resp = await client.post(url, json={"refresh": self.token},
                                         headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise LabelStudioAuthFailed(
                f"could not exchange the Label Studio personal access token at {url} "
                f"({type(exc).__name__}: {exc})") from None
        access = None
        if resp.status_code == 200:
            try:
                access = resp.json().get("access")
            except (ValueError, AttributeError):
                access = None
        if not isinstance(access, str) or not access:
            why = ("it is revoked, expired or from another Label Studio; create a new one "
                   "under Account & Settings > Personal Access Token"
                   if resp.status_code in (400, 401, 403) else resp.text[:200])
            raise LabelStudioAuthFailed(
                f"Label Studio answered {resp.status_code} to exchanging the personal access "
                f"token at {url}: {why}", upstream_status=resp.status_code)
        exp = (jwt_claims(access) or {}).get("exp")
        life = float(exp) - started if isinstance(exp, (int, float)) else 300.0
        self._access = access
        self._renew_at = started + max(0.0, life - min(RENEW_MARGIN, life / 2))
        log.debug("exchanged the Label Studio PAT for an access token valid %.0f s", life)
