"""Overload, in process: admission by the memory budget (413 naming both numbers, 503 with
Retry-After when it is taken, released after the answer), image headers read without
decoding, abandoned work stopped at its next step, 503 when the wait is predictably
longer than the deadline."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from core import PipelineConfig
from core.finder import check_cancel
from core.images import Limits
from service.app import create_app
from service.budget import (
    FACTORS,
    LPIPS_FACTOR,
    MARGIN,
    MemoryBudget,
    factor_for,
    memory_limit,
    peek_header,
)
from service.errors import DeadlineExceeded, WaitTooLong
from service.prometheus import Metrics
from service.settings import Settings
from service.workers import WorkerPool, cancel_check


def png(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(a)
    (img.convert(mode) if mode else img).save(buf, format="PNG")
    return buf.getvalue()


RNG = np.random.default_rng(3)
SMALL = RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8)


def upload(a: np.ndarray, b: np.ndarray, config: str = "{}") -> dict:
    return {"files": {"reference": ("a.png", png(a)), "candidate": ("b.png", png(b))},
            "data": {"config": config}}


# --- headers and the estimate -----------------------------------------------------------


@pytest.mark.parametrize("mode, channels", [("L", 1), ("LA", 1), ("RGB", 3), ("RGBA", 3),
                                            ("P", 3), ("I;16", 1)])
def test_header_gives_size_and_computed_channels_without_decoding(mode, channels):
    data = png(SMALL, mode if mode != "I;16" else None) if mode != "I;16" else _png16()
    header = peek_header(data)
    decoded = Image.open(io.BytesIO(data))
    assert (header.width, header.height) == decoded.size
    assert header.channels == channels
    assert header.units == decoded.size[0] * decoded.size[1] * channels * 4


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 65535, (64, 80), dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_header_of_no_image_is_none():
    assert peek_header(b"<html>not an image</html>") is None


def test_a_header_past_pillows_guard_is_reserved_when_the_limit_allows_it():
    """DF_MAX_PIXELS above Pillow's ~89 MP guard: the budget sees the image decoding will
    decode (it used to get no header, so nothing was reserved for it); without that limit
    there is no header, as decoding refuses the image."""
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG")  # 100 MP, a small file
    header = peek_header(buf.getvalue(), Limits(max_pixels=200_000_000))
    assert header is not None and header.units == 10_000 * 10_000 * 4
    assert peek_header(buf.getvalue()) is None


def test_factors_are_per_strategy_and_metric_and_unknown_ones_get_the_largest():
    ssim = factor_for(PipelineConfig.model_validate({"strategy": "difference", "metric": "ssim"}))
    mse = factor_for(PipelineConfig.model_validate({"strategy": "difference", "metric": "mse"}))
    assert ssim > mse > 1
    assert factor_for(None) >= max(FACTORS.values())


def test_the_factor_follows_the_scores_a_request_computes():
    """The default answer (the significance map with MSE/PSNR) is sized as such; the same
    map with SSIM's score named, in the pipeline or in ``metrics``, needs ~4x (measured by
    benchmarks/memory_factors.py: under the map's factor, 6 concurrent 2048² SSIM requests
    took 2.1-2.5 GB of a 1.4 GB budget, benchmarks/load.py big); annotation routes compute
    no score; a computed LPIPS score gets LPIPS's factor."""
    default = factor_for(PipelineConfig())
    assert default == pytest.approx(FACTORS["significance/mse"] * MARGIN)
    named = factor_for(PipelineConfig(metric="ssim"))
    assert named == factor_for(PipelineConfig(), metrics=["ssim"]) > 3 * default
    assert factor_for(PipelineConfig(metric="ssim"), metrics=False) == default
    assert factor_for(PipelineConfig(), metrics=["psnr", "lpips"]) == LPIPS_FACTOR * MARGIN
    # a strategy that uses its metric pays for it whatever the scores
    gradient = PipelineConfig(strategy="gradient", metric="ssim")
    assert factor_for(gradient, metrics=False) == FACTORS["gradient/ssim"] * MARGIN


def test_memory_limit_is_at_most_the_machine():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < memory_limit() <= total


# --- the budget through the API ---------------------------------------------------------


def test_a_request_larger_than_the_whole_budget_is_413_naming_both_numbers():
    budget = 1_000_000
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=budget))) as client:
        big = np.zeros((400, 400, 3), np.uint8)
        r = client.post("/v1/diff", **upload(big, big))
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["code"] == "over-memory-budget"
        assert body["budget_bytes"] == budget and body["needed_bytes"] > budget
        assert str(budget) in body["detail"] and str(body["needed_bytes"]) in body["detail"]
        one = int(400 * 400 * 3 * 4 * factor_for(PipelineConfig()))
        assert body["needed_bytes"] == 2 * one  # the whole request, not its first image
        assert client.app.state.df.budget.reserved == 0
        import base64  # the same as inline JSON images
        inline = {"data": base64.b64encode(png(big)).decode()}
        r = client.post("/v1/diff", json={"reference": inline, "candidate": inline})
        assert r.status_code == 413 and r.json()["needed_bytes"] == 2 * one, r.text


def test_a_taken_budget_is_503_with_retry_after_and_freed_after_each_answer():
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=50_000_000))) as client:
        state = client.app.state.df
        r = client.post("/v1/diff", **upload(SMALL, 255 - SMALL))
        assert r.status_code == 200 and state.budget.reserved == 0
        state.budget.reserve(state.budget.total - 1000, 1)  # another request holds it
        r = client.post("/v1/diff", **upload(SMALL, 255 - SMALL))
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "memory-full" and int(r.headers["retry-after"]) >= 1
        state.budget.release(state.budget.total - 1000)
        assert client.post("/v1/diff", **upload(SMALL, 255 - SMALL)).status_code == 200
        ready = client.get("/readyz").json()["memory"][0]
        assert ready == {"device": "host", "budget_bytes": 50_000_000, "reserved_bytes": 0}
        caps = client.get("/v1/capabilities").json()["memory"][0]
        assert caps["budget_bytes"] == 50_000_000
        metrics = client.get("/metrics").text
        assert 'df_memory_budget_bytes{device="host"} 5e+07' in metrics
        assert 'df_requests_rejected_total{reason="memory_full"} 1.0' in metrics


def test_a_budget_refusal_does_not_wait_behind_other_requests_decodes():
    """Headers are read apart from the decoding pool: with every decoding thread busy (other
    requests' big images), a request that does not fit the budget is refused at once."""
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1, io_threads=2,
                                        memory_budget=50_000_000))) as client:
        state = client.app.state.df
        release = threading.Event()
        busy = [state.executor.submit(release.wait, 30) for _ in range(2)]
        try:
            state.budget.reserve(state.budget.total - 1000, 1)  # another request holds it
            t0 = time.monotonic()
            r = client.post("/v1/diff", **upload(SMALL, 255 - SMALL))
            waited = time.monotonic() - t0
            assert r.status_code == 503 and r.json()["code"] == "memory-full", r.text
            assert waited < 5.0, f"the refusal waited {waited:.1f} s for a decoding thread"
            assert not any(f.done() for f in busy)  # the decoding pool was busy all along
        finally:
            release.set()
            state.budget.release(state.budget.total - 1000)


def test_json_inline_images_are_reserved_too():
    import base64
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=100_000))) as client:
        data = base64.b64encode(png(np.zeros((300, 300), np.uint8))).decode()
        r = client.post("/v1/diff", json={"reference": {"data": data},
                                          "candidate": {"data": data}})
        assert r.status_code == 413 and r.json()["code"] == "over-memory-budget"


def test_a_host_budget_reservation_is_thread_safe():
    budget = MemoryBudget(1000, "host", Metrics())
    taken: list[bool] = []

    def take() -> None:
        try:
            budget.reserve(10, 1)
            taken.append(True)
        except Exception:
            taken.append(False)

    threads = [threading.Thread(target=take) for _ in range(200)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert taken.count(True) == 100 and budget.reserved == 1000


def test_freed_memory_is_given_back_before_it_and_the_reserved_exceed_the_budget():
    """Released reservations count as memory the allocator may still hold: the reservation
    that would bring reserved + retained over the budget is told to trim first, once; a
    roomy budget never is (no trims between the jobs of a burst)."""
    budget = MemoryBudget(3000, "host", Metrics())
    assert budget.reserve(1200, 1) is False
    budget.release(1200)
    assert budget.reserve(1200, 1) is False  # 1200 + 1200 retained <= 3000
    budget.release(1200)
    assert budget.reserve(1200, 1) is True  # 1200 + 2400 retained > 3000: trim first
    assert budget.retained == 0 and budget.reserved == 1200
    budget.release(1200)
    assert budget.reserve(1200, 1) is False
    roomy = MemoryBudget(10**9, "host", Metrics())
    for _ in range(100):
        assert roomy.reserve(1200, 1) is False
        roomy.release(1200)


def test_a_request_is_413_once_its_known_images_exceed_the_budget_even_while_it_is_taken():
    """Images are counted as their headers arrive: the request whose known images already
    need more than the whole budget is 413 (not 503 to retry forever), even when other
    requests hold the budget, and nothing of it is taken."""
    from service.budget import ImageHeader, Reservation
    from service.errors import OverMemoryBudget

    budget = MemoryBudget(3000, "host", Metrics())
    budget.reserve(2000, 1)  # another request holds most of it
    r = Reservation(budget)
    one = ImageHeader(width=10, height=10, channels=1)
    r.factor = 1600 / one.units  # each image of this request needs 1600 bytes
    r.add(one)  # 1600: could fit, once the budget is free
    with pytest.raises(OverMemoryBudget) as info:
        r.add(one)  # 3200 > 3000
    assert info.value.status == 413 and info.value.extra["needed_bytes"] == 3200
    assert budget.reserved == 2000 and r.nbytes == 0
    with pytest.raises(OverMemoryBudget):  # refused for good
        r.take()


def test_a_request_is_taken_whole_or_not_at_all():
    """The whole estimate is taken in one step: 503 naming the whole need when it does not
    fit now, and no part of it held; taken once it fits, released together."""
    from service.budget import ImageHeader, Reservation
    from service.errors import MemoryFull

    budget = MemoryBudget(3000, "host", Metrics())
    budget.reserve(1500, 1)  # another request
    r = Reservation(budget)
    one = ImageHeader(width=10, height=10, channels=1)
    r.factor = 1000 / one.units
    r.add(one)
    r.add(one)  # 2000: fits the budget, not what is left of it
    with pytest.raises(MemoryFull) as info:
        r.take()
    assert info.value.status == 503 and info.value.extra["needed_bytes"] == 2000
    assert budget.reserved == 1500 and r.nbytes == 0
    budget.release(1500)
    fresh = Reservation(budget)
    fresh.factor = r.factor
    fresh.add(one)
    fresh.add(one)
    fresh.take()
    assert budget.reserved == 2000 == fresh.nbytes
    fresh.release()
    assert budget.reserved == 0


def _need(shapes: list[tuple[int, ...]], route: str = "diff") -> int:
    """The request's estimate, worked out from the images' shapes and the factor."""
    factor = factor_for(PipelineConfig(), route)
    return sum(int(h * w * (c[0] if c else 1) * 4 * factor) for h, w, *c in shapes)


def compare_upload(reference: np.ndarray, candidates: list[np.ndarray]) -> dict:
    return {"files": [("reference", ("ref.png", png(reference))),
                      *(("candidates", (f"c{i}.png", png(c))) for i, c in enumerate(candidates))]}


def test_compare_is_413_from_all_its_images_when_each_alone_would_fit(monkeypatch):
    """Reference and every candidate count: a compare whose images together exceed the
    budget is 413 naming the whole estimate and the budget, though any one image fits;
    nothing is decoded."""
    import service.images

    decoded: list[str] = []
    real = service.images.decode_image
    monkeypatch.setattr(service.images, "decode_image",
                        lambda data, **kw: decoded.append(kw["what"]) or real(data, **kw))
    images = [SMALL, *(np.roll(SMALL, k, axis=1) for k in (1, 2, 3))]
    need = _need([a.shape for a in images], "compare")
    budget = need - 1  # three of the four fit
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=budget))) as client:
        r = client.post("/v1/compare", **compare_upload(images[0], images[1:]))
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["code"] == "over-memory-budget"
        assert (body["needed_bytes"], body["budget_bytes"]) == (need, budget)
        assert str(need) in body["detail"] and str(budget) in body["detail"]
        assert decoded == [] and client.app.state.df.budget.reserved == 0
        client.app.state.df.budget.total = need  # now the request just fits
        r = client.post("/v1/compare", **compare_upload(images[0], images[1:]))
        assert r.status_code == 200, r.text
        assert len(decoded) == 4 and client.app.state.df.budget.reserved == 0


def test_a_request_that_does_not_fit_now_is_503_at_once_holding_nothing(monkeypatch):
    """Budget for the whole request exists but others hold part of it: 503 with Retry-After
    naming the whole estimate (both images of the pair), nothing decoded, nothing held."""
    import service.images

    decoded: list[str] = []
    real = service.images.decode_image
    monkeypatch.setattr(service.images, "decode_image",
                        lambda data, **kw: decoded.append(kw["what"]) or real(data, **kw))
    need = _need([SMALL.shape, SMALL.shape])
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                        memory_budget=3 * need))) as client:
        budget = client.app.state.df.budget
        budget.reserve(2 * need + need // 2, 1)  # room for one image of the pair, not two
        start = time.monotonic()
        r = client.post("/v1/diff", **upload(SMALL, 255 - SMALL))
        assert time.monotonic() - start < 5
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "memory-full" and int(r.headers["retry-after"]) >= 1
        assert r.json()["needed_bytes"] == need
        assert decoded == [] and budget.reserved == 2 * need + need // 2


def test_a_url_image_is_not_awaited_once_the_known_images_exceed_the_budget():
    """The inline reference alone is over budget: 413 at once, the candidate's slow URL is
    not waited for (its fetch is cancelled)."""
    import base64
    import http.server

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(8)
            self.send_response(404)
            self.end_headers()

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    site.daemon_threads = True
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        big = np.zeros((300, 300), np.uint8)
        with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1,
                                            allow_private_urls=True,
                                            memory_budget=_need([big.shape]) - 1))) as client:
            start = time.monotonic()
            r = client.post("/v1/diff", json={
                "reference": {"data": base64.b64encode(png(big)).decode()},
                "candidate": {"url": f"http://127.0.0.1:{site.server_address[1]}/c.png"}})
            took = time.monotonic() - start
            assert r.status_code == 413 and r.json()["code"] == "over-memory-budget", r.text
            assert r.json()["needed_bytes"] == _need([big.shape])
            assert took < 4, took
    finally:
        site.shutdown()
        site.server_close()


# --- abandoned work, predictable waits ---------------------------------------------------


def _pool() -> WorkerPool:
    pool = WorkerPool([torch.device("cpu")], queue_size=4, metrics=Metrics(),
                      request_timeout=10)
    pool.start()
    return pool


def steps(n: int, seconds: float, done: list[int]):
    """A job of ``n`` steps with a cancellation check between them (as core's Finder)."""
    def fn(_device):
        for i in range(n):
            check_cancel(cancel_check(), f"step {i}")
            time.sleep(seconds)
            done.append(i)
        return len(done)
    return fn


def test_a_job_past_its_deadline_stops_at_its_next_step_and_frees_the_worker():
    pool = _pool()
    done: list[int] = []

    async def go() -> float:
        with pytest.raises(DeadlineExceeded):
            await pool.run(steps(100, 0.02, done), deadline=time.monotonic() + 0.2)
        start = time.monotonic()
        assert await pool.run(lambda _: "next", deadline=time.monotonic() + 5) == "next"
        return time.monotonic() - start

    waited = asyncio.run(go())
    assert waited < 0.5  # the worker was free within about one step
    assert 5 <= len(done) < 30  # it ran until the deadline, not the 100 steps
    pool.shutdown(5)


def test_a_job_whose_client_left_stops():
    pool = _pool()
    done: list[int] = []

    async def go() -> None:
        gone = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, gone.set)
        from service.errors import ClientDisconnected
        with pytest.raises(ClientDisconnected):
            await pool.run(steps(100, 0.02, done), deadline=time.monotonic() + 30,
                           disconnected=gone.wait)
        await asyncio.sleep(0.2)

    asyncio.run(go())
    assert len(done) < 20
    pool.shutdown(5)


def test_a_job_whose_deadline_passed_is_not_started():
    pool = _pool()
    ran: list[int] = []

    async def go() -> None:
        with pytest.raises(DeadlineExceeded):
            await pool.run(lambda _: ran.append(1), deadline=time.monotonic() - 1)

    asyncio.run(go())
    pool.shutdown(5)
    assert ran == []


def test_a_predictably_too_long_wait_is_503_at_admission():
    pool = _pool()

    async def go() -> None:
        for _ in range(3):
            await pool.run(lambda _: time.sleep(0.1), deadline=time.monotonic() + 5)

    asyncio.run(go())
    assert pool.expected_wait() >= 0.1
    with pool.admit(deadline_s=10), pytest.raises(WaitTooLong) as info:  # the first fits
        pool.admit(deadline_s=0.15)  # one ahead + itself: about 0.2 s
    assert info.value.status == 503 and int(info.value.headers["Retry-After"]) >= 1
    pool.shutdown(5)


def test_readyz_is_503_once_the_service_drains_while_requests_are_still_served():
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.app.state.df.drain()  # what the server does on SIGTERM
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "not-ready" and "shutting down" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        assert "df_ready 0.0" in client.get("/metrics").text
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/diff", **upload(SMALL, 255 - SMALL)).status_code == 200
