"""The URL fetcher against a local HTTP server: scheme and address policy (refused before
any connection), redirects re-checked and limited, size caps while streaming, timeouts."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import numpy as np
import pytest
from PIL import Image

from service.errors import ServiceProblem
from service.urlfetch import Fetcher, UrlPolicy, address_allowed, sniff_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Site:
    """A tiny local web server that records every path it is asked for."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.hits: list[str] = []
        self.hosts: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                site.hosts.append(self.headers.get("Host", ""))
                if self.path == "/img.png":
                    self._send(200, site.image)
                elif self.path.startswith("/redirect/"):
                    n = int(self.path.rsplit("/", 1)[1])
                    target = "/img.png" if n == 0 else f"/redirect/{n - 1}"
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/declared-big":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10**9))
                    self.end_headers()
                elif self.path == "/endless":
                    self.send_response(200)
                    self.end_headers()  # no length: the body runs until the cap stops it
                    try:
                        self.wfile.write(PNG_MAGIC)
                        for _ in range(10_000):
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                elif self.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "108")
                    self.end_headers()
                    try:
                        self.wfile.write(PNG_MAGIC)
                        for _ in range(100):
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                elif self.path == "/lying-html":
                    self._send(200, b"<html>not an image</html>", "image/png")
                elif self.path == "/lying-png":
                    self._send(200, site.image, "text/html")
                elif self.path.startswith("/to?"):
                    self.send_response(302)
                    self.send_header("Location", unquote(self.path[4:]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._send(404, b"not here")

            def _send(self, status: int, body: bytes, ctype: str | None = None) -> None:
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def image_bytes(camera: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(camera[:64, :64]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def site(image_bytes: bytes) -> Iterator[Site]:
    s = Site(image_bytes)
    yield s
    s.close()


def fetch(url: str, *, allow_private: bool = True, max_bytes: int = 10**6,
          timeout: float = 5.0, redirects: int = 3, allowlist: tuple[str, ...] = ()) -> bytes:
    async def main() -> bytes:
        policy = UrlPolicy(allow_private=allow_private, allowlist=allowlist)
        f = Fetcher(policy, max_bytes=max_bytes,
                    timeout=timeout, connect_timeout=2.0, max_redirects=redirects)
        try:
            return await f.fetch(url, "reference")
        finally:
            await f.aclose()

    return asyncio.run(main())


def problem(url: str, **kwargs) -> ServiceProblem:
    with pytest.raises(ServiceProblem) as info:
        fetch(url, **kwargs)
    return info.value


def test_fetches_an_image(site, image_bytes):
    assert fetch(site.base + "/img.png") == image_bytes


def test_loopback_refused_by_default_before_connecting(site):
    for url in (site.base + "/img.png",
                site.base.replace("127.0.0.1", "localhost") + "/img.png"):
        err = problem(url, allow_private=False)
        assert err.status == 422 and err.code == "url-refused"
        assert "non-public address" in err.detail
    assert site.hits == []


@pytest.mark.parametrize("url", ["ftp://example.org/a.png", "file:///etc/passwd",
                                 "gopher://x/", "not a url", "http:///nohost.png",
                                 "http://user:pw@example.org/a.png"])
def test_only_plain_http_urls(url, site):
    err = problem(url)
    assert err.code == "url-refused" and err.extra["field"] == "reference"


@pytest.mark.parametrize(("address", "allowed"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("100.127.255.254", False), ("240.0.0.1", False), ("255.255.255.255", False),
    ("192.0.2.1", False), ("198.18.0.1", False), ("::", False), ("ff02::1", False),
    ("2001:db8::1", False), ("::ffff:169.254.169.254", False), ("::ffff:10.0.0.1", False),
    ("::127.0.0.1", False),  # IPv4-compatible
    ("2002:7f00:1::", False), ("2002:808:808::1", False),  # 6to4 (gateway routed)
    ("64:ff9b::7f00:1", False), ("64:ff9b::808:808", False),  # NAT64
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
])
def test_address_policy(address, allowed):
    import ipaddress

    assert address_allowed(ipaddress.ip_address(address)) is allowed


def test_redirects_followed_up_to_the_limit(site, image_bytes):
    assert fetch(site.base + "/redirect/2") == image_bytes  # /redirect/n: n + 1 hops
    err = problem(site.base + "/redirect/3")
    assert err.code == "url-fetch-failed" and "redirects" in err.detail


def test_size_cap_from_header_and_while_streaming(site):
    err = problem(site.base + "/declared-big")
    assert err.status == 413
    start = time.monotonic()
    err = problem(site.base + "/endless", max_bytes=200_000)
    assert err.status == 413
    assert time.monotonic() - start < 5


def test_total_timeout(site):
    start = time.monotonic()
    err = problem(site.base + "/slow", timeout=0.5)
    assert err.code == "url-fetch-failed" and "0.5" in err.detail
    assert time.monotonic() - start < 3


def test_error_status_and_unreachable_host(site):
    err = problem(site.base + "/missing.png")
    assert err.code == "url-fetch-failed" and "404" in err.detail
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    err = problem(f"http://127.0.0.1:{port}/x.png")
    assert err.code == "url-fetch-failed"


def test_url_input_over_http(site, image_bytes):
    """The JSON form with a URL gives the same result as the same bytes inline."""
    import base64
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    inline = {"data": base64.b64encode(image_bytes).decode()}
    body = {"reference": {"url": site.base + "/img.png"}, "candidate": inline,
            "config": {"metric": "mse"}}
    with TestClient(create_app(Settings(devices=["cpu"], allow_private_urls=True))) as c:
        r = c.post("/v1/diff", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["metrics"] == {"mse": 0.0}
    site.hits.clear()
    with TestClient(create_app(Settings(devices=["cpu"]))) as c:
        r = c.post("/v1/diff", json=body)
        assert r.status_code == 422 and r.json()["code"] == "url-refused"
    assert site.hits == []


def test_embedded_ipv4_is_named():
    import ipaddress

    from service.urlfetch import refusal

    assert "127.0.0.1" in refusal(ipaddress.ip_address("2002:7f00:1::"))
    assert "127.0.0.1" in refusal(ipaddress.ip_address("64:ff9b::7f00:1"))
    assert "loopback" in refusal(ipaddress.ip_address("::ffff:127.0.0.1"))


# Each row: the URL's path-and-host as built from the site's port, the policy, what the
# fetcher answers, and exactly which paths the site saw (refused URLs: never contacted).
_P = "{port}"
_HOSTILE_URLS = [
    # odd spellings of loopback, with the strict default policy: refused before connecting
    ("http://127.0.0.1:{port}/img.png", {}, "url-refused", []),
    ("http://localhost:{port}/img.png", {}, "url-refused", []),
    ("http://localhost.:{port}/img.png", {}, "url-refused", []),
    ("http://2130706433:{port}/img.png", {}, "url-refused", []),
    ("http://0x7f000001:{port}/img.png", {}, "url-refused", []),
    ("http://127.1:{port}/img.png", {}, "url-refused", []),
    ("http://0177.0.0.1:{port}/img.png", {}, "url-refused", []),
    ("http://[::1]:{port}/img.png", {}, "url-refused", []),
    ("http://[::ffff:127.0.0.1]:{port}/img.png", {}, "url-refused", []),
    ("http://0.0.0.0:{port}/img.png", {}, "url-refused", []),
    ("http://user:pw@127.0.0.1:{port}/img.png", {"allow_private": True}, "url-refused", []),
    ("http://example.org@127.0.0.1:{port}/img.png", {"allow_private": True},
     "url-refused", []),
    ("http://169.254.169.254/latest/meta-data/", {}, "url-refused", []),
    ("http://[fd00::1]/x.png", {}, "url-refused", []),
    # an allowlisted prefix whose redirects lead elsewhere inside: each hop re-checked
    ("http://127.0.0.1:{port}/to?/img.png", {"allowlist": ("http://127.0.0.1:{port}/to",)},
     "url-refused", ["/to?/img.png"]),
    ("http://127.0.0.1:{port}/to?http://localhost:{port}/img.png",
     {"allowlist": ("http://127.0.0.1:{port}/to",)}, "url-refused",
     ["/to?http://localhost:{port}/img.png"]),
    ("http://127.0.0.1:{port}/to?http://2130706433:{port}/img.png",
     {"allowlist": ("http://127.0.0.1:{port}/to",)}, "url-refused",
     ["/to?http://2130706433:{port}/img.png"]),
    ("http://127.0.0.1:{port}/to?file:///etc/passwd",
     {"allowlist": ("http://127.0.0.1:{port}/to",)}, "url-refused",
     ["/to?file:///etc/passwd"]),
    # allowlist entries: prefix boundaries, host, host:port
    ("http://127.0.0.1:{port}/img.png", {"allowlist": ("http://127.0.0.1:{port}/im",)},
     "url-refused", []),
    ("http://127.0.0.1:{port}/img.png", {"allowlist": ("127.0.0.1:1",)}, "url-refused", []),
    ("http://127.0.0.1:{port}/img.png", {"allowlist": ("127.0.0.1",)}, 200, ["/img.png"]),
    ("http://127.0.0.1:{port}/img.png", {"allowlist": ("127.0.0.1:{port}",)}, 200,
     ["/img.png"]),
    ("http://127.0.0.1:{port}/img.png", {"allowlist": ("http://127.0.0.1:{port}/img.png",)},
     200, ["/img.png"]),
    ("http://localhost:{port}/img.png", {"allowlist": ("LOCALHOST.",)}, 200, ["/img.png"]),
    # lying content types: the bytes decide
    ("http://127.0.0.1:{port}/lying-html", {"allow_private": True}, "undecodable-image",
     ["/lying-html"]),
    ("http://127.0.0.1:{port}/lying-png", {"allow_private": True}, 200, ["/lying-png"]),
    # redirect chains within the limit and beyond it
    ("http://127.0.0.1:{port}/redirect/3", {"allow_private": True}, 200,
     ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0", "/img.png"]),
]


@pytest.mark.parametrize(("url", "policy", "expected", "hits"), _HOSTILE_URLS)
def test_hostile_urls(site, image_bytes, url, policy, expected, hits):
    port = site.base.rsplit(":", 1)[1]
    fill = lambda text: text.replace("{port}", port)  # noqa: E731
    url = fill(url)
    if "/to?" in url:
        head, target = url.split("/to?", 1)
        url = head + "/to?" + quote(fill(target), safe="")
        hits = ["/to?" + quote(fill(h[4:]), safe="") for h in hits]
    kwargs = {k: tuple(map(fill, v)) if k == "allowlist" else v for k, v in policy.items()}
    kwargs.setdefault("allow_private", False)
    kwargs["redirects"] = 4 if "/redirect/" in url else 3
    if expected == 200:
        assert fetch(url, **kwargs) == image_bytes
    else:
        err = problem(url, **kwargs)
        assert err.status == 422 and err.code == expected, err.detail
        assert err.extra["field"] == "reference"
    assert site.hits == [fill(h) if "/to?" not in h else h for h in hits]


def test_lying_content_type_names_what_it_saw(site):
    err = problem(site.base + "/lying-html")
    assert "<html>" in err.detail and "image/png" in err.detail


def test_endless_non_image_is_cut_at_the_first_bytes(site):
    """A body that does not start like an image is dropped without reading on."""
    site.image = b"\0" * 100_000
    err = problem(site.base + "/img.png", max_bytes=10**9)
    assert err.code == "undecodable-image"


@pytest.mark.parametrize(("head", "fmt"), [
    (PNG_MAGIC + b"rest", "PNG"), (b"\xff\xd8\xff\xe0....", "JPEG"),
    (b"RIFF\0\0\0\0WEBPVP8 ", "WEBP"), (b"II*\0....", "TIFF"), (b"MM\0*....", "TIFF"),
    (b"BM......", "BMP"), (b"GIF89a......", None), (b"\0\0\1\0", None), (b"", None),
    (b"<svg xmlns=", None), (b"RIFF\0\0\0\0WAVEfmt ", None),
])
def test_sniff_image(head, fmt):
    assert sniff_image(head) == fmt


@pytest.fixture
def fake_dns(monkeypatch):
    """Names under .test resolve through this table: a list of answers, one per lookup
    (the last one repeats), so a name can change its answer between lookups."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self, host, port, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host in table:
            lookups.append(host)
            answers = table[host]
            ip = answers.pop(0) if len(answers) > 1 else answers[0]
            import socket

            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return table, lookups


def test_dns_rebinding_is_caught_at_connect_time(site, fake_dns):
    """Public at the check, loopback at connect: refused, the site never contacted."""
    table, lookups = fake_dns
    table["rebind.test"] = ["93.184.215.14", "127.0.0.1"]
    port = site.base.rsplit(":", 1)[1]
    err = problem(f"http://rebind.test:{port}/img.png", allow_private=False)
    assert err.code == "url-refused" and "127.0.0.1" in err.detail
    assert lookups == ["rebind.test", "rebind.test"]
    assert site.hits == []


def test_connection_goes_to_the_checked_address_with_the_host_name(site, fake_dns,
                                                                    image_bytes):
    """An allowlisted name is connected to by its checked address; Host keeps the name."""
    table, _ = fake_dns
    table["lab.test"] = ["127.0.0.1"]
    port = site.base.rsplit(":", 1)[1]
    data = fetch(f"http://lab.test:{port}/img.png", allow_private=False,
                 allowlist=("lab.test",))
    assert data == image_bytes and site.hosts == [f"lab.test:{port}"]


@pytest.mark.parametrize("entry", ["ftp://x/", "http://", "a b/c", "host/path"])
def test_bad_allowlist_entries_are_named(entry, monkeypatch):
    from pydantic import ValidationError

    from service.settings import Settings

    monkeypatch.setenv("DF_URL_ALLOWLIST", f"ok.lab,{entry}")
    with pytest.raises(ValidationError, match="allowlist entry"):
        Settings()


def test_allowlist_setting(monkeypatch):
    from service.settings import Settings

    monkeypatch.setenv("DF_URL_ALLOWLIST", "nas.lab, 10.0.0.5:8080,http://files.lab/img/")
    assert Settings().url_allowlist == ["nas.lab", "10.0.0.5:8080", "http://files.lab/img/"]
    monkeypatch.delenv("DF_URL_ALLOWLIST")
    assert Settings().url_allowlist == [] and Settings().allow_private_urls is False


def test_allowlisted_prefix_opens_nothing_else_on_a_reused_connection(site, image_bytes):
    """After an allowlisted fetch, the same fetcher (pooled connection to that origin)
    still refuses a path outside the prefix, before sending anything."""
    async def main() -> tuple[bytes, ServiceProblem]:
        f = Fetcher(UrlPolicy(allowlist=(site.base + "/img.png",)), max_bytes=10**6,
                    timeout=5.0, connect_timeout=2.0, max_redirects=3)
        try:
            data = await f.fetch(site.base + "/img.png", "reference")
            with pytest.raises(ServiceProblem) as info:
                await f.fetch(site.base + "/lying-png", "candidate")
            return data, info.value
        finally:
            await f.aclose()

    data, err = asyncio.run(main())
    assert data == image_bytes
    assert err.code == "url-refused" and err.extra["field"] == "candidate"
    assert site.hits == ["/img.png"]
