"""Event-loop lag, measured from inside: a task sleeps 50 ms again and again and records how
late it wakes (``df_event_loop_lag_seconds``). A refusal or a health check cannot be answered
sooner than the loop gets to it, whatever the client measures on its side."""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

__all__ = ["INTERVAL_S", "watch_loop_lag"]

INTERVAL_S = 0.05


async def watch_loop_lag(histogram: Histogram, interval: float = INTERVAL_S) -> None:
    """Observe each wake-up's lateness into ``histogram`` until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - start - interval))
