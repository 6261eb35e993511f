"""service.looplag: a loop blocked for 200 ms shows up as a ~200 ms late wake-up."""

from __future__ import annotations

import asyncio
import time
import warnings

from prometheus_client import CollectorRegistry, Histogram

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from service.app import create_app
from service.looplag import watch_loop_lag
from service.settings import Settings


def _observed(h: Histogram) -> tuple[float, float]:
    """(count, sum) of the histogram's observations."""
    samples = {s.name: s.value for m in h.collect() for s in m.samples}
    return samples["lag_count"], samples["lag_sum"]


def test_a_blocked_loop_is_measured_late_and_a_free_one_is_not():
    h = Histogram("lag", "test", buckets=(0.01, 0.1, 1.0), registry=CollectorRegistry())

    async def run(block: bool) -> None:
        task = asyncio.create_task(watch_loop_lag(h, interval=0.02))
        await asyncio.sleep(0.1)
        if block:
            time.sleep(0.2)  # the loop is held: nothing else runs
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(run(False))
    count, total = _observed(h)
    assert count >= 5 and total < 0.05 * count
    asyncio.run(run(True))
    total2 = _observed(h)[1]
    assert total2 - total > 0.15  # the held 200 ms, less the interval


def test_the_service_exposes_its_loop_lag():
    with TestClient(create_app(Settings(devices=["cpu"], cpu_workers=1))) as client:
        time.sleep(0.2)
        text = client.get("/metrics").text
    assert "df_event_loop_lag_seconds_count" in text
