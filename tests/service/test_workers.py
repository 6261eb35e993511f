"""The worker pool on its own: admission, least-loaded dispatch, deadlines, dropped work
of departed clients, error isolation, warm-up gating, shutdown."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import torch

from service.errors import ClientDisconnected, DeadlineExceeded, QueueFull
from service.prometheus import Metrics
from service.workers import WorkerPool, resolve_devices

CPU = torch.device("cpu")


def make_pool(workers: int = 1, queue_size: int = 4, warmup=None) -> WorkerPool:
    pool = WorkerPool([CPU] * workers, queue_size, metrics=Metrics(), request_timeout=5.0,
                      warmup=warmup)
    pool.start()
    for w in pool.workers:
        assert w.ready.wait(10)
    return pool


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_admission_is_bounded_and_answers_at_once():
    pool = make_pool(workers=1, queue_size=1)
    try:
        first, second = pool.admit(), pool.admit()
        start = time.monotonic()
        with pytest.raises(QueueFull) as info:
            pool.admit()
        assert time.monotonic() - start < 0.05
        assert info.value.status == 503
        assert int(info.value.headers["Retry-After"]) >= 1
        first.release()
        first.release()  # idempotent
        third = pool.admit()
        for a in (second, third):
            a.release()
        assert pool.admitted == 0
    finally:
        pool.shutdown(5)


def test_least_loaded_dispatch():
    pool = make_pool(workers=2)
    gate = threading.Event()

    def blocked(device):
        gate.wait(5)
        return threading.current_thread().name

    async def main():
        slow = asyncio.ensure_future(pool.run(blocked, deadline=soon()))
        await asyncio.sleep(0.1)  # the first worker is now busy
        busy = sorted(w.busy for w in pool.workers)
        quick = await pool.run(lambda d: threading.current_thread().name, deadline=soon())
        gate.set()
        return await slow, quick, busy

    try:
        slow_thread, quick_thread, busy = asyncio.run(main())
        assert busy == [False, True]
        assert slow_thread != quick_thread  # not queued behind the busy worker
    finally:
        pool.shutdown(5)


def test_a_job_never_waits_behind_a_slow_one_while_another_worker_of_its_device_idles():
    pool = make_pool(workers=2)
    slow_gate, brief_gate = threading.Event(), threading.Event()

    async def main():
        slow = asyncio.ensure_future(pool.run(lambda d: slow_gate.wait(10), deadline=soon()))
        brief = asyncio.ensure_future(pool.run(lambda d: brief_gate.wait(10), deadline=soon()))
        await asyncio.sleep(0.1)  # both workers busy: the next two jobs queue
        queued = [asyncio.ensure_future(pool.run(lambda d: threading.current_thread().name,
                                                 deadline=soon())) for _ in range(2)]
        await asyncio.sleep(0.05)
        brief_gate.set()  # one worker is free again; the other stays on the slow job
        done, _ = await asyncio.wait(queued, timeout=2)
        slow_gate.set()
        await asyncio.gather(slow, brief, *queued)
        return len(done), {q.result() for q in queued}

    try:
        finished, threads = asyncio.run(main())
        assert finished == 2  # both ran on the free worker, neither behind the slow job
        assert len(threads) == 1
    finally:
        pool.shutdown(5)


def test_deadline_gives_504_and_the_job_is_never_run():
    pool = make_pool(workers=1)
    gate = threading.Event()
    ran = []

    async def main():
        blocker = asyncio.ensure_future(pool.run(lambda d: gate.wait(5), deadline=soon()))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await pool.run(lambda d: ran.append(1), deadline=time.monotonic() + 0.2)
        waited = time.monotonic() - start
        gate.set()
        await blocker
        await pool.run(lambda d: None, deadline=soon())  # the queue is drained past it
        return waited, info.value

    try:
        waited, err = asyncio.run(main())
        assert 0.15 < waited < 1.0
        assert err.status == 504
        assert ran == []
    finally:
        pool.shutdown(5)


def test_work_of_departed_clients_is_dropped():
    pool = make_pool(workers=1)
    gate = threading.Event()
    ran = []

    async def main():
        blocker = asyncio.ensure_future(pool.run(lambda d: gate.wait(5), deadline=soon()))
        await asyncio.sleep(0.05)
        with pytest.raises(ClientDisconnected):
            await pool.run(lambda d: ran.append(1), deadline=soon(),
                           disconnected=lambda: asyncio.sleep(0.05))
        gate.set()
        await blocker
        await pool.run(lambda d: None, deadline=soon())

    try:
        asyncio.run(main())
        assert ran == []
        text = pool.metrics.exposition().decode()
        assert 'df_requests_rejected_total{reason="disconnected"} 1.0' in text
    finally:
        pool.shutdown(5)


def test_errors_fail_only_their_request():
    pool = make_pool(workers=1)

    def oom(device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def bad(device):
        raise ValueError("bad input")

    async def main():
        names = []
        with pytest.raises(ValueError, match="bad input"):
            await pool.run(bad, deadline=soon())
        with pytest.raises(Exception) as info:
            await pool.run(oom, deadline=soon())
        for _ in range(2):
            names.append(await pool.run(lambda d: threading.current_thread().name,
                                        deadline=soon()))
        return info.value, names

    try:
        err, names = asyncio.run(main())
        assert err.status == 503 and err.code == "out-of-memory"
        assert names[0] == names[1] and pool.workers[0].thread.is_alive()
    finally:
        pool.shutdown(5)


def test_a_failure_around_a_job_does_not_kill_the_worker():
    pool = make_pool(workers=1)
    real = pool._observe_seconds
    calls = []

    def broken_once(seconds):
        calls.append(seconds)
        if len(calls) == 1:
            raise RuntimeError("bookkeeping bug")
        real(seconds)

    pool._observe_seconds = broken_once

    async def main():
        first = await pool.run(lambda d: "first", deadline=soon())
        second = await asyncio.wait_for(pool.run(lambda d: "second", deadline=soon()), 5)
        return first, second

    try:
        assert asyncio.run(main()) == ("first", "second")
        assert pool.workers[0].thread.is_alive()
    finally:
        pool.shutdown(5)


def test_compute_does_not_block_the_event_loop():
    pool = make_pool(workers=1)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        await pool.run(lambda d: time.sleep(0.5), deadline=soon())
        t.cancel()
        return ticks

    try:
        assert asyncio.run(main()) >= 20
    finally:
        pool.shutdown(5)


def test_ready_only_after_warmup_and_warmup_errors_are_reported():
    gate = threading.Event()
    seen = []

    def warm(device):
        seen.append(device)
        gate.wait(5)
        raise RuntimeError("weights corrupt")

    pool = WorkerPool([CPU], 0, metrics=Metrics(), request_timeout=5, warmup=warm)
    assert not pool.ready
    pool.start()
    try:
        time.sleep(0.05)
        assert not pool.ready and seen == [CPU]
        gate.set()
        assert pool.workers[0].ready.wait(5)
        assert pool.ready
        assert "weights corrupt" in pool.snapshot()[0]["warmup_error"]
    finally:
        pool.shutdown(5)


def test_shutdown_finishes_queued_work_then_stops():
    pool = make_pool(workers=1)
    done = []

    async def main():
        futures = [asyncio.ensure_future(pool.run(
            lambda d, i=i: (time.sleep(0.05), done.append(i)), deadline=soon()))
            for i in range(3)]
        await asyncio.sleep(0.01)
        stopped = await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, 5)
        await asyncio.gather(*futures)
        return stopped

    assert asyncio.run(main())
    assert done == [0, 1, 2]
    assert not pool.workers[0].thread.is_alive()
    assert not pool.ready
    with pytest.raises(QueueFull):
        pool.admit()


def test_cpu_workers_use_the_configured_thread_count():
    pool = WorkerPool([CPU], 1, metrics=Metrics(), request_timeout=5, cpu_threads=1)
    pool.start()
    try:
        n = asyncio.run(pool.run(lambda d: torch.get_num_threads(), deadline=soon()))
        assert n == 1
    finally:
        pool.shutdown(5)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread nice is Linux's")
def test_cpu_workers_run_below_the_event_loop_priority():
    """Compute threads yield the CPU to the event loop (health checks, refusals)."""
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = WorkerPool([CPU], 1, metrics=Metrics(), request_timeout=5, nice=5)
    pool.start()
    try:
        worker_nice = asyncio.run(pool.run(
            lambda d: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
            deadline=soon()))
        assert worker_nice == min(19, loop_nice + 5)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
    finally:
        pool.shutdown(5)


def test_resolve_devices():
    assert resolve_devices(["cpu"]) == [CPU]
    assert resolve_devices(["cpu"], cpu_workers=3) == [CPU] * 3
    assert resolve_devices(["cpu:0", "cpu:1"], cpu_workers=3) == [
        torch.device("cpu", 0), torch.device("cpu", 1)]
    with pytest.raises(ValueError, match="twice"):
        resolve_devices(["cpu", "cpu"])
    auto = resolve_devices(["auto"], cpu_workers=2)
    if torch.cuda.is_available():
        assert [d.type for d in auto] == ["cuda"] * torch.cuda.device_count()
    else:
        assert auto == [CPU, CPU]
        from core import DeviceError

        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_devices(["cuda:0"])
    from core import DeviceError

    for name in ("gpu", "meta", "cuda:x"):  # named with what to give instead
        with pytest.raises(DeviceError, match="give auto, cpu, cuda, cuda:N or mps") as info:
            resolve_devices([name])
        assert "Expected one of" not in str(info.value)


def test_freed_memory_goes_back_once_after_a_quiet_spell_not_between_jobs(monkeypatch):
    import service.workers as workers

    released: list[float] = []
    monkeypatch.setattr(workers, "IDLE_TRIM_S", 0.3)
    monkeypatch.setattr(workers, "release_freed_memory", lambda: released.append(time.monotonic()))
    pool = make_pool(workers=1)
    try:
        async def burst() -> float:
            for _ in range(3):  # back to back: no quiet spell between them
                await pool.run(lambda d: time.sleep(0.1), deadline=soon())
            return time.monotonic()

        done = asyncio.run(burst())
        assert released == []  # not between the jobs, nor right after the last
        time.sleep(1.0)
        assert len(released) == 1  # once, after the quiet spell
        assert released[0] - done >= 0.25
    finally:
        pool.shutdown(5)
