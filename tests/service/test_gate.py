"""service.gate: computing requests are admitted before routing; a full pool answers 503
with Retry-After without entering the route, and every place taken is given back."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from service.app import COMPUTING_PATHS, create_app
from service.settings import Settings
from tests.conftest import assert_problem, wait_ready


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def client():
    app = create_app(Settings(devices=["cpu"], cpu_workers=1, queue_size=0))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def _pool(client):
    return client.app.state.df.pool


def _rejected(client, reason: str) -> float:
    return client.app.state.df.metrics.rejected.labels(reason)._value.get()


@pytest.mark.parametrize("path", sorted(COMPUTING_PATHS))
def test_a_full_pool_refuses_at_the_door_before_the_body_is_looked_at(client, path):
    pool = _pool(client)
    before = _rejected(client, "queue_full")
    with pool.lock:
        pool.admitted = pool.capacity  # every place taken
    try:
        # an invalid body: a routed request would answer 415/422; the gate answers first
        r = client.post(path, content=b"not a form", headers={"content-type": "text/plain"})
    finally:
        with pool.lock:
            pool.admitted = 0
    assert_problem(r, 503, "queue-full")
    assert int(r.headers["retry-after"]) >= 1
    assert _rejected(client, "queue_full") == before + 1


@pytest.mark.parametrize("path", sorted(COMPUTING_PATHS))
def test_the_place_is_given_back_whatever_the_route_answers(client, path):
    r = client.post(path, content=b"not a form", headers={"content-type": "text/plain"})
    assert r.status_code in (400, 415, 422), r.text  # routed: the body's own error
    assert _pool(client).admitted == 0


def test_an_answered_diff_gives_its_place_back_once(client):
    a = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    b = a.copy()
    b[10:20, 10:20] = 255
    files = {"reference": ("a.png", _png(a)), "candidate": ("b.png", _png(b))}
    for _ in range(3):  # capacity is one place: a leaked place would refuse the next
        assert client.post("/v1/diff", files=files).status_code == 200
    assert _pool(client).admitted == 0


def test_every_route_documenting_a_full_queue_is_gated(client):
    """Routes that answer 503 when the queue is full are exactly the gated ones (a new
    computing route missing from COMPUTING_PATHS would still be admitted, in lifecycle, but
    pay for routing on each refusal)."""
    spec = client.get("/openapi.json").json()
    documented = {path for path, ops in spec["paths"].items()
                  if "503" in ops.get("post", {}).get("responses", {})}
    assert documented == set(COMPUTING_PATHS)
