"""End-to-end: the real server (uvicorn in a subprocess, loopback) spoken to over HTTP."""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from core import Finder
from tests.conftest import png

from .conftest import Server


def decode_map(payload: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["data"]), "<f4").reshape(payload["shape"])


def files(photo_png: dict[str, bytes], ref: str = "ref", cand: str = "cand") -> dict:
    return {"reference": (f"{ref}.png", photo_png[ref], "image/png"),
            "candidate": (f"{cand}.png", photo_png[cand], "image/png")}


@pytest.fixture(scope="module")
def server(lpips_home, tmp_path_factory) -> Iterator[Server]:
    """The service with LPIPS alex preloaded from stand-in weights in TORCH_HOME."""
    s = Server(tmp_path_factory.mktemp("logs"), DF_PRELOAD="alex", DF_WARMUP_SIZE="256",
               TORCH_HOME=str(lpips_home))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
        assert "Application shutdown complete" in s.log(), s.log()


def test_readiness_before_and_after_warmup(server):
    first, last = server.readiness[0], server.readiness[-1]
    assert first.status_code == 503, "readiness answered 200 before warm-up finished"
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["code"] == "not-ready"
    statuses = [r.status_code for r in server.readiness]
    assert statuses == sorted(statuses, reverse=True)  # 503 ... 503, 200: never back
    assert last.status_code == 200
    assert last.json()["models"] == {"alex@cpu": "loaded"}
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    head = httpx.head(server.url + "/readyz")  # a load balancer's probe: status, no body
    assert head.status_code == 200 and head.content == b""
    metrics = httpx.get(server.url + "/metrics").text
    load = [line for line in metrics.splitlines()
            if line.startswith('df_model_load_seconds{device="cpu",net="alex"}')]
    assert load and float(load[0].split()[-1]) > 0


def test_multipart_json(server, photos, photo_png):
    r = httpx.post(server.url + "/v1/diff", files=files(photo_png), data={"metrics": "ssim"},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    expected = Finder(device="cpu").analyze(photos["ref"], photos["cand"], metrics=["ssim"])[0]
    np.testing.assert_allclose(decode_map(body["map"]), expected.map, rtol=1e-5, atol=1e-6)
    assert set(body["metrics"]) == {"ssim"}
    assert body["metrics"]["ssim"] == pytest.approx(expected.metrics["ssim"], rel=1e-5)
    assert body["summary"] == expected.summary != "no significant difference found"
    top = body["regions"][0]
    assert top["x"] <= 200 < 280 <= top["x"] + top["width"]
    assert top["y"] <= 100 < 160 <= top["y"] + top["height"]


def test_json_with_base64(server, photo_png):
    config = {"metric": "psnr", "post_processor": [{"name": "smooth", "sigma": 2.0}]}
    as_json = httpx.post(server.url + "/v1/diff", timeout=60, json={
        "reference": {"data": base64.b64encode(photo_png["ref_small"]).decode()},
        "candidate": {"data": base64.b64encode(photo_png["cand_small"]).decode()},
        "config": config}).json()
    multipart = httpx.post(server.url + "/v1/diff", timeout=60,
                           files=files(photo_png, "ref_small", "cand_small"),
                           data={"config": json.dumps(config)}).json()
    np.testing.assert_array_equal(decode_map(as_json["map"]), decode_map(multipart["map"]))
    assert as_json["metrics"] == multipart["metrics"]
    assert as_json["config"]["post_processor"] == [{"name": "smooth", "sigma": 2.0}]


def test_three_response_types(server, photo_png):
    def post(accept: str, config: dict | None = None) -> httpx.Response:
        r = httpx.post(server.url + "/v1/diff", files=files(photo_png, "ref_small", "cand_small"),
                       data={"config": json.dumps(config or {})}, headers={"accept": accept},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == accept
        return r

    m = decode_map(post("application/json").json()["map"])
    arr = np.load(io.BytesIO(post("application/x-npy").content), allow_pickle=False)
    np.testing.assert_array_equal(arr, m)
    heat = Image.open(io.BytesIO(post("image/png").content))
    assert heat.format == "PNG" and heat.size == (256, 256)
    with_bar = Image.open(io.BytesIO(post("image/png", {"render": {"colorbar": True}}).content))
    assert with_bar.height == 256 and with_bar.width > 256


def test_lpips_with_standin_weights(server, photo_png):
    r = httpx.post(server.url + "/v1/diff", files=files(photo_png, "ref_small", "cand_small"),
                   data={"config": '{"metric": {"name": "lpips", "net": "alex"}}',
                         "metrics": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["metrics"]["lpips"] > 0


def test_problems_over_http(server, photo_png):
    r = httpx.post(server.url + "/v1/diff", files=files(photo_png, "ref", "cand_small"))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "shape-mismatch"
    r = httpx.post(server.url + "/v1/diff", files=files(photo_png),
                   data={"config": '{"regions": {"max_regions": -1}}'})
    assert r.json()["errors"][0]["pointer"] == "#/config/regions/max_regions"


def test_url_input_with_the_policy_opened(server, start_server, site, photo_png):
    body = {"reference": {"url": site.url + "/ref_small.png"},
            "candidate": {"url": site.url + "/cand_small.png"}}
    # the default policy refuses loopback URLs without contacting them
    r = httpx.post(server.url + "/v1/diff", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["code"] == "url-refused"
    assert site.hits == []
    opened = start_server(DF_ALLOW_PRIVATE_URLS="true")
    opened.wait_ready()
    r = httpx.post(opened.url + "/v1/diff", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert sorted(site.hits) == ["/cand_small.png", "/ref_small.png"]
    inline = httpx.post(server.url + "/v1/diff", timeout=60,
                        files=files(photo_png, "ref_small", "cand_small")).json()
    np.testing.assert_array_equal(decode_map(r.json()["map"]), decode_map(inline["map"]))


SLOW = json.dumps({"strategy": "gradient", "metric": "ssim"})  # ~35 ms at 512x512 alone


def test_full_queue_gives_503_at_once(start_server, photo_png):
    s = start_server(DF_QUEUE_SIZE="1", DF_CPU_WORKERS="1")  # 1 computing + 1 waiting
    s.wait_ready()

    def post(_: int) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        r = httpx.post(s.url + "/v1/diff", files=files(photo_png), data={"config": SLOW},
                       timeout=60)
        return r, time.monotonic() - start

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    statuses = sorted(r.status_code for r, _ in results)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2
    slowest_ok = max(t for r, t in results if r.status_code == 200)
    for r, took in results:
        if r.status_code == 503:
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["code"] == "queue-full"
            assert int(r.headers["retry-after"]) >= 1
            assert took < slowest_ok
    assert httpx.post(s.url + "/v1/diff", files=files(photo_png), timeout=60).status_code == 200
    text = httpx.get(s.url + "/metrics").text
    assert f'df_requests_rejected_total{{reason="queue_full"}} {statuses.count(503)}.0' in text


def _raw_multipart(photo_png: dict[str, bytes], port: int) -> bytes:
    req = httpx.Request("POST", f"http://127.0.0.1:{port}/v1/diff", files=files(photo_png),
                        data={"config": SLOW})
    body = req.read()
    head = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
    return f"POST /v1/diff HTTP/1.1\r\n{head}\r\n".encode() + body


def test_work_of_a_departed_client_is_dropped(start_server, photos, photo_png):
    s = start_server(DF_QUEUE_SIZE="4", DF_CPU_WORKERS="1")
    s.wait_ready()
    # the blocker must still be computing when the departed request is queued behind it: a
    # 1536² pair (~0.3 s of SLOW work; a 512² one took ~35 ms, so the second one could start
    # before its client left)
    big = {k: png(np.tile(photos[k], (3, 3, 1))) for k in ("ref", "cand")}
    blocker = threading.Thread(target=lambda: httpx.post(
        s.url + "/v1/diff", files=files(big), data={"config": SLOW}, timeout=60))
    blocker.start()
    time.sleep(0.1)
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(_raw_multipart(photo_png, s.port))
        time.sleep(0.1)  # decoded and queued behind the blocker
    blocker.join()
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(s.url + "/metrics").text
        if 'df_requests_rejected_total{reason="disconnected"} 1.0' in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    # only the blocker ran
    assert 'df_worker_jobs_total{device="cpu",outcome="ok",worker="0"} 1.0' in text
    assert httpx.get(s.url + "/readyz").status_code == 200


def in_flight(s, photo_png) -> tuple[threading.Thread, dict[str, httpx.Response]]:
    """A slow diff started on a thread and given 0.15 s to be in flight; its answer lands
    in the dict under "r"."""
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
        s.url + "/v1/diff", files=files(photo_png), data={"config": SLOW}, timeout=60)))
    t.start()
    time.sleep(0.15)
    return t, result


def test_readyz_is_503_while_the_server_drains_after_sigterm(start_server, photo_png):
    """SIGTERM turns /readyz to 503 at once; for DF_SHUTDOWN_DELAY the server still accepts
    and serves (liveness and computing), so a balancer polling /readyz leaves first; then
    new connections are refused cleanly, the in-flight request finishes, the process
    exits."""
    s = start_server(DF_SHUTDOWN_DELAY="3", DF_CPU_WORKERS="1")
    s.wait_ready()
    t, result = in_flight(s, photo_png)
    signalled = time.monotonic()
    s.proc.terminate()
    seen = []
    while time.monotonic() - signalled < 1.5:
        r = httpx.get(s.url + "/readyz", timeout=5)  # a new connection each time
        seen.append(r.status_code)
        if r.status_code == 503:
            break
        time.sleep(0.02)
    assert seen[-1] == 503, seen
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not-ready" and "shutting down" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert httpx.get(s.url + "/healthz", timeout=5).status_code == 200
    late = httpx.post(s.url + "/v1/diff", files=files(photo_png, "ref_small", "cand_small"),
                      timeout=60)
    assert late.status_code == 200, late.text
    assert time.monotonic() - signalled < 3, "the checks above ran after the delay"
    t.join(60)
    assert result["r"].status_code == 200
    assert s.proc.wait(30) in (0, -signal.SIGTERM)
    assert time.monotonic() - signalled >= 3  # it waited the delay out
    assert "Application shutdown complete" in s.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/healthz", timeout=2)


def test_sigterm_finishes_in_flight_work(start_server, photo_png):
    s = start_server(DF_SHUTDOWN_TIMEOUT="30")
    s.wait_ready()
    t, result = in_flight(s, photo_png)
    s.proc.terminate()
    t.join(60)
    assert result["r"].status_code == 200
    # uvicorn re-raises the signal after its graceful shutdown: killed by SIGTERM, cleanly
    assert s.proc.wait(30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in s.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(s.url + "/healthz", timeout=2)
