"""Hostile inputs, table-driven: each row is what is sent, the status and problem code
expected (with words the detail must contain), and the server still answers /healthz
afterwards. Every row runs in process and against the real server (uvicorn subprocess).

Documented behaviours pinned here: animated PNG/WebP are compared on their first frame;
a grey image against a colour one is compared as colour (channels matched, not refused);
different sizes are a 422 naming both, unless ``size_policy`` is resize, crop or pad.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # starlette's note about httpx in its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

_RNG = np.random.default_rng(4)
REF = _RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
OTHER = 255 - REF


def enc(a: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def animated(fmt: str, **kwargs: Any) -> bytes:
    """Two frames: the reference, then its negative."""
    buf = io.BytesIO()
    Image.fromarray(REF).save(buf, format=fmt, save_all=True,
                              append_images=[Image.fromarray(OTHER)], **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def float_tiff(bad: float) -> bytes:
    a = np.full((32, 32), 0.5, np.float32)
    a[3, 5] = bad
    return enc(a, "TIFF")


REF_PNG = enc(REF)
B64 = base64.b64encode(REF_PNG).decode()


@dataclass
class Row:
    """One hostile request and what must come back."""

    name: str
    send: dict[str, Any]
    status: int
    code: str | None = None
    says: tuple[str, ...] = ()
    pointer: str | None = None
    check: Callable[[dict[str, Any]], None] | None = None
    route: str = "/v1/diff"


def upload(candidate: bytes, config: dict | str | None = None,
           reference: bytes = REF_PNG) -> dict[str, Any]:
    data = {} if config is None else {
        "config": config if isinstance(config, str) else json.dumps(config)}
    return {"files": {"reference": ("ref.png", reference), "candidate": ("cand", candidate)},
            "data": data}


def as_json(config: Any = None, raw: bytes | None = None, **fields: Any) -> dict[str, Any]:
    if raw is not None:
        return {"content": raw, "headers": {"content-type": "application/json"}}
    body = {"reference": {"data": B64}, "candidate": {"data": B64}, **fields}
    if config is not None:
        body["config"] = config
    return {"json": body}


def raw_config(config_text: str) -> dict[str, Any]:
    """A JSON body whose config is spliced in as text (for NaN, Infinity, 1e999)."""
    text = f'{{"reference": {{"data": "{B64}"}}, "candidate": {{"data": "{B64}"}}, ' \
        f'"config": {config_text}}}'
    return as_json(raw=text.encode())


def zero_mse(body: dict[str, Any]) -> None:
    assert body["metrics"]["mse"] == 0.0  # the first frame, identical to the reference


def shaped(height: int, width: int) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        assert body["map"]["shape"] == [height, width]

    return check


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


ROWS = [
    # files that are not (whole, supported) images
    Row("empty file", upload(b""), 422, "undecodable-image", ("candidate", "empty")),
    Row("truncated png", upload(REF_PNG[: len(REF_PNG) // 2]), 422, "undecodable-image",
        ("candidate", "truncated")),
    Row("corrupt png", upload(REF_PNG[:40] + b"x" * 300), 422, "undecodable-image",
        ("candidate",)),
    Row("text file", upload(b"hello, this is not an image\n" * 10), 422,
        "undecodable-image", ("candidate",)),
    Row("svg", upload(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        422, "undecodable-image", ("candidate",)),
    Row("zero-size png", upload(png_claiming(0, 0)), 422, "undecodable-image",
        ("candidate",)),
    Row("decompression bomb", upload(png_claiming(100_000, 100_000)), 422, "invalid-input",
        ("candidate", "100000")),
    Row("over max_side", upload(png_claiming(20_000, 10)), 422, "invalid-input",
        ("candidate", "20000x10")),
    Row("gif refused", upload(enc(REF, "GIF")), 422, "undecodable-image",
        ("GIF", "not supported", "PNG, JPEG, WEBP, TIFF, BMP")),
    Row("ico refused", upload(enc(REF, "ICO")), 422, "undecodable-image",
        ("ICO", "not supported")),
    Row("reference broken too", upload(REF_PNG, reference=b"\x89PNG\r\n\x1a\n"), 422,
        "undecodable-image", ("reference",)),
    # float images with non-finite values
    Row("NaN in float tiff", upload(float_tiff(float("nan"))), 422, "invalid-input",
        ("candidate", "NaN")),
    Row("inf in float tiff", upload(float_tiff(float("inf"))), 422, "invalid-input",
        ("candidate", "infinite")),
    # animated images: the first frame (documented)
    Row("animated png: first frame", upload(animated("PNG"), {"metric": "mse"}), 200,
        check=zero_mse),
    Row("animated webp: first frame", upload(animated("WEBP", lossless=True),
                                             {"metric": "mse"}), 200, check=zero_mse),
    # sizes and channels
    Row("different sizes", upload(enc(np.zeros((40, 32, 3), np.uint8))), 422,
        "shape-mismatch", ("32x32", "32x40", "size_policy")),
    *[Row(f"different sizes, {policy}", upload(enc(np.zeros((40, 32, 3), np.uint8)),
                                                 {"metric": "mse", "size_policy": policy}),
          200, check=shaped(*hw)) for policy, hw in (("resize", (32, 32)),
                                                      ("crop", (32, 32)), ("pad", (40, 32)))],
    Row("grey against colour", upload(enc(REF[..., 0]), {"metric": "mse"}), 200),
    Row("16-bit against 8-bit", upload(enc(REF[..., 0].astype(np.uint16) * 257),
                                       {"metric": "mse"}), 200),
    # invalid config, multipart
    Row("unknown metric lists valid", upload(REF_PNG, {"metric": "nope"}), 422,
        "validation-error", ("nope", "mse", "ssim"), "#/config/metric"),
    Row("config not JSON", upload(REF_PNG, "{metric: mse"), 422, "validation-error",
        ("JSON",), "#/config"),
    Row("config absurdly nested", upload(REF_PNG, nested(100_000)), 422, "validation-error",
        (), "#/config"),
    # invalid config, JSON body
    Row("unknown field", as_json({"metric": "mse", "colour": 1}), 422, "validation-error",
        ("colour",), "#/config/colour"),
    Row("out of range", as_json({"data_range": -1}), 422, "validation-error",
        ("greater than 0",), "#/config/data_range"),
    Row("NaN literal", raw_config('{"data_range": NaN}'), 422, "validation-error",
        ("finite",), "#/config/data_range"),
    Row("Infinity in a list", raw_config(
        '{"post_processor": [{"name": "smooth", "sigma": Infinity}]}'), 422,
        "validation-error", ("finite",), "#/config/post_processor/0/sigma"),
    Row("1e999", raw_config('{"regions": {"max_regions": 1e999}}'), 422, "validation-error",
        (), "#/config/regions/max_regions"),
    Row("huge integer", raw_config(f'{{"regions": {{"max_regions": {10**40}}}}}'), 422,
        "validation-error", ("1000",), "#/config/regions/max_regions"),
    Row("wrong type", as_json({"regions": {"min_area": "big"}}), 422, "validation-error",
        ("integer",), "#/config/regions/min_area"),
    Row("wrong type for a list", as_json({"post_processor": {"name": 3}}), 422,
        "validation-error", (), None),
    Row("unknown size policy", as_json({"size_policy": "stretch"}), 422, "validation-error",
        ("resize", "crop", "pad"), "#/config/size_policy"),
    Row("absurd nesting in the body", as_json(raw=b'{"config": ' + nested(100_000).encode()
                                              + b"}"), 400, "malformed-json"),
    Row("deep but parseable nesting", raw_config(nested(500)), 422, "validation-error",
        (), "#/config"),
    # malformed bodies and image fields
    Row("body not JSON", as_json(raw=b"{not json"), 400, "malformed-json"),
    Row("body a JSON array", as_json(raw=b"[]"), 422, "validation-error"),
    Row("empty body", as_json(raw=b""), 400, "malformed-json"),
    Row("url and data both", as_json(candidate={"url": "http://x/", "data": B64}), 422,
        "validation-error", ("exactly one",), "#/candidate"),
    Row("bad base64", as_json(candidate={"data": "***"}), 422, "validation-error",
        ("base64",), "#/candidate/data"),
    Row("base64 of nothing", as_json(candidate={"data": ""}), 422, "undecodable-image",
        ("candidate",)),
    Row("url to a metadata service", as_json(candidate={
        "url": "http://169.254.169.254/latest/meta-data/"}), 422, "url-refused",
        ("169.254.169.254",)),
    Row("url with a file scheme", as_json(candidate={"url": "file:///etc/passwd"}), 422,
        "url-refused", ("scheme",)),
    Row("unsupported content type", {"content": b"x", "headers": {"content-type":
                                                                 "text/plain"}},
        415, "unsupported-media-type"),
    Row("multipart without parts", {"files": {"other": ("x", b"1")}}, 422,
        "validation-error", ("reference",)),
    # the same against /v1/compare
    Row("compare: absurd nesting", as_json(raw=b'{"config": ' + nested(100_000).encode()
                                           + b"}"), 400, "malformed-json", route="/v1/compare"),
    Row("compare: body not JSON", as_json(raw=b"{"), 400, "malformed-json",
        route="/v1/compare"),
    Row("compare: no candidates", {"json": {"reference": {"data": B64}, "candidates": []}},
        422, "validation-error", (), "#/candidates", route="/v1/compare"),
    Row("compare: a broken candidate", {"json": {"reference": {"data": B64}, "candidates": [
        {"data": B64}, {"data": base64.b64encode(b"GIF89a....").decode()}]}}, 422,
        "undecodable-image", ("candidates",), route="/v1/compare"),
    Row("compare: unknown baseline", {"json": {"reference": {"data": B64}, "candidates": [
        {"data": B64}], "labels": ["a"], "baseline": "b"}}, 422, None, ("b",),
        route="/v1/compare"),
    Row("compare: multipart with a bomb", {"files": [
        ("reference", ("r.png", REF_PNG)), ("candidates", ("c.png", REF_PNG)),
        ("candidates", ("bomb.png", png_claiming(100_000, 100_000)))]}, 422, "invalid-input",
        ("100000",), route="/v1/compare"),
    # and the annotation backends
    Row("cvat: absurd nesting", as_json(raw=b'{"image": ' + nested(100_000).encode() + b"}"),
        400, "malformed-json", route="/cvat/detect"),
    Row("cvat: not an image", {"json": {"image": base64.b64encode(b"<html>").decode(),
                                        "reference": B64}}, 422, "undecodable-image",
        route="/cvat/detect"),
    Row("label studio: absurd nesting", as_json(raw=b'{"tasks": ' + nested(100_000).encode()
                                                + b"}"), 400, "malformed-json",
        route="/label-studio/predict"),
]


@dataclass
class Target:
    """Where the rows are sent: a TestClient or an httpx client to the real server."""

    client: Any
    log: Callable[[], str] = field(default=lambda: "")


@pytest.fixture(scope="module", params=["in-process", "uvicorn"])
def target(request, tmp_path_factory) -> Iterator[Target]:
    if request.param == "in-process":
        with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1)),
                        raise_server_exceptions=False) as client:
            yield Target(client)
        return
    from tests.e2e.conftest import Server

    server = Server(tmp_path_factory.mktemp("hostile-logs"), DF_CPU_WORKERS="1")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield Target(client, server.log)
    finally:
        alive = server.proc.poll() is None
        server.stop()
        assert alive, f"the server died:\n{server.log()}"


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_hostile_input(target: Target, row: Row):
    r = target.client.post(row.route, **row.send)
    assert r.status_code == row.status, (r.text[:500], target.log())
    body = r.json()
    if row.status >= 400:
        assert r.headers["content-type"] == "application/problem+json"
        assert body["status"] == row.status, body
        assert row.code is None or body["code"] == row.code, body
        assert body["title"] and body["detail"]
        for word in row.says:
            assert word in body["detail"], body["detail"]
        if row.pointer is not None:
            assert row.pointer in [e["pointer"] for e in body["errors"]], body
    if row.check:
        row.check(body)
    assert target.client.get("/healthz").status_code == 200


def test_still_computes_after_the_table(target: Target):
    """After every hostile row, an honest request is answered correctly."""
    r = target.client.post("/v1/diff", **upload(enc(OTHER), {"metric": "mse"}))
    assert r.status_code == 200
    expected = float(np.mean((REF / 255.0 - OTHER / 255.0) ** 2))
    assert abs(r.json()["metrics"]["mse"] - expected) < 1e-4


# --- overload: bodies too large, huge images, SIGTERM (the real server, and in process) ---


def test_oversized_body_413_is_read_by_every_client(tmp_path):
    """A body over DF_MAX_BODY_BYTES: urllib, requests and httpx all read the 413."""
    from tests.e2e.conftest import Server
    from tests.e2e.test_overload import hammer

    server = Server(tmp_path, DF_MAX_BODY_BYTES=str(2 * 1024 * 1024), DF_CPU_WORKERS="1")
    try:
        server.wait_ready()
        results = hammer(server.url + "/v1/diff", b"x" * (6 * 1024 * 1024),
                         "application/json", per_kind=4)
        assert results == {(k, 413, False): 4 for k in ("urllib", "requests", "httpx")}
    finally:
        server.stop()


def flat_36mp() -> bytes:
    """A 6000x6000 flat RGB PNG: 36 megapixels in a small upload (~100 KB)."""
    return enc(np.full((6000, 6000, 3), 90, np.uint8))


def test_36_megapixel_pair_over_the_budget_is_413_in_process():
    big = flat_36mp()
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=2_000_000_000))) as client:
        r = client.post("/v1/diff", **upload(big, {}, reference=big))
        assert r.status_code == 413, r.text[:300]
        assert r.json()["code"] == "over-memory-budget"
        assert "2000000000" in r.json()["detail"]


def test_16_concurrent_36_megapixel_pairs_are_refused_fast_with_memory_bounded(tmp_path):
    from tests.e2e.conftest import Server
    from tests.e2e.test_overload import multipart

    server = Server(tmp_path, DF_MEMORY_BUDGET="2000000000", DF_CPU_WORKERS="2")
    body, ctype = multipart({"reference": flat_36mp(), "candidate": flat_36mp()})
    try:
        server.wait_ready()
        statuses: list[int] = []

        def one() -> None:
            r = httpx.post(server.url + "/v1/diff", content=body,
                           headers={"Content-Type": ctype}, timeout=60)
            statuses.append(r.status_code)

        import threading
        import time
        start = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(16)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        elapsed = time.monotonic() - start
        with open(f"/proc/{server.proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        assert sorted(statuses) == [413] * 16, statuses
        assert elapsed < 30, elapsed
        assert peak * 1024 < 2_000_000_000, peak  # nothing was decoded
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()


def test_sigterm_under_load_finishes_in_flight_requests_and_refuses_new_ones(tmp_path):
    import signal
    import threading
    import time

    from tests.e2e.conftest import Server

    server = Server(tmp_path, DF_CPU_WORKERS="1", DF_QUEUE_SIZE="4")
    # big enough that five take well over the 0.5 s before the signal on one worker
    noise = np.random.default_rng(5).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    files = upload(enc(255 - noise), {}, reference=enc(noise))
    outcomes: list[Any] = []
    try:
        server.wait_ready()

        def one() -> None:
            try:
                outcomes.append(httpx.post(server.url + "/v1/diff", timeout=60,
                                           **files).status_code)
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=one) for _ in range(5)]
        [t.start() for t in threads]
        time.sleep(0.5)  # all five in flight: one computing, four waiting
        server.proc.send_signal(signal.SIGTERM)
        in_flight = sum(t.is_alive() for t in threads)
        [t.join(60) for t in threads]
        assert in_flight >= 2, "the requests finished before the signal: nothing tested"
        assert outcomes == [200] * 5, (outcomes, server.log())
        with pytest.raises(httpx.ConnectError):  # a clean refusal, not a reset or an answer
            httpx.get(server.url + "/healthz", timeout=5)
        assert server.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    finally:
        server.stop()
