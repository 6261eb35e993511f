"""Fetching images by URL without letting the URL lead inside (server-side request forgery).

Only http(s); every address a host resolves to must be public unicast (no loopback,
private, link-local, CGNAT, multicast, unspecified, reserved, documentation, nor IPv4
carried inside IPv6). The check runs before any connection and again at connect time,
and the socket connects to the very address that was checked (Host and TLS SNI keep the
name), so DNS rebinding cannot lead inside. Redirects are followed by hand, each hop
checked; a total timeout and a size cap hold while streaming; the content type is decided
from the bytes. ``DF_URL_ALLOWLIST`` and ``DF_ALLOW_PRIVATE_URLS`` open private addresses
for lab networks.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from .errors import FetchFailed, NotAnImage, PayloadTooLarge, UrlRefused

__all__ = ["Fetcher", "UrlPolicy", "address_allowed", "refusal", "sniff_image"]

_REDIRECTS = (301, 302, 303, 307, 308)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IPv6 ranges that carry an IPv4 address or route through a gateway: refused outright.
_TUNNELS = {
    "IPv4-compatible": ipaddress.ip_network("::/96"),
    "NAT64": ipaddress.ip_network("64:ff9b::/96"),
    "local NAT64": ipaddress.ip_network("64:ff9b:1::/48"),
    "6to4": ipaddress.ip_network("2002::/16"),
    "Teredo": ipaddress.ip_network("2001::/32"),
}

#: Magic numbers of the formats the service decodes (core.images.SUPPORTED_FORMATS).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
)

#: Whether the hop being fetched may reach private addresses (set per hop by the fetcher,
#: read at connect time; strict anywhere else).
_PRIVATE_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("df_private_ok",
                                                                   default=False)
_WHAT: contextvars.ContextVar[str] = contextvars.ContextVar("df_what", default="url")


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            inner = refusal(ip.ipv4_mapped)
            return inner and f"IPv4-mapped {inner}"
        for name, net in _TUNNELS.items():
            if ip in net:
                embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or \
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                return f"a {name} address (carrying IPv4 {embedded})"
    kinds = [("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
             ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
             ("reserved", ip.is_reserved), ("private", ip.is_private)]
    for kind, hit in kinds:
        if hit:
            return f"a {kind} address"
    if not ip.is_global:
        return "a non-global (e.g. CGNAT or documentation) address"
    return None


def address_allowed(ip: IPAddress) -> bool:
    """Public unicast only (see :func:`refusal`)."""
    return refusal(ip) is None


def sniff_image(head: bytes) -> str | None:
    """The supported image format ``head`` (the first bytes) starts with, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def _host(name: str) -> str:
    return name.lower().rstrip(".")


@dataclass(frozen=True)
class _Allowed:
    """One allowlist entry: a host, a host:port, or a URL prefix."""

    host: str
    port: int | None = None
    scheme: str | None = None
    path: str | None = None

    @classmethod
    def parse(cls, entry: str) -> _Allowed:
        text = entry.strip()
        if "://" in text:
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"allowlist entry {entry!r} is not an http(s) URL prefix")
            return cls(_host(parts.hostname), parts.port or _default_port(parts.scheme),
                       parts.scheme, parts.path or "/")
        parts = urlsplit("//" + text)
        if not parts.hostname or parts.path or parts.query:
            raise ValueError(f"allowlist entry {entry!r} is not a host, host:port or URL")
        return cls(_host(parts.hostname), parts.port)

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        if host != self.host or (self.port is not None and port != self.port):
            return False
        if self.scheme is None:
            return True
        if scheme != self.scheme:
            return False
        prefix = self.path or "/"
        return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs may be fetched: public addresses only, unless ``allow_private`` or the
    URL matches an ``allowlist`` entry (host, ``host:port``, or ``http(s)://`` URL prefix)."""

    allow_private: bool = False
    allowlist: Sequence[str] = ()
    _entries: tuple[_Allowed, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_entries", tuple(_Allowed.parse(e) for e in self.allowlist))

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
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UrlRefused(what, "credentials in URLs are not allowed")
        return parts.hostname, port or _default_port(parts.scheme)

    def private_ok(self, url: str) -> bool:
        """Whether ``url`` (already checked) may reach private addresses."""
        if self.allow_private:
            return True
        parts = urlsplit(url)
        host = _host(parts.hostname or "")
        port = parts.port or _default_port(parts.scheme)
        return any(e.matches(parts.scheme, host, port, parts.path or "/")
                   for e in self._entries)

    async def check(self, url: str, what: str) -> None:
        """Refuse ``url`` before any connection if it is not allowed."""
        host, port = self.check_url(url, what)
        if not self.private_ok(url):
            await resolve_checked(host, port, what)


async def resolve_checked(host: str, port: int, what: str,
                          strict: bool = True) -> list[IPAddress]:
    """The addresses ``host`` resolves to; with ``strict``, refused if any is not public."""
    try:  # "name." is the same host as "name" (and resolves where the dotted form fails)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host[:-1] if host.endswith(".") and not host.endswith("..") else host, port,
            type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchFailed(what, f"cannot resolve host {host!r} ({exc})") from None
    ips = list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%", 1)[0]) for i in infos))
    if strict:
        for ip in ips:
            why = refusal(ip)
            if why:
                raise UrlRefused(what, f"host {host!r} resolves to {ip}, {why} (a non-public "
                                 "address); such URLs are refused")
    return ips


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host at connect time and connects to the checked address
    itself; TLS still verifies and sends SNI for the URL's host name (httpcore passes it)."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        ips = await resolve_checked(host, port, _WHAT.get(), strict=not _PRIVATE_OK.get())
        error: Exception | None = None
        for ip in ips:
            try:
                return await self.inner.connect_tcp(str(ip), port, timeout=timeout,
                                                    local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host!r}")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise httpcore.ConnectError("unix sockets are not fetched from")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose sockets go through
    :class:`_PinnedBackend` (httpx offers no public hook for the network backend)."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=_PinnedBackend())


class Fetcher:
    """Downloads image bytes under a :class:`UrlPolicy` and limits."""

    def __init__(self, policy: UrlPolicy, *, max_bytes: int, timeout: float,
                 connect_timeout: float, max_redirects: int) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=8)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False, trust_env=False, transport=_PinnedTransport(limits),
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
        _WHAT.set(what)  # this task's context: read by the connect-time check
        for _ in range(self.max_redirects + 1):
            await self.policy.check(url, what)
            _PRIVATE_OK.set(self.policy.private_ok(url))
            origin = origin or _origin(url)
            extra = headers if headers and _origin(url) == origin else None
            try:
                async with self.client.stream("GET", url, headers=extra) as resp:
                    if resp.status_code in _REDIRECTS and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(what, f"the server answered {resp.status_code}",
                                          upstream_status=resp.status_code)
                    return await self._read(resp, what)
            except httpx.HTTPError as exc:
                raise FetchFailed(what, f"{type(exc).__name__}: {exc}") from None
        raise FetchFailed(what, f"more than {self.max_redirects} redirects")

    async def _read(self, resp: httpx.Response, what: str) -> bytes:
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(self.max_bytes, what)
        chunks, size, sniffed = [], 0, False
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(self.max_bytes, what)
            chunks.append(chunk)
            if not sniffed and size >= 12:
                _sniff(b"".join(chunks), resp, what)
                sniffed = True
        data = b"".join(chunks)
        if not sniffed:
            _sniff(data, resp, what)
        return data


def _sniff(head: bytes, resp: httpx.Response, what: str) -> None:
    """Refuse a body whose first bytes are not a supported image, whatever its headers say."""
    if sniff_image(head) is None:
        declared = resp.headers.get("content-type", "none")
        raise NotAnImage(what, "the URL's content is not a PNG, JPEG, WebP, TIFF or BMP image "
                         f"(judged from its bytes {head[:8]!r}; declared content type "
                         f"{declared!r})")


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an already checked URL."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port
