"""Fetching images by URL: only http(s), a policy on where URLs may point, timeouts, a
size cap enforced while streaming, and redirects followed by hand so each hop is checked.

The policy checks every address a host name resolves to before connecting. (Pinning
the connection to the checked address, against DNS rebinding, is left to the SSRF
hardening of the URL fetcher; it plugs in at :meth:`UrlPolicy.check`.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from .problems import ServiceError

__all__ = ["Fetcher", "UrlPolicy", "UrlRefused"]

_REDIRECTS = (301, 302, 303, 307, 308)


class UrlRefused(ServiceError):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(422, "url-refused", f"{what}: {detail}", title="URL refused",
                         field=what)


class FetchFailed(ServiceError):
    def __init__(self, what: str, detail: str, status: int = 422) -> None:
        super().__init__(status, "url-fetch-failed", f"{what}: {detail}",
                         title="URL could not be fetched", field=what)


def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Public unicast only: no loopback, private, link-local, multicast, reserved..."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs may be fetched."""

    allow_private: bool = False

    def check_url(self, url: str, what: str) -> tuple[str, int]:
        """Syntax and scheme; returns ``(host, port)``."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UrlRefused(what, f"malformed URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise UrlRefused(what, f"scheme {parts.scheme or '(none)'!r} is not allowed; "
                             "use http or https")
        if not parts.hostname:
            raise UrlRefused(what, "the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused(what, "credentials in URLs are not allowed")
        return parts.hostname, port or (443 if parts.scheme == "https" else 80)

    async def check(self, url: str, what: str) -> None:
        """Refuse ``url`` before any connection if it is not allowed."""
        host, port = self.check_url(url, what)
        if self.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise FetchFailed(what, f"cannot resolve host {host!r} ({exc})") from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if not _address_allowed(ip):
                raise UrlRefused(what, f"host {host!r} resolves to {ip}, a non-public "
                                 "address; such URLs are refused")


class Fetcher:
    """Downloads image bytes under a :class:`UrlPolicy` and limits."""

    def __init__(self, policy: UrlPolicy, *, max_bytes: int, timeout: float,
                 connect_timeout: float, max_redirects: int) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            headers={"User-Agent": "difference-finder", "Accept": "image/*",
                     "Accept-Encoding": "identity"},  # the size cap counts real bytes
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str, what: str,
                    headers: Mapping[str, str] | None = None) -> bytes:
        """The body at ``url``; every hop checked, total time and size capped. ``headers``
        (e.g. a Label Studio token) go only to ``url``'s own origin, not where it redirects."""
        try:
            return await asyncio.wait_for(self._fetch(url, what, headers), self.timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise FetchFailed(what, f"download did not finish within {self.timeout:g} s",
                              status=422) from None

    async def _fetch(self, url: str, what: str,
                     headers: Mapping[str, str] | None = None) -> bytes:
        origin = None
        for _ in range(self.max_redirects + 1):
            await self.policy.check(url, what)
            origin = origin or _origin(url)
            extra = headers if headers and _origin(url) == origin else None
            try:
                async with self.client.stream("GET", url, headers=extra) as resp:
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(what, f"the server answered {resp.status_code}")
                    return await self._read(resp, what)
            except httpx.HTTPError as exc:
                raise FetchFailed(what, f"{type(exc).__name__}: {exc}") from None
        raise FetchFailed(what, f"more than {self.max_redirects} redirects")

    async def _read(self, resp: httpx.Response, what: str) -> bytes:
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(what, self.max_bytes)
        chunks, size = [], 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise _too_large(what, self.max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an already checked URL."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _too_large(what: str, limit: int) -> ServiceError:
    return ServiceError(413, "payload-too-large",
                        f"{what}: the image is larger than the limit of {limit} bytes",
                        field=what, limit=limit)
