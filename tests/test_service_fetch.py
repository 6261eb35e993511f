"""The URL fetcher against a local HTTP server: scheme and address policy (refused before
any connection), redirects re-checked and limited, size caps while streaming, timeouts."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from service.fetch import Fetcher, UrlPolicy, _address_allowed
from service.problems import ServiceError


class Site:
    """A tiny local web server that records every path it is asked for."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
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
                        for _ in range(10_000):
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                elif self.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                else:
                    self._send(404, b"not here")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
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
          timeout: float = 5.0, redirects: int = 3) -> bytes:
    async def main() -> bytes:
        f = Fetcher(UrlPolicy(allow_private=allow_private), max_bytes=max_bytes,
                    timeout=timeout, connect_timeout=2.0, max_redirects=redirects)
        try:
            return await f.fetch(url, "reference")
        finally:
            await f.aclose()

    return asyncio.run(main())


def problem(url: str, **kwargs) -> ServiceError:
    with pytest.raises(ServiceError) as info:
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
])
def test_address_policy(address, allowed):
    import ipaddress

    assert _address_allowed(ipaddress.ip_address(address)) is allowed


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
