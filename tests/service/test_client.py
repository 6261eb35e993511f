"""The HTTP client against a stand-in service speaking the /v1/diff and /v1/compare contract.

The stand-in runs under uvicorn on a free local port (real HTTP). Its map is the
mean absolute difference of the decoded images, so what the client decodes can be
checked against numpy. It can answer 503/429 with Retry-After, and records how
many requests it had in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

import service.client as sc
from service.client import (
    AsyncClient,
    Client,
    ClientRequestError,
    DiffResult,
    ServerError,
    ServiceBusyError,
    ServiceConnectionError,
)
from tests.conftest import png as _png
from tests.e2e.conftest import free_port

PROBLEM = "application/problem+json"


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def _abs_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).mean(axis=2).astype(np.float32)


def _map_json(m: np.ndarray) -> dict:
    return {"dtype": "float32", "shape": list(m.shape),
            "data": base64.b64encode(m.astype("<f4").tobytes()).decode()}


def _problem(status: int, code: str, detail: str, **extra) -> JSONResponse:
    body = {"type": f"urn:difference-finder:problem:{code}", "title": code,
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def make_standin() -> FastAPI:
    app = FastAPI()
    st = app.state
    st.busy, st.busy_status, st.retry_after, st.busy_plain = 0, 503, "0", False
    st.delay, st.inflight, st.max_inflight, st.calls = 0.0, 0, 0, []
    st.lock = threading.Lock()
    st.images: dict[str, bytes] = {}

    async def image_bytes(obj) -> bytes:
        if isinstance(obj, dict) and "url" in obj:
            async with httpx.AsyncClient() as c:
                return (await c.get(obj["url"])).content
        return base64.b64decode(obj["data"])

    async def parse(request: Request, kind: str):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            ref = await form["reference"].read()
            if kind == "diff":
                cands = [await form["candidate"].read()]
            else:
                cands = [await f.read() for f in form.getlist("candidates")]
            cfg = json.loads(form["config"]) if "config" in form else {}
            labels = json.loads(form["labels"]) if "labels" in form else None
            baseline = form.get("baseline")
        else:
            body = await request.json()
            ref = await image_bytes(body["reference"])
            cands = ([await image_bytes(body["candidate"])] if kind == "diff"
                     else [await image_bytes(c) for c in body["candidates"]])
            cfg, labels, baseline = (body.get("config") or {}, body.get("labels"),
                                     body.get("baseline"))
        st.calls.append({"kind": kind, "content_type": ctype.split(";")[0],
                         "accept": request.headers.get("accept"), "config": cfg,
                         "auth": request.headers.get("authorization")})
        return ref, cands, cfg, labels, baseline

    async def gate():
        """Count in-flight requests; answer busy while st.busy > 0."""
        if st.busy > 0:
            st.busy -= 1
            if st.busy_plain:  # like a load balancer with no ready backend
                return Response("no healthy upstream", status_code=503)
            resp = _problem(st.busy_status, "queue-full", "the work queue is full")
            if st.retry_after is not None:
                resp.headers["Retry-After"] = st.retry_after
            return resp
        return None

    @app.get("/img/{name}")
    async def img(name: str):
        return Response(st.images[name], media_type="image/png")

    @app.post("/v1/diff")
    async def diff(request: Request):
        if (busy := await gate()) is not None:
            return busy
        with st.lock:
            st.inflight += 1
            st.max_inflight = max(st.max_inflight, st.inflight)
        try:
            ref, (cand,), cfg, _, _ = await parse(request, "diff")
            await asyncio.sleep(st.delay)
        finally:
            with st.lock:
                st.inflight -= 1
        metric = cfg.get("metric")
        metric = metric.get("name") if isinstance(metric, dict) else metric
        if metric == "nope":
            return _problem(422, "invalid-config", "unknown metric 'nope'",
                            errors=[{"loc": ["metric"], "msg": "unknown"}])
        if metric == "lpips":
            return _problem(503, "weights-missing", "alexnet-owt-7be5be79.pth is missing")
        a, b = _decode(ref), _decode(cand)
        if a.shape != b.shape:
            return _problem(422, "shape-mismatch", "image sizes differ")
        m = _abs_map(a, b)
        accept = request.headers.get("accept", "application/json")
        if accept == "application/x-npy":
            buf = io.BytesIO()
            np.save(buf, m)
            return Response(buf.getvalue(), media_type=accept)
        if accept == "image/png":
            buf = io.BytesIO()
            Image.fromarray((m * 255).astype(np.uint8)).save(buf, format="PNG")
            return Response(buf.getvalue(), media_type=accept)
        return {"map": _map_json(m), "metrics": {"mae": float(m.mean())},
                "regions": [{"x": 1, "y": 2, "width": 3, "height": 4, "score": 0.5}],
                "config": {"metric": "mae", **cfg}, "timing_ms": {"total": 1.0}}

    @app.post("/v1/compare")
    async def compare(request: Request):
        if (busy := await gate()) is not None:
            return busy
        ref, cands, cfg, labels, baseline = await parse(request, "compare")
        if request.headers.get("accept") == "application/pdf":
            dpi = request.query_params.get("dpi")
            return Response(f"%PDF-figure dpi={dpi}".encode(), media_type="application/pdf")
        labels = labels or [f"candidate{i}" for i in range(len(cands))]
        a = _decode(ref)
        maps = {lab: _abs_map(a, _decode(c)) for lab, c in zip(labels, cands, strict=True)}
        vmax = float(max(m.max() for m in maps.values()))
        improvement = []
        if baseline is not None:
            for lab, m in maps.items():
                if lab != baseline:
                    d = maps[baseline] - m
                    improvement.append({"label": lab, "map": _map_json(d),
                                        "improved_fraction": float((d > 0).mean()),
                                        "worsened_fraction": float((d < 0).mean())})
        return {"scale": {"vmin": 0.0, "vmax": vmax},
                "candidates": [{"label": lab, "map": _map_json(m),
                                "metrics": {"mae": float(m.mean())}, "regions": []}
                               for lab, m in maps.items()],
                "improvement": improvement, "config": cfg}

    return app


@pytest.fixture(scope="module")
def standin():
    import uvicorn

    app = make_standin()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "stand-in server did not start"
        time.sleep(0.02)
    app.state.url = f"http://127.0.0.1:{port}"
    yield app
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def svc(standin):
    """The stand-in with its behaviour reset for each test."""
    st = standin.state
    st.busy, st.busy_status, st.retry_after, st.delay = 0, 503, "0", 0.0
    st.busy_plain = False
    st.max_inflight = 0
    st.calls.clear()
    return standin


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the client's retry waits instead of sleeping them."""
    waits: list[float] = []
    monkeypatch.setattr(sc, "_sleep", waits.append)

    async def asleep(s: float) -> None:
        waits.append(s)

    monkeypatch.setattr(sc, "_asleep", asleep)
    return waits


def _images(seed: int, shape=(24, 32, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, shape, dtype=np.uint8),
            rng.integers(0, 256, shape, dtype=np.uint8))


def _expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _abs_map(a.astype(np.float32) / 255, b.astype(np.float32) / 255)


# --- results --------------------------------------------------------------------------


def test_diff_from_paths_decodes_the_map(svc, tmp_path):
    a, b = _images(0)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    with Client(svc.state.url) as c:
        res = c.diff(tmp_path / "a.png", str(tmp_path / "b.png"), config={"metric": "ssim"})
    assert isinstance(res, DiffResult)
    assert res.map.dtype == np.float32 and res.map.shape == (24, 32)
    np.testing.assert_array_equal(res.map, _expected(a, b))
    assert res.metrics["mae"] == pytest.approx(float(_expected(a, b).mean()))
    assert res.regions[0]["width"] == 3 and res.config["metric"] == "ssim"
    assert svc.state.calls[-1]["content_type"] == "multipart/form-data"
    assert svc.state.calls[-1]["config"] == {"metric": "ssim"}


def test_a_missing_file_is_named_before_anything_is_sent(svc, tmp_path):
    Image.fromarray(_images(0)[0]).save(tmp_path / "a.png")
    sent = len(svc.state.calls)
    with Client(svc.state.url) as c, pytest.raises(FileNotFoundError) as info:
        c.diff(tmp_path / "a.png", tmp_path / "missing.png")
    assert str(info.value) == f"{tmp_path / 'missing.png'}: no such file"
    assert len(svc.state.calls) == sent


def test_diff_from_arrays_bytes_pil_and_pipeline_config(svc):
    from core import PipelineConfig

    a, b = _images(1)
    with Client(svc.state.url) as c:
        r1 = c.diff(a, b)
        r2 = c.diff(_png(a), Image.fromarray(b), config=PipelineConfig(metric="psnr"))
    np.testing.assert_array_equal(r1.map, _expected(a, b))
    np.testing.assert_array_equal(r2.map, r1.map)
    sent = svc.state.calls[-1]["config"]  # what the model was told, not its defaults
    assert sent == PipelineConfig(metric="psnr").model_dump(mode="json", exclude_unset=True)
    assert PipelineConfig.model_validate(sent) == PipelineConfig(metric="psnr")


def test_url_inputs_use_the_json_form(svc):
    a, b = _images(2)
    svc.state.images.update({"a.png": _png(a)})
    with Client(svc.state.url) as c:
        res = c.diff(f"{svc.state.url}/img/a.png", b)
    np.testing.assert_array_equal(res.map, _expected(a, b))
    assert svc.state.calls[-1]["content_type"] == "application/json"


def test_png_and_npy_responses(svc):
    a, b = _images(3)
    with Client(svc.state.url) as c:
        npy = c.diff_npy(a, b)
        png = c.diff_png(a, b)
    np.testing.assert_array_equal(npy, _expected(a, b))
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (32, 24)
    assert [call["accept"] for call in svc.state.calls[-2:]] == ["application/x-npy",
                                                                 "image/png"]


def test_decode_map_checks_dtype_and_size():
    m = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sc.decode_map(_map_json(m)), m)
    # little-endian on the wire whatever the machine: big-endian bytes must not round-trip
    big = {"dtype": "float32", "shape": [2, 3],
           "data": base64.b64encode(m.astype(">f4").tobytes()).decode()}
    assert not np.array_equal(sc.decode_map(big), m)
    with pytest.raises(ValueError, match="24 bytes"):
        sc.decode_map({**_map_json(m), "shape": [3, 3]})
    with pytest.raises(ValueError, match="float64"):
        sc.decode_map({**_map_json(m), "dtype": "float64"})


def test_compare_multipart_and_json(svc):
    ref, c1 = _images(4)
    _, c2 = _images(5)
    with Client(svc.state.url) as c:
        res = c.compare(ref, [c1, c2], labels=["ours", "base"], baseline="base")
        svc.state.images["c2.png"] = _png(c2)
        res_json = c.compare(ref, [c1, f"{svc.state.url}/img/c2.png"], labels=["ours", "base"],
                             baseline="base")
    assert [x.label for x in res.candidates] == ["ours", "base"]
    np.testing.assert_array_equal(res["ours"].map, _expected(ref, c1))
    np.testing.assert_array_equal(res["base"].map, _expected(ref, c2))
    [imp] = res.improvement
    d = _expected(ref, c2) - _expected(ref, c1)
    assert imp.label == "ours"
    np.testing.assert_array_equal(imp.map, d)
    assert imp.improved_fraction == pytest.approx(float((d > 0).mean()))
    assert res.scale["vmax"] == pytest.approx(max(float(x.map.max()) for x in res.candidates))
    np.testing.assert_array_equal(res_json["base"].map, res["base"].map)
    assert svc.state.calls[-1]["content_type"] == "application/json"
    with pytest.raises(KeyError):
        res["missing"]
    with pytest.raises(ValueError, match="1 labels for 2 candidates"):
        Client(svc.state.url).compare(ref, [c1, c2], labels=["x"])


# --- errors and retries ---------------------------------------------------------------


def test_503_is_retried_honouring_retry_after_with_a_cap(svc, sleeps):
    a, b = _images(6)
    svc.state.busy, svc.state.retry_after = 2, "7"
    with Client(svc.state.url, max_retry_wait=30) as c:
        res = c.diff(a, b)
    np.testing.assert_array_equal(res.map, _expected(a, b))
    assert sleeps == [7.0, 7.0]

    sleeps.clear()
    svc.state.busy, svc.state.retry_after = 1, "3600"
    with Client(svc.state.url, max_retry_wait=2.5) as c:
        c.diff(a, b)
    assert sleeps == [2.5]


def test_429_with_http_date_and_backoff_without_header(svc, sleeps):
    a, b = _images(7)
    svc.state.busy, svc.state.busy_status = 1, 429
    svc.state.retry_after = time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                          time.gmtime(time.time() + 20))
    with Client(svc.state.url) as c:
        c.diff(a, b)
    assert len(sleeps) == 1 and 17 <= sleeps[0] <= 20

    sleeps.clear()
    svc.state.busy, svc.state.busy_plain = 3, True
    with Client(svc.state.url, backoff=0.5) as c:
        c.diff(a, b)
    assert sleeps == [0.5, 1.0, 2.0]


def test_503_problem_without_retry_after_is_not_retried(svc, sleeps):
    a, b = _images(12)
    svc.state.busy, svc.state.retry_after = 1, None
    with Client(svc.state.url) as c, pytest.raises(ServerError) as info:
        c.diff(a, b)
    assert sleeps == [] and info.value.code == "queue-full"
    assert not isinstance(info.value, ServiceBusyError)


def test_busy_after_all_retries_raises_with_the_problem(svc, sleeps):
    a, b = _images(8)
    svc.state.busy = 100
    with Client(svc.state.url, retries=3) as c, pytest.raises(ServiceBusyError) as info:
        c.diff(a, b)
    assert len(sleeps) == 3
    err = info.value
    assert err.status == 503 and err.code == "queue-full"
    assert err.detail == "the work queue is full" and "after 4 attempt(s)" in str(err)
    assert isinstance(err, ServerError)


def test_problem_errors_are_typed_and_not_retried(svc, sleeps):
    a, b = _images(9)
    with Client(svc.state.url) as c:
        with pytest.raises(ClientRequestError) as info:
            c.diff(a, b, config={"metric": "nope"})
        assert info.value.status == 422 and info.value.code == "invalid-config"
        assert info.value.problem["errors"][0]["loc"] == ["metric"]
        with pytest.raises(ServerError) as info:
            c.diff(a, b, config={"metric": "lpips"})
        assert info.value.code == "weights-missing" and "alexnet" in str(info.value)
        assert not isinstance(info.value, ServiceBusyError)
        with pytest.raises(ClientRequestError, match="image sizes differ"):
            c.diff(a, a[:10])
    assert sleeps == []


def test_unreachable_service(sleeps):
    with Client(f"http://127.0.0.1:{free_port()}", retries=2) as c:
        with pytest.raises(ServiceConnectionError, match="cannot reach"):
            c.diff(b"x", b"y")
        assert c.healthy() is False and c.ready() is False
    assert len(sleeps) == 2


def test_bad_inputs_are_refused_before_sending():
    c = Client("http://127.0.0.1:9")
    with pytest.raises(TypeError, match="uint8"):
        c.diff(np.zeros((4, 4), np.float32), b"x")
    with pytest.raises(TypeError, match="cannot send a dict"):
        c.diff({"a": 1}, b"x")


def test_api_key_is_sent(svc):
    a, b = _images(10)
    with Client(svc.state.url, api_key="s3cret") as c:
        c.diff(a, b)
    assert svc.state.calls[-1]["auth"] == "Bearer s3cret"


# --- many pairs -----------------------------------------------------------------------


def test_diff_many_bounded_concurrency_order_and_progress(svc, capsys):
    pairs = [_images(100 + i) for i in range(10)]
    svc.state.delay = 0.1
    with Client(svc.state.url) as c:
        results = c.diff_many(pairs, concurrency=3, progress=True)
    assert svc.state.max_inflight == 3
    for (a, b), res in zip(pairs, results, strict=True):
        np.testing.assert_array_equal(res.map, _expected(a, b))
    assert "10/10" in capsys.readouterr().err


def test_diff_many_errors_raise_or_come_back_in_place(svc, sleeps):
    a, b = _images(11)
    pairs = [(a, b), (a, a[:5]), (b, a)]
    with Client(svc.state.url) as c:
        results = c.diff_many(pairs, concurrency=2, progress=False, return_exceptions=True)
        assert isinstance(results[1], ClientRequestError)
        np.testing.assert_array_equal(results[2].map, _expected(b, a))
        with pytest.raises(ClientRequestError):
            c.diff_many(pairs, concurrency=2, progress=False)


def test_async_client_retries_and_bounds_concurrency(svc, sleeps, capsys):
    pairs = [_images(200 + i) for i in range(8)]

    async def main():
        async with AsyncClient(svc.state.url) as c:
            svc.state.busy, svc.state.retry_after = 1, "4"
            first = await c.diff(*pairs[0])
            svc.state.delay = 0.1
            many = await c.diff_many(pairs, concurrency=2)
            png = await c.diff_png(*pairs[0])
            npy = await c.diff_npy(*pairs[0])
            cmp = await c.compare(pairs[0][0], [pairs[0][1], pairs[1][1]], labels=["x", "y"])
            fig = await c.compare_figure(pairs[0][0], [pairs[0][1]], format="pdf", dpi=72)
            with pytest.raises(ClientRequestError):
                await c.diff(pairs[0][0], pairs[0][0][:3])
            return first, many, png, npy, cmp, fig

    first, many, png, npy, cmp, fig = asyncio.run(main())
    assert fig == b"%PDF-figure dpi=72"
    assert sleeps == [4.0]
    np.testing.assert_array_equal(first.map, _expected(*pairs[0]))
    assert svc.state.max_inflight == 2
    for (a, b), res in zip(pairs, many, strict=True):
        np.testing.assert_array_equal(res.map, _expected(a, b))
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(npy, first.map)
    np.testing.assert_array_equal(cmp["y"].map, _expected(pairs[0][0], pairs[1][1]))
    assert "8/8" in capsys.readouterr().err


# --- packaging and the CLI ------------------------------------------------------------


def test_client_imports_without_fastapi_or_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'starlette', 'torch', 'uvicorn'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from service.client import Client, AsyncClient\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_diff_server_pair_and_directories(svc, tmp_path, capsys):
    from cli import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    arrays = {}
    for i, name in enumerate(["x", "y", "z"]):
        a, b = _images(300 + i)
        arrays[name] = (a, b)
        Image.fromarray(a).save(tmp_path / "a" / f"{name}.png")
        Image.fromarray(b).save(tmp_path / "b" / f"{name}.png")

    rc = main(["diff", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
               "--server", svc.state.url, "--metric", "ssim", "-o", str(tmp_path / "x.png"),
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shape"] == [24, 32] and out["candidate"].endswith("x.png")
    assert out["metrics"]["mae"] == pytest.approx(float(_expected(*arrays["x"]).mean()))
    assert Image.open(tmp_path / "x.png").size == (32, 24)
    assert svc.state.calls[-1]["config"]["metric"]["name"] == "ssim"

    rc = main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--server", svc.state.url,
               "-q", "-o", str(tmp_path / "maps"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(p["reference"]).stem for p in out["pairs"]] == ["x", "y", "z"]
    for p in out["pairs"]:
        name = Path(p["reference"]).stem
        assert p["metrics"]["mae"] == pytest.approx(float(_expected(*arrays[name]).mean()))
    assert sorted(f.name for f in (tmp_path / "maps").iterdir()) == ["x.png", "y.png", "z.png"]

    rc = main(["diff", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
               "--server", svc.state.url, "--metric", "lpips"])
    assert rc == 1
    assert "HTTP 503: alexnet-owt-7be5be79.pth is missing" in capsys.readouterr().err


def test_cli_names_its_key_variable_on_a_401(tmp_path, capsys, monkeypatch):
    import service.client as client_module
    from cli.main import main

    class Refusing(Client):
        def diff(self, *args, **kwargs):
            raise client_module.ClientRequestError("HTTP 401: this server needs an API key",
                                                   status=401)

    monkeypatch.setattr(client_module, "Client", Refusing)
    for name in ("a.png", "b.png"):
        Image.fromarray(_images(0)[0]).save(tmp_path / name)
    args = ["diff", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--server",
            "http://127.0.0.1:9", "-q"]
    monkeypatch.delenv("DF_API_KEY", raising=False)
    assert main(args) == 1
    assert "(set DF_API_KEY to the server's key)" in capsys.readouterr().err
    monkeypatch.setenv("DF_API_KEY", "wrong")
    assert main(args) == 1
    assert "(the CLI sends DF_API_KEY as the key)" in capsys.readouterr().err


# --- against the real service -----------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """`python -m service` on a free port: two CPU workers (as two GPUs would be), no LPIPS
    weights."""
    from tests.e2e.conftest import running

    with running(tmp_path_factory.mktemp("server-logs"), DF_DEVICES="cpu:0,cpu:1",
                 DF_QUEUE_SIZE="8", DF_TORCH_THREADS="1",
                 TORCH_HOME=str(tmp_path_factory.mktemp("empty_torch_home"))) as server:
        yield server.url


def _photo_pair(astronaut: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ref = astronaut[100 + seed: 164 + seed, 180:260].copy()
    noise = np.random.default_rng(seed).integers(-30, 31, ref.shape)
    return ref, np.clip(ref.astype(int) + noise, 0, 255).astype(np.uint8)


def test_real_service_maps_match_the_library(real_server, astronaut, sleeps):
    from core import Finder

    config = {"metric": "ssim", "post_processor": [{"name": "smooth", "sigma": 1.0}]}
    pairs = [_photo_pair(astronaut, s) for s in range(4)]
    with Client(real_server) as c:
        res = c.diff(*pairs[0], config=config, metrics=True)  # the configured SSIM
        # the default, no metric named beside the metric-free default strategy: cheap scores
        cheap = c.diff(*pairs[0], config={"post_processor": config["post_processor"]})
        many = c.diff_many(pairs, config, concurrency=2, progress=False)
        npy = c.diff_npy(*pairs[0], config=config)
        caps = c.capabilities()
        with pytest.raises(ServerError) as info:
            c.diff(*pairs[0], config={"metric": "lpips"}, metrics=["lpips"])
        with pytest.raises(ClientRequestError) as bad:
            c.diff(*pairs[0], config={"post_processor": [{"name": "smooth", "sigma": -1}]})
    local = Finder(**config, device="cpu").analyze(*pairs[0], metrics=True)[0]
    assert res.map.shape == (64, 80)
    np.testing.assert_allclose(res.map, local.map, rtol=1e-5, atol=1e-6)
    assert set(res.metrics) == {"ssim"}
    assert res.metrics["ssim"] == pytest.approx(local.metrics["ssim"], rel=1e-5)
    assert set(cheap.metrics) == {"mse", "psnr"}
    assert res.regions == [r.to_dict() for r in local.regions]
    assert res.summary == local.summary
    np.testing.assert_array_equal(npy, res.map)
    for (a, b), r in zip(pairs, many, strict=True):
        np.testing.assert_allclose(
            r.map, Finder(**config, device="cpu").analyze(a, b)[0].map, rtol=1e-5, atol=1e-6)
    assert "ssim" in str(caps)
    assert info.value.status == 503 and info.value.code == "weights-missing"
    assert not isinstance(info.value, ServiceBusyError)
    assert bad.value.status == 422 and "sigma" in json.dumps(bad.value.problem)
    assert sleeps == []  # neither answer was worth retrying


def test_real_service_cli_server_matches_local(real_server, astronaut, tmp_path, capsys):
    from cli import main

    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    for s in range(2):
        ref, cand = _photo_pair(astronaut, s)
        Image.fromarray(ref).save(tmp_path / "a" / f"p{s}.png")
        Image.fromarray(cand).save(tmp_path / "b" / f"p{s}.png")
    common = [str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "psnr", "-q", "--json",
              "--metrics", "psnr,ssim"]
    assert main(["diff", *common, "--device", "cpu"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["diff", *common, "--server", real_server]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert [p["reference"] for p in remote["pairs"]] == [p["reference"] for p in local["pairs"]]
    for lp, rp in zip(local["pairs"], remote["pairs"], strict=True):
        assert set(rp["metrics"]) == set(lp["metrics"]) == {"psnr", "ssim"}
        assert rp["metrics"]["psnr"] == pytest.approx(lp["metrics"]["psnr"], rel=1e-5)
        assert rp["metrics"]["ssim"] == pytest.approx(lp["metrics"]["ssim"], rel=1e-5)
        assert rp["summary"] == lp["summary"]
        assert rp["shape"] == lp["shape"]
        assert [r["x"] for r in rp["regions"]] == [r["x"] for r in lp["regions"]]


def test_real_service_compare_matches_the_library(real_server, astronaut):
    from core.compare import compare

    ref, ours = _photo_pair(astronaut, 0)
    _, base = _photo_pair(astronaut, 5)
    base = np.clip(base.astype(int) + 20, 0, 255).astype(np.uint8)  # clearly worse
    ref_b = ref  # the same reference for both
    # raw difference maps: their improvement measures closeness (a calibrated map rescales
    # each pair on its own)
    config = {"strategy": "difference", "metric": "mse"}
    with Client(real_server) as c:
        res = c.compare(ref_b, [ours, base], labels=["ours", "base"], baseline="base",
                        config=config)
        png = c.compare_figure(ref_b, [ours, base], labels=["ours", "base"], dpi=50)
        svg = c.compare_figure(ref_b, [ours], format="svg", insets=0)
        with pytest.raises(ClientRequestError) as bad:
            c.compare(ref_b, [ours, base], labels=["ours", "base"], baseline="nope")
    local = compare(ref_b, [ours, base], ["ours", "base"], "base", config, device="cpu")
    assert [x.label for x in res.candidates] == ["ours", "base"]
    for got, want in zip(res.candidates, local.candidates, strict=True):
        np.testing.assert_allclose(got.map, want.map, rtol=1e-5, atol=1e-7)
        assert got.metrics["psnr"] == pytest.approx(want.metrics["psnr"], rel=1e-5)
        assert got.summary == want.summary != ""
    assert (res.scale["vmin"], res.scale["vmax"]) == pytest.approx(local.scale, rel=1e-5)
    [imp] = res.improvement
    assert imp.label == "ours" and res.baseline == "base"
    np.testing.assert_allclose(imp.map, local.improvement[0].map, rtol=1e-5, atol=1e-7)
    assert imp.improved_fraction == pytest.approx(local.improvement[0].improved_fraction)
    assert imp.improved_fraction > imp.worsened_fraction
    assert png.startswith(b"\x89PNG") and b"<svg" in svg[:2000]
    assert bad.value.status == 422 and "nope" in str(bad.value)
    with pytest.raises(ValueError, match="figure format"):
        Client(real_server).compare_figure(ref_b, [ours], format="gif")


def test_real_service_two_workers_both_serve(real_server, astronaut):
    """One worker per device: with two (CPU) devices, concurrent work reaches both."""
    pairs = [_photo_pair(astronaut, s) for s in range(12)]
    config = {"metric": "ssim", "post_processor": [{"name": "smooth", "sigma": 2.0}]}
    with Client(real_server) as c:
        workers = httpx.get(f"{real_server}/readyz").json()["workers"]
        assert [w["device"] for w in workers] == ["cpu:0", "cpu:1"]
        results = c.diff_many(pairs, config, concurrency=4, progress=False)
        assert len(results) == 12
        text = httpx.get(f"{real_server}/metrics").text
    jobs: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'df_worker_jobs_total\{(.*)\} ([0-9.e+]+)$', line)
        if m and 'outcome="ok"' in m.group(1):
            device = re.search(r'device="([^"]+)"', m.group(1)).group(1)
            jobs[device] = jobs.get(device, 0) + float(m.group(2))
    assert set(jobs) == {"cpu:0", "cpu:1"}, text
    assert all(n >= 1 for n in jobs.values()) and sum(jobs.values()) >= 12
